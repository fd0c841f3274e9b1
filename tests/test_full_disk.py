"""Full disks, for real (a small tmpfs mounted for the test): a restore into a full target and
a backup into a local repository on a full disk fail with one clear line, claim nothing that
is not complete, and leave the repository intact."""

from __future__ import annotations

import os
import random
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import PASSWORD, RunCli
from tests.repos import RepoHandle
from tests.treecompare import describe_tree
from vault.storage import LocalStorage


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], capture_output=True
    )
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _incompressible(root: Path, files: int, size: int) -> Path:
    root.mkdir(parents=True)
    rng = random.Random(4)
    for i in range(files):
        (root / f"scan{i}.raw").write_bytes(rng.randbytes(size))
    return root


def test_restore_into_a_full_disk_fails_in_one_line(
    tmp_path: Path, repo: RepoHandle, vault: RunCli, small_disk: Path
) -> None:
    source = _incompressible(tmp_path / "src", 4, 1024 * 1024)  # 4 MiB into 3 MiB
    vault("backup", "-r", repo, source)
    result = vault("restore", "latest", "-r", repo, "--target", small_disk / "out", "--json")
    assert result.code == 1
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and "no space left" in lines[0].lower()
    assert str(small_disk) in lines[0] and "Traceback" not in result.err
    assert result.out == ""  # no summary claiming files were restored


def test_backup_into_a_full_local_repository_fails_cleanly_and_keeps_it_intact(
    tmp_path: Path, vault: RunCli, small_disk: Path
) -> None:
    repo = small_disk / "repo"
    first = _incompressible(tmp_path / "first", 1, 256 * 1024)
    assert vault("init", "-r", repo).code == 0
    assert vault("backup", "-r", repo, first).code == 0
    big = _incompressible(tmp_path / "big", 5, 1024 * 1024)
    result = vault("backup", "-r", repo, big)
    assert result.code == 1
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and "no space left" in lines[0].lower(), result.err
    storage = LocalStorage(repo)
    assert not [i.key for i in storage.list("locks/")]  # released
    assert not [p for p in repo.rglob(".tmp-*")]  # no half-written object left behind
    snapshots = vault("snapshots", "-r", repo, "--json").json()
    assert len(snapshots) == 1
    assert vault("check", "-r", repo, "--read-data").code == 0
    target = tmp_path / "out"
    assert vault("restore", "latest", "-r", repo, "--target", target, "--verify").code == 0
    assert describe_tree(target / str(first).lstrip("/")) == describe_tree(first)
    assert PASSWORD not in result.err
