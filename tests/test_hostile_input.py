"""Odd and hostile input: names with newlines and control characters, names of 255 bytes, a
tree 1,000 directories deep, symlink loops, FIFOs and sockets. Everything storable round-trips
byte for byte; special files are skipped with a note; nothing hangs."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import RunCli
from tests.repos import RepoHandle
from tests.treecompare import describe_tree


def _hostile_tree(root: Path) -> None:
    base = os.fsencode(root)
    os.makedirs(base)
    for name in (b"new\nline", b"tab\there", b"\x1b[31mred", b"-rf", b" leading space", b"x" * 255):
        with open(os.path.join(base, name), "wb") as handle:
            handle.write(name * 3)
    deep = base
    for _ in range(1000):  # os.makedirs recurses once per level: Python's limit is 1,000
        deep = os.path.join(deep, b"d")
        os.mkdir(deep)
    with open(os.path.join(deep, b"bottom.dcm"), "wb") as handle:
        handle.write(b"1000 levels down")
    os.symlink("loop-b", root / "loop-a")  # a -> b -> a: must be stored as links, not followed
    os.symlink("loop-a", root / "loop-b")
    os.symlink(".", root / "self")


@pytest.fixture
def deep_cleanup(tmp_path: Path) -> Iterator[None]:
    """pytest removes old temporary directories with a recursive rmtree, which a tree 1,000
    levels deep overflows: remove it here with rm, which does not recurse."""
    yield
    subprocess.run(["rm", "-rf", str(tmp_path / "src"), str(tmp_path / "out")], check=False)


def test_hostile_names_deep_trees_and_loops_round_trip(
    tmp_path: Path, repo: RepoHandle, vault: RunCli, deep_cleanup: None
) -> None:
    source = tmp_path / "src"
    _hostile_tree(source)
    os.mkfifo(source / "fifo")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(source / "sock"))
    try:
        backed = vault("backup", "-r", repo, source, "--json")
    finally:
        sock.close()
    assert backed.code == 0, backed.err
    assert backed.err.count("not a regular file, directory or symlink") == 2  # fifo, socket
    os.unlink(source / "fifo")
    os.unlink(source / "sock")
    target = tmp_path / "out"
    restored = vault("restore", "latest", "-r", repo, "--target", target, "--verify")
    assert restored.code == 0, restored.err
    copy = target / str(source).lstrip("/")
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(10_000)  # os.walk itself recurses once per level
    try:
        assert describe_tree(copy) == describe_tree(source)
    finally:
        sys.setrecursionlimit(limit)
    assert vault("check", "-r", repo, "--read-data").code == 0
    assert stat.S_ISLNK(os.lstat(copy / "loop-a").st_mode)
    listing = vault("ls", "latest", "-r", repo, "--json").json()
    assert any(str(e["path"]).endswith("bottom.dcm") for e in listing)
