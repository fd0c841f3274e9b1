"""SIGKILL during a backup loses nothing, leaves a repository that passes check, and the next
run re-uploads nothing that was already packed and indexed."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import BOTH_BACKENDS, PASSWORD, RunCli
from tests.repos import RepoHandle
from tests.treecompare import describe_tree
from tests.waiting import Changes, wait_until
from vault.format.pack import HEADER_SIZE, BlobType, parse_header, read_trailer

SOURCE_FILES = 10
FILE_SIZE = 16 * 1024 * 1024


def _count(repo: RepoHandle, prefix: str) -> int:
    """Complete objects under prefix (a local write in progress is a temp file, not listed)."""
    return len(repo.keys(prefix))


# Each kill point: (prefix to watch, how many new objects must appear there before the kill).
KILL_POINTS: dict[str, tuple[str, int]] = {
    "before-any-pack": ("data", 0),
    "after-first-pack": ("data", 1),
    "after-first-index": ("index", 1),
    "after-four-packs": ("data", 4),
}


@pytest.fixture(scope="module")
def big_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("crash") / "src"
    root.mkdir()
    rng = random.Random(2024)
    for i in range(SOURCE_FILES):  # incompressible: one pack per 16 MiB
        (root / f"scan{i:02}.raw").write_bytes(rng.randbytes(FILE_SIZE))
    return root


def _indexed_data_bytes(repo: RepoHandle) -> int:
    r = repo.open(PASSWORD)
    return sum(loc.entry.raw_length for loc in r.load_index() if loc.entry.type == BlobType.DATA)


def _packed_data_bytes(repo: RepoHandle) -> int:
    """File bytes in every complete pack, indexed or not: each pack read whole and its
    trailer opened (not the ranged reads the code under test uses)."""
    r = repo.open(PASSWORD)
    total = 0
    for key in repo.keys("data"):
        data = r.storage.get(key)
        pack_id = key.rsplit("/", 1)[-1]
        epoch, salt = parse_header(data[:HEADER_SIZE], pack_name=key)
        entries = read_trailer(
            data, None, pack_id=pack_id, pack_name=key, key=r.pack_key(pack_id, epoch, salt)
        )
        total += sum(e.raw_length for e in entries if e.type == BlobType.DATA)
    return total


@BOTH_BACKENDS
@pytest.mark.parametrize("point", sorted(KILL_POINTS))
def test_sigkill_during_backup_leaves_a_checkable_repository_and_rerun_completes(
    tmp_path: Path,
    repo: RepoHandle,
    vault: RunCli,
    big_source: Path,
    archive: Path,
    point: str,
    repo_changes: tuple[Changes, dict[str, str]],
) -> None:
    changes, through = repo_changes
    earlier = vault("backup", "-r", repo, archive, "--json").json()["snapshot_id"]
    indexed_earlier = _indexed_data_bytes(repo)
    packed_earlier = _packed_data_bytes(repo)
    baseline = {prefix: _count(repo, prefix) for prefix in ("data", "index")}
    env = dict(
        {**os.environ, **repo.env, **through},
        VAULT_PASSWORD=PASSWORD,
        # After four packs: the default checkpoint (1 GiB), so the kill leaves packs no index
        # names; elsewhere one per pack, so some are indexed.
        VAULT_INDEX_CHECKPOINT_BYTES=str(1 << 30 if point == "after-four-packs" else FILE_SIZE),
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "vault", "backup", "-r", str(repo), str(big_source)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    prefix, wanted = KILL_POINTS[point]
    wait_until(
        lambda: _count(repo, prefix) >= baseline[prefix] + wanted,
        changes,
        timeout=120,
        process=process,
    )
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "backup finished before it could be killed"

    # A lock left by a dead process on this host is stale at once: check runs right away.
    checked = vault("check", "-r", repo, "--read-data", "--json")
    assert checked.code == 0, checked.out + checked.err
    assert [s["id"] for s in vault("snapshots", "-r", repo, "--json").json()] == [earlier]

    indexed_before = _indexed_data_bytes(repo) - indexed_earlier
    packed_before = _packed_data_bytes(repo) - packed_earlier
    if point == "after-first-index":
        assert indexed_before >= FILE_SIZE // 2
    if point == "after-four-packs":
        assert packed_before > indexed_before, "the kill should leave packs no index names"
    rerun = vault("backup", "-r", repo, big_source, "--json")
    assert rerun.code == 0, rerun.err
    # Nothing the killed run completed is uploaded again, indexed or not: the stale lock it
    # left makes the re-run adopt its unindexed packs (random data has no duplicates).
    assert rerun.json()["stats"]["bytes_added"] == SOURCE_FILES * FILE_SIZE - packed_before
    assert (rerun.json()["packs_adopted"] > 0) == (packed_before > indexed_before)

    assert vault("check", "-r", repo, "--read-data").code == 0
    for snapshot, source in ((earlier, archive), ("latest", big_source)):
        target = tmp_path / f"restore-{snapshot}"
        restored = vault("restore", snapshot, "-r", repo, "--target", target, "--verify")
        assert restored.code == 0, restored.err
        assert describe_tree(target / source.relative_to("/")) == describe_tree(source)


def test_sigterm_stops_a_backup_cleanly_and_keeps_what_was_uploaded(
    repo: RepoHandle,
    vault: RunCli,
    big_source: Path,
    repo_changes: tuple[Changes, dict[str, str]],
) -> None:
    """The scheduler (or systemd) stops a backup with SIGTERM: it ends at the next chunk,
    uploads and indexes the packs it was filling, releases its lock and exits 130."""
    changes, through = repo_changes
    baseline = _count(repo, "data")
    env = dict({**os.environ, **repo.env, **through}, VAULT_PASSWORD=PASSWORD)
    process = subprocess.Popen(
        [sys.executable, "-m", "vault", "backup", "-r", str(repo), str(big_source)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    wait_until(lambda: _count(repo, "data") >= baseline + 2, changes, timeout=120, process=process)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err.decode()
    assert b"stopped on request" in err and b"Traceback" not in err

    assert vault("snapshots", "-r", repo, "--json").json() == []
    assert repo.keys("locks") == []  # released, not merely stale
    checked = vault("check", "-r", repo, "--json").json()
    assert checked["outcome"] == "PASS"
    assert checked["unreferenced_packs"] == 0  # every uploaded pack made it into an index
    indexed = _indexed_data_bytes(repo)
    assert indexed >= 2 * FILE_SIZE - FILE_SIZE // 2  # at least the packs seen before the signal
    rerun = vault("backup", "-r", repo, big_source, "--json").json()
    assert rerun["stats"]["bytes_added"] == SOURCE_FILES * FILE_SIZE - indexed
