"""Prune reclaims what no snapshot needs, never what one does — also when killed midway, and
never under Object Lock."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.conftest import PASSWORD, RunCli
from tests.repos import RepoHandle
from tests.treecompare import describe_tree
from tests.waiting import Changes, wait_until
from vault.format.config import ObjectLockPolicy
from vault.jobs.backup import BackupOptions, backup
from vault.jobs.prune import prune
from vault.repo.keys import Secret
from vault.repo.repository import Repository
from vault.storage import MemoryStorage

MB = 1024 * 1024


def _two_generations(tmp_path: Path, vault: RunCli, repo: RepoHandle) -> Path:
    """Snapshot 1 holds old.raw (gone later); snapshot 2 holds new.raw; both share keep.raw."""
    source = tmp_path / "src"
    source.mkdir()
    rng = random.Random(4)
    (source / "keep.raw").write_bytes(rng.randbytes(20 * MB))
    (source / "old.raw").write_bytes(rng.randbytes(20 * MB))
    assert vault("backup", "-r", repo, source, "--time", "2020-01-01 00:00:00").code == 0
    (source / "old.raw").unlink()
    (source / "new.raw").write_bytes(rng.randbytes(5 * MB))
    assert vault("backup", "-r", repo, source, "--time", "2020-01-02 00:00:00").code == 0
    policy = tmp_path / "keep-last.toml"
    policy.write_text("[retention]\nkeep_last = 1\n")
    assert vault("forget", "-r", repo, "--policy", policy).code == 0
    return source


def _stored(repo: RepoHandle) -> int:
    return sum(repo.size(k) for k in repo.keys("data/"))


def test_prune_frees_what_forgotten_snapshots_alone_held(
    tmp_path: Path, repo: RepoHandle, vault: RunCli
) -> None:
    source = _two_generations(tmp_path, vault, repo)
    before = _stored(repo)
    dry = vault("prune", "-r", repo, "--dry-run", "--json").json()
    assert _stored(repo) == before and dry["bytes_freed"] > 15 * MB
    doc = vault("prune", "-r", repo, "--json").json()
    assert doc["bytes_freed"] > 15 * MB
    assert before - _stored(repo) == doc["bytes_freed"]
    assert vault("check", "-r", repo, "--read-data").code == 0
    out = tmp_path / "out"
    assert vault("restore", "latest", "-r", repo, "--target", out, "--verify").code == 0
    assert describe_tree(out / source.relative_to("/")) == describe_tree(source)
    again = vault("prune", "-r", repo, "--json").json()
    assert again["bytes_freed"] == 0  # nothing left to reclaim


def test_prune_removes_packs_an_interrupted_backup_left(
    tmp_path: Path, repo: RepoHandle, vault: RunCli, archive: Path
) -> None:
    vault("backup", "-r", repo, archive)
    before = set(repo.keys("data/"))
    old_indexes = set(repo.keys("index/"))
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "new.bin").write_bytes(os.urandom(MB))
    # A run killed after uploading its packs, before its index and snapshot: packs no index
    # names and nothing needs (the job itself, so no audit event vouches for the snapshot).
    made = backup(repo.open(PASSWORD), BackupOptions((str(extra),))).snapshot
    for key in set(repo.keys("index/")) - old_indexes:
        repo.storage.delete(key)
    repo.storage.delete(f"snapshots/{made.id}")
    repo.storage.delete(f"catalog/{made.id}")
    orphans = set(repo.keys("data/")) - before
    assert orphans
    doc = vault("prune", "-r", repo, "--json").json()
    assert doc["unindexed_packs_deleted"] == len(orphans)
    assert doc["unindexed_packs_reindexed"] == 0
    assert set(repo.keys("data/")) == before
    assert vault("check", "-r", repo, "--read-data").code == 0


def test_prune_keeps_an_unindexed_object_it_cannot_read_and_says_so(
    repo: RepoHandle, vault: RunCli, archive: Path
) -> None:
    vault("backup", "-r", repo, archive)
    stranger = "data/ab/ab" + "0" * 62
    repo.write(stranger, b"VLP1" + os.urandom(200))  # unindexed, and no trailer opens
    done = vault("prune", "-r", repo)
    assert done.code == 0, done.err
    assert stranger in repo.keys("data/")
    assert f"whose trailer cannot be read (first: {stranger}" in done.err


@pytest.mark.parametrize("step", ["during-repack", "after-index", "during-deletes"])
def test_prune_killed_midway_loses_nothing(
    tmp_path: Path,
    repo: RepoHandle,
    vault: RunCli,
    step: str,
    repo_changes: tuple[Changes, dict[str, str]],
) -> None:
    changes, through = repo_changes
    source = _two_generations(tmp_path, vault, repo)
    packs_before = set(repo.keys("data/"))
    indexes_before = set(repo.keys("index/"))
    env = dict({**os.environ, **repo.env, **through}, VAULT_PASSWORD=PASSWORD)
    process = subprocess.Popen(
        [sys.executable, "-m", "vault", "prune", "-r", repo.url],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )

    def reached() -> bool:
        packs, indexes = set(repo.keys("data/")), set(repo.keys("index/"))
        return {
            "during-repack": bool(packs - packs_before),
            "after-index": bool(indexes) and not indexes & indexes_before,
            "during-deletes": bool(packs_before - packs),
        }[step]

    wait_until(reached, changes, timeout=60, process=process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert vault("check", "-r", repo, "--read-data").code == 0
    out = tmp_path / "out"
    assert vault("restore", "latest", "-r", repo, "--target", out, "--verify").code == 0
    assert describe_tree(out / source.relative_to("/")) == describe_tree(source)
    assert vault("prune", "-r", repo).code == 0
    assert vault("check", "-r", repo, "--read-data").code == 0


def test_prune_never_deletes_a_locked_pack_and_reports_it(tmp_path: Path) -> None:
    storage = MemoryStorage(object_lock=True)
    repo, _ = Repository.init(
        storage, Secret.from_passphrase(PASSWORD), object_lock=ObjectLockPolicy("GOVERNANCE", 7)
    )

    source = tmp_path / "s"
    source.mkdir()
    (source / "a.raw").write_bytes(os.urandom(3 * MB))
    first = backup(repo, BackupOptions((str(source),))).snapshot
    (source / "a.raw").unlink()
    (source / "b.raw").write_bytes(os.urandom(MB))
    backup(repo, BackupOptions((str(source),)))
    storage.retention.pop(f"snapshots/{first.id}")  # let forget remove the old snapshot record
    storage.delete(f"snapshots/{first.id}")
    packs = {k for k in storage.objects if k.startswith("data/")}
    result = prune(repo, datetime.now(UTC))
    assert result.locked_packs >= 1 and result.bytes_freed == 0
    assert {k for k in storage.objects if k.startswith("data/")} == packs
    later = datetime.now(UTC) + timedelta(days=8)
    storage._now = lambda: later
    repo.forget_index()
    result = prune(repo, later)
    assert result.locked_packs == 0 and result.bytes_freed > 2 * MB
