"""A malicious repository: trees crafted with the repository's own keys (as whoever stole one
backup host's key file could write them) must never make a restore touch anything outside its
target. Each test fingerprints a sentinel tree outside the target before and after."""

from __future__ import annotations

import ctypes
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PASSWORD, ROOT, RunCli
from tests.crafted import Crafter, fingerprint, sentinel_tree
from tests.repos import RepoHandle


@pytest.fixture
def crafter(repo: RepoHandle) -> Crafter:
    return Crafter(repo.open(PASSWORD))


@pytest.fixture
def sentinel(tmp_path: Path) -> Path:
    return sentinel_tree(tmp_path / "outside")


def _undecodable_trees(c: Crafter, outside: Path) -> dict[str, list[dict[str, Any]]]:
    return {
        "duplicate names": [c.file("a", b"one"), c.file("a", b"two")],
        # The reproduced attack: a 0666 file and a symlink of the same name, so the mode meant
        # for the file lands on whatever the link points at.
        "file and symlink of one name": [
            c.file("f", b"x", mode=0o666),
            c.symlink("f", str(outside / "file")),
        ],
        "dot-dot": [c.file("..", b"up")],
        "dot": [c.file(".", b"here")],
        "slash in a name": [c.file("a/../../escape", b"x")],
        "NUL in a name": [c.file(b"a\0b", b"x")],
        "empty name": [c.file("", b"x")],
        "directory named dot-dot": [c.dir("..", [c.file("escape", b"x")])],
        "file-type bits in the mode": [c.file("m", b"x", mode=0o100777)],
        "negative owner": [c.file("o", b"x", uid=-1)],
        "malformed chunk id": [c.file("c", b"x", chunks=["../../data"])],
        "malformed subtree id": [
            {**c.dir("d", []), "subtree": "../x"},
        ],
    }


CASES = [
    "duplicate names",
    "file and symlink of one name",
    "dot-dot",
    "dot",
    "slash in a name",
    "NUL in a name",
    "empty name",
    "directory named dot-dot",
    "file-type bits in the mode",
    "negative owner",
    "malformed chunk id",
    "malformed subtree id",
]


@pytest.mark.parametrize("case", CASES)
def test_a_crafted_tree_does_not_decode_and_restore_writes_nothing(
    case: str, crafter: Crafter, sentinel: Path, repo: RepoHandle, vault: RunCli, tmp_path: Path
) -> None:
    nodes = _undecodable_trees(crafter, sentinel)[case]
    snap = crafter.snapshot([crafter.dir("inner", nodes)])
    before = fingerprint(sentinel)
    target = tmp_path / "target"
    restored = vault("restore", snap.id, "-r", repo, "--target", target)
    assert restored.code == 1, restored.out + restored.err
    assert "malformed" in restored.err and "Traceback" not in restored.err
    assert fingerprint(sentinel) == before
    assert not (target / "inner").exists() or not any((target / "inner").iterdir())
    checked = vault("check", "-r", repo)
    assert checked.code == 1
    assert "malformed" in checked.out + checked.err


def test_a_symlink_then_a_directory_of_its_name_never_reaches_outside(
    crafter: Crafter, sentinel: Path, repo: RepoHandle, vault: RunCli, tmp_path: Path
) -> None:
    """The reproduced attack: snapshot 1 holds x -> outside, snapshot 2 holds x/ as a directory
    (mode 0777, with a file named like one outside); restoring 1 then 2 into one target."""
    first = crafter.snapshot([crafter.symlink("x", str(sentinel))])
    second = crafter.snapshot(
        [crafter.dir("x", [crafter.file("file", b"replaced!", mode=0o777)], mode=0o777)]
    )
    before = fingerprint(sentinel)
    target = tmp_path / "target"
    assert vault("restore", first.id, "-r", repo, "--target", target).code == 0
    assert os.readlink(target / "x") == str(sentinel)
    for extra in ([], ["--overwrite"]):
        again = vault("restore", second.id, "-r", repo, "--target", target, *extra)
        assert again.code == 1, again.out + again.err
        assert f"{target}/x is a symlink" in again.err
        assert fingerprint(sentinel) == before


def test_symlinks_pointing_outside_are_restored_as_links_and_never_followed(
    crafter: Crafter, sentinel: Path, repo: RepoHandle, vault: RunCli, tmp_path: Path
) -> None:
    target = tmp_path / "target"
    up = "../" * (len(target.parts) + 2)
    snap = crafter.snapshot(
        [
            crafter.symlink("absolute", str(sentinel / "file")),
            crafter.symlink("relative", up + str(sentinel.relative_to("/")) + "/dir"),
            crafter.symlink("dangling", "/nonexistent/at/all"),
            crafter.file("plain", b"data", mode=0o600),
        ]
    )
    before = fingerprint(sentinel)
    restored = vault("restore", snap.id, "-r", repo, "--target", target, "--verify")
    assert restored.code == 0, restored.err
    assert os.readlink(target / "absolute") == str(sentinel / "file")
    assert os.readlink(target / "relative").endswith(str(sentinel.relative_to("/")) + "/dir")
    assert os.readlink(target / "dangling") == "/nonexistent/at/all"
    assert fingerprint(sentinel) == before
    # A second restore over the links, with --overwrite, replaces links, not what they name.
    again = vault("restore", snap.id, "-r", repo, "--target", target, "--overwrite")
    assert again.code == 0, again.err
    assert fingerprint(sentinel) == before


def test_a_very_deep_crafted_tree_restores_inside_the_target(
    crafter: Crafter, sentinel: Path, repo: RepoHandle, vault: RunCli, tmp_path: Path
) -> None:
    node = crafter.file("bottom", b"deep down")
    for level in range(300):
        node = crafter.dir(f"d{level % 7}", [node])
    snap = crafter.snapshot([node])
    target = tmp_path / "target"
    restored = vault("restore", snap.id, "-r", repo, "--target", target, "--verify")
    assert restored.code == 0, restored.err
    bottom = [p for p in target.rglob("bottom")]
    assert len(bottom) == 1 and bottom[0].read_bytes() == b"deep down"
    assert len(bottom[0].relative_to(target).parts) == 301


_PR_CAPBSET_DROP = 24
_CAP_CHOWN = 0


def _without_chown() -> None:
    """In the child before exec: a root that may not give files away (as a non-root restore)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_CAPBSET_DROP, _CAP_CHOWN, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to restore owners")
def test_setuid_bits_are_kept_only_when_the_owner_is_restored_too(
    crafter: Crafter, repo: RepoHandle, vault: RunCli, tmp_path: Path
) -> None:
    snap = crafter.snapshot(
        [
            crafter.file("tool", b"#!/bin/sh\n", mode=0o4755, uid=4242, gid=4242),
            crafter.dir("shared", [], mode=0o2775, uid=4242, gid=4242),
        ]
    )
    as_root = tmp_path / "as-root"
    assert vault("restore", snap.id, "-r", repo, "--target", as_root).code == 0
    st = (as_root / "tool").stat()
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (4242, 0o4755)

    # Without the right to give files away, a setuid file would belong to whoever restores
    # it, with content from the repository: its set-id bits are dropped.
    limited = tmp_path / "limited"
    done = subprocess.run(
        [sys.executable, "-m", "vault", "restore", snap.id, "-r", str(repo), "--target", limited],
        env=dict(os.environ, VAULT_PASSWORD=PASSWORD),
        capture_output=True,
        text=True,
        cwd=ROOT,
        preexec_fn=_without_chown,
    )
    assert done.returncode == 0, done.stderr
    st = (limited / "tool").stat()
    assert st.st_uid == 0 and stat.S_IMODE(st.st_mode) == 0o755
    assert stat.S_IMODE((limited / "shared").stat().st_mode) == 0o775
