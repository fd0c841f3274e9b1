"""Odd input, for real: files and directories the backup may not read (the permission check
is the kernel's — the backup runs without the capabilities that let root read anything), names
that are not UTF-8, device files, and sparse files."""

from __future__ import annotations

import ctypes
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

from tests.conftest import PASSWORD, ROOT, RunCli
from tests.repos import RepoHandle
from tests.treecompare import describe_tree

_PR_CAPBSET_DROP = 24
_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH = 1, 2
GIB = 1024**3


def _without_read_anything_capabilities() -> None:
    """In the child before exec: drop the capabilities that let root ignore file modes."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH):
        if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_unreadable_files_and_directories_are_named_exit_3_and_the_rest_is_saved(
    tmp_path: Path, repo: RepoHandle, vault: RunCli, archive: Path
) -> None:
    secret_file = archive / "exports" / "pms_dump.bak"
    closed_dir = next(p for p in sorted(archive.rglob("*_CT")) if p.is_dir())
    closed = {secret_file: secret_file.stat().st_mode, closed_dir: closed_dir.stat().st_mode}
    for path in closed:
        path.chmod(0)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "vault", "backup", "-r", str(repo), str(archive), "--json"],
            env=dict(os.environ, VAULT_PASSWORD=PASSWORD),
            capture_output=True,
            text=True,
            cwd=ROOT,
            preexec_fn=_without_read_anything_capabilities,
        )
    finally:
        for path, mode in closed.items():
            path.chmod(stat.S_IMODE(mode))
    assert done.returncode == 3, done.stderr
    errors = {e["path"]: e["reason"] for e in json.loads(done.stdout)["errors"]}
    assert errors == {str(secret_file): "Permission denied", str(closed_dir): "Permission denied"}
    assert str(secret_file) in done.stderr and str(closed_dir) in done.stderr
    assert "Traceback" not in done.stderr

    target = tmp_path / "out"
    assert vault("restore", "latest", "-r", repo, "--target", target, "--verify").code == 0
    restored = _files(target / archive.relative_to("/"))
    expected = {
        name: data
        for name, data in _files(archive).items()
        if not (archive / name == secret_file or (archive / name).is_relative_to(closed_dir))
    }
    assert restored == expected  # everything readable, byte for byte, and nothing else


def test_names_that_are_not_utf8_and_device_files(
    tmp_path: Path, repo: RepoHandle, vault: RunCli
) -> None:
    source = tmp_path / "src"
    source.mkdir()
    base = os.fsencode(source)
    for name in (b"latin1-\xe9t\xe9.dcm", b"\xff\xfe-not-utf8", b"half-\xc3"):
        with open(os.path.join(base, name), "wb") as handle:
            handle.write(name * 5)
    os.mkdir(os.path.join(base, b"dir-\x80"))
    with open(os.path.join(base, b"dir-\x80", b"inner"), "wb") as handle:
        handle.write(b"inside a badly named directory")
    os.mknod(source / "null-device", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    backed = vault("backup", "-r", repo, source)
    assert backed.code == 0, backed.err
    assert "null-device: not a regular file, directory or symlink" in backed.err
    target = tmp_path / "out"
    assert vault("restore", "latest", "-r", repo, "--target", target, "--verify").code == 0
    (source / "null-device").unlink()  # skipped with a note, so not expected back
    assert describe_tree(target / source.relative_to("/")) == describe_tree(source)
    assert vault("check", "-r", repo, "--read-data").code == 0


def test_a_sparse_file_restores_byte_identical_and_sparse(
    tmp_path: Path, repo: RepoHandle, vault: RunCli
) -> None:
    source = tmp_path / "src"
    source.mkdir()
    sparse = source / "volume.raw"
    islands = {0: b"header" * 1000, GIB // 2: os.urandom(300_000), 2 * GIB - 5: b"tail!"}
    with open(sparse, "wb") as handle:
        for offset, data in islands.items():
            handle.seek(offset)
            handle.write(data)
    assert sparse.stat().st_blocks * 512 < 16 * 1024 * 1024  # really sparse on this disk
    backed = vault("backup", "-r", repo, source, "--json")
    assert backed.code == 0, backed.err
    assert backed.json()["stats"]["bytes_stored"] < 8 * 1024 * 1024  # zeros dedup to a chunk
    target = tmp_path / "out"
    restored = vault("restore", "latest", "-r", repo, "--target", target, "--verify")
    assert restored.code == 0, restored.err
    copy = target / sparse.relative_to("/")
    assert copy.stat().st_size == 2 * GIB
    with open(copy, "rb") as handle:
        for offset, data in islands.items():
            handle.seek(offset)
            assert handle.read(len(data)) == data
    assert copy.stat().st_blocks * 512 < 64 * 1024 * 1024  # holes stay holes
