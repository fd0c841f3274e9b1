"""A hostile restore target: symlinks, files and hard links planted in a target before the
restore, and components swapped for symlinks while it runs. Restore usually runs as root; nothing
outside its target may change (a sentinel tree outside is fingerprinted before and after)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PASSWORD, ROOT, RunCli
from tests.crafted import Crafter, fingerprint, sentinel_tree
from tests.repos import RepoHandle
from vault.format.snapshot import Snapshot


@pytest.fixture
def sentinel(tmp_path: Path) -> Path:
    return sentinel_tree(tmp_path / "outside")


@pytest.fixture
def snapshot(repo: RepoHandle) -> Snapshot:
    """docs/report.txt, docs/sub/deep.txt and top.txt (the geometry the plants aim at)."""
    c = Crafter(repo.open(PASSWORD))
    return c.snapshot(
        [
            c.dir(
                "docs",
                [c.file("report.txt", b"report"), c.dir("sub", [c.file("deep.txt", b"deep")])],
                mode=0o777,
            ),
            c.file("top.txt", b"top", mode=0o666),
        ]
    )


@pytest.mark.parametrize("overwrite", [False, True], ids=["plain", "overwrite"])
@pytest.mark.parametrize("where", ["docs", "docs/sub"])
def test_a_symlink_planted_where_a_directory_goes_is_refused(
    where: str,
    overwrite: bool,
    snapshot: Snapshot,
    sentinel: Path,
    repo: RepoHandle,
    vault: RunCli,
    tmp_path: Path,
) -> None:
    target = tmp_path / "target"
    (target / where).parent.mkdir(parents=True)
    (target / where).symlink_to(sentinel / "dir" if "/" in where else sentinel)
    before = fingerprint(sentinel)
    extra = ["--overwrite"] if overwrite else []
    done = vault("restore", snapshot.id, "-r", repo, "--target", target, *extra)
    assert done.code == 1, done.out + done.err
    assert f"{target}/{where} is a symlink; refusing to restore through it" in done.err
    assert fingerprint(sentinel) == before
    assert not (target / "top.txt").exists()  # refused before anything was written


def test_a_file_planted_where_a_directory_goes_is_refused(
    snapshot: Snapshot, repo: RepoHandle, vault: RunCli, tmp_path: Path
) -> None:
    target = tmp_path / "target"
    target.mkdir()
    (target / "docs").write_bytes(b"in the way")
    done = vault("restore", snapshot.id, "-r", repo, "--target", target, "--overwrite")
    assert done.code == 1
    assert f"{target}/docs is not a directory" in done.err
    assert (target / "docs").read_bytes() == b"in the way"


def test_a_symlink_planted_where_a_file_goes_is_replaced_not_written_through(
    snapshot: Snapshot, sentinel: Path, repo: RepoHandle, vault: RunCli, tmp_path: Path
) -> None:
    target = tmp_path / "target"
    target.mkdir()
    (target / "top.txt").symlink_to(sentinel / "file")
    before = fingerprint(sentinel)
    refused = vault("restore", snapshot.id, "-r", repo, "--target", target)
    assert refused.code == 2 and "--overwrite" in refused.err
    done = vault("restore", snapshot.id, "-r", repo, "--target", target, "--overwrite")
    assert done.code == 0, done.err
    assert not (target / "top.txt").is_symlink()
    assert (target / "top.txt").read_bytes() == b"top"
    assert fingerprint(sentinel) == before


def test_a_hard_link_planted_where_a_file_goes_is_replaced_not_written_through(
    snapshot: Snapshot, sentinel: Path, repo: RepoHandle, vault: RunCli, tmp_path: Path
) -> None:
    before = fingerprint(sentinel)
    target = tmp_path / "target"
    target.mkdir()
    os.link(sentinel / "file", target / "top.txt")  # same file system: one inode, two names
    done = vault("restore", snapshot.id, "-r", repo, "--target", target, "--overwrite")
    assert done.code == 0, done.err
    assert (target / "top.txt").read_bytes() == b"top"
    assert (target / "top.txt").stat().st_ino != (sentinel / "file").stat().st_ino
    assert fingerprint(sentinel) == before  # content, 0640 and one link again


def test_components_swapped_for_symlinks_while_the_restore_runs_never_lead_outside(
    repo: RepoHandle, sentinel: Path, tmp_path: Path
) -> None:
    """A thread races a restore running in another process: every directory it finds in the
    target is moved aside and replaced by a symlink to the sentinel, every file by a symlink to
    the sentinel's file. The restore may fail (naming what changed) but never writes outside."""
    c = Crafter(repo.open(PASSWORD))
    dirs = [
        c.dir(f"d{i:02d}", [c.dir("inner", [c.file(f"f{j}", os.urandom(3000)) for j in range(4)])])
        for i in range(40)
    ]
    snap = c.snapshot(dirs)
    before = fingerprint(sentinel)
    target = tmp_path / "target"
    proc = subprocess.Popen(
        [sys.executable, "-m", "vault", "restore", snap.id, "-r", str(repo), "--target", target],
        env=dict(os.environ, VAULT_PASSWORD=PASSWORD),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    swaps = 0
    for _ in range(100_000):  # bounded: the restore ends long before
        if proc.poll() is not None:
            break
        for dirpath, dirnames, filenames in os.walk(target):
            for name in dirnames + filenames:
                path = os.path.join(dirpath, name)
                if name.endswith(".moved") or os.path.islink(path):
                    continue
                try:
                    os.rename(path, path + ".moved")
                    os.symlink(sentinel / ("dir" if name in dirnames else "file"), path)
                    swaps += 1
                except OSError:
                    continue  # raced with the restore itself
    _, err = proc.communicate(timeout=120)
    assert proc.returncode in (0, 1), err
    assert "Traceback" not in err
    if proc.returncode == 1:
        assert "restore target" in err or "cannot" in err, err
    assert fingerprint(sentinel) == before, f"after {swaps} swaps"
