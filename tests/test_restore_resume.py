"""A restore killed with SIGKILL and run again with --resume ends byte-identical, and fetches
again almost nothing it had already written: what is in the target is checked chunk by chunk
against the snapshot (keyed chunk ids), never trusted by name."""

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
from tests.waiting import DirectoryChanges, wait_until

FILES = 20
FILE_SIZE = 16 * 1024 * 1024


@pytest.fixture(scope="module")
def big_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("resume") / "src"
    root.mkdir()
    rng = random.Random(1811)
    for i in range(FILES):  # incompressible: what is fetched is what is written
        (root / f"volume{i:02}.raw").write_bytes(rng.randbytes(FILE_SIZE))
    return root


def _written(target: Path) -> int:
    """Bytes the restore has really written: files are made at full size first, as holes, so
    only allocated blocks count."""
    return sum(p.stat().st_blocks * 512 for p in target.rglob("*") if p.is_file())


def _kill_point() -> tuple[float, int]:
    """Where to kill: a fraction of the restore drawn at random each run (the seed is in every
    failure message; VAULT_TEST_SEED replays one)."""
    seed = int(os.environ.get("VAULT_TEST_SEED") or random.SystemRandom().randrange(1 << 30))
    return random.Random(seed).uniform(0.1, 0.6), seed


@BOTH_BACKENDS
@pytest.mark.parametrize("ordered", [False, True], ids=["tree-order", "priority"])
def test_a_killed_restore_resumes_byte_identical_refetching_under_5_percent(
    tmp_path: Path, repo: RepoHandle, vault: RunCli, big_source: Path, ordered: bool
) -> None:
    fraction, seed = (0.25, 0) if not ordered else _kill_point()
    why = f"killed at {fraction:.0%} (VAULT_TEST_SEED={seed})"
    priority: list[str | Path] = []
    if ordered:
        policy = tmp_path / "restore.toml"
        policy.write_text('[[tier]]\nname = "second half"\npaths = ["volume1*"]\n')
        priority = ["--priority", policy]
    assert vault("backup", "-r", repo, big_source).code == 0
    target = tmp_path / "restored"
    # The directories exist first, so every one is watched before the restore writes into it
    # (a restore may make a whole path faster than inotify watches can be added).
    (target / big_source.relative_to("/")).mkdir(parents=True)
    changes = DirectoryChanges(target)
    env = dict({**os.environ, **repo.env}, VAULT_PASSWORD=PASSWORD)
    process = subprocess.Popen(
        [sys.executable, "-m", "vault", "restore", "latest", "-r", str(repo), "--target",
         str(target), *map(str, priority)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    total = FILES * FILE_SIZE
    wait_until(lambda: _written(target) >= total * fraction, changes, timeout=120,
               process=process)  # fmt: skip
    process.send_signal(signal.SIGKILL)
    process.wait()
    changes.close()
    assert process.returncode == -signal.SIGKILL, f"the restore finished before it was {why}"
    written = _written(target)
    assert 0 < written < total, why
    if ordered:
        # The kill caught the tiers in order: the second tier's files exist only once every
        # file of the first was written whole (and verified: it is a tier).
        base = target / big_source.relative_to("/")
        first = [base / f"volume{i:02}.raw" for i in range(FILES // 2, FILES)]
        later = [base / f"volume{i:02}.raw" for i in range(FILES // 2)]
        if any(p.exists() for p in later):
            assert all(p.read_bytes() == (big_source / p.name).read_bytes() for p in first), why
        else:
            assert written <= len(first) * FILE_SIZE, why

    # Without --resume the files in the way are refused, as before.
    refused = vault("restore", "latest", "-r", repo, "--target", target)
    assert refused.code == 2 and "--overwrite" in refused.err
    resumed = vault("restore", "latest", "-r", repo, "--target", target, "--resume", "--verify",
                    "--json", *priority)  # fmt: skip
    assert resumed.code == 0, (why, resumed.err)
    doc = resumed.json()
    assert describe_tree(target / big_source.relative_to("/")) == describe_tree(big_source), why
    assert doc["verified_files"] == FILES
    kept = doc["bytes_kept"]
    # What the killed run wrote, minus writes torn by the kill, is kept, never fetched again.
    assert kept >= written - 4 * FILE_SIZE and kept > 0, why
    refetched = doc["bytes_downloaded"] - (total - kept)
    assert refetched <= 0.05 * kept, (why, refetched, kept)
    if ordered:
        assert [t["name"] for t in doc["tiers"]] == ["second half", "everything else"]


def test_resume_fetches_what_was_damaged_and_replaces_what_does_not_belong(
    tmp_path: Path, repo: RepoHandle, vault: RunCli, big_source: Path
) -> None:
    """A flipped byte in a restored file, a file cut short, a hard link planted where a file
    goes: resume keeps only the chunks it can verify, and never writes through the link."""
    assert vault("backup", "-r", repo, big_source).code == 0
    target = tmp_path / "restored"
    assert vault("restore", "latest", "-r", repo, "--target", target).code == 0
    base = target / big_source.relative_to("/")
    flipped, cut, linked = base / "volume00.raw", base / "volume01.raw", base / "volume02.raw"
    data = bytearray(flipped.read_bytes())
    data[FILE_SIZE // 2] ^= 0xFF
    flipped.write_bytes(bytes(data))
    with cut.open("r+b") as handle:
        handle.truncate(FILE_SIZE // 3)
    outside = tmp_path / "outside.raw"
    outside.write_bytes(linked.read_bytes())
    linked.unlink()
    os.link(outside, linked)
    before_outside = outside.read_bytes()
    resumed = vault("restore", "latest", "-r", repo, "--target", target, "--resume", "--json")
    assert resumed.code == 0, resumed.err
    doc = resumed.json()
    assert describe_tree(base) == describe_tree(big_source)
    assert outside.read_bytes() == before_outside  # the planted link was replaced, not written
    assert doc["files_kept"] == FILES - 3
    # The flipped file costs about one chunk, the cut and the linked ones their whole size.
    assert doc["bytes_downloaded"] < 3 * FILE_SIZE


def test_resume_rewrites_zeros_over_foreign_bytes(
    tmp_path: Path, repo: RepoHandle, vault: RunCli
) -> None:
    """A fresh restore leaves zero chunks as holes; a file completed in place may hold other
    bytes where the snapshot has zeros, and those must become zeros again."""
    source = tmp_path / "src"
    source.mkdir()
    # Zeros longer than the largest chunk: whole chunks of zeros, which a fresh restore skips.
    (source / "sparse.raw").write_bytes(b"\0" * (40 * 1024 * 1024) + random.randbytes(4096))
    assert vault("backup", "-r", repo, source).code == 0
    target = tmp_path / "restored"
    assert vault("restore", "latest", "-r", repo, "--target", target).code == 0
    restored = target / source.relative_to("/") / "sparse.raw"
    with restored.open("r+b") as handle:
        handle.write(b"\xaa" * 100_000)
    done = vault("restore", "latest", "-r", repo, "--target", target, "--resume", "--verify")
    assert done.code == 0, done.err
    assert restored.read_bytes() == (source / "sparse.raw").read_bytes()
