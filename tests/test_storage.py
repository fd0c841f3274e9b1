"""The Storage contract (vault/storage/base.py), checked the same way on every backend.

To add a backend, add its name to BACKENDS and a branch in `make_storage`; every test in the
conformance section then runs against it. The local-only section checks what only a directory
on disk can get wrong: permissions, temp files and interrupted writes.
"""

from __future__ import annotations

import os
import stat as stat_mode
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import fresh_s3_url
from vault.errors import ObjectExists, ObjectNotFound, StorageError
from vault.storage import LocalStorage, MemoryStorage, Storage, open_storage
from vault.storage.base import ObjectInfo

BACKENDS = ["memory", "local", "s3"]


def make_storage(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Storage:
    if kind == "memory":
        return MemoryStorage()
    if kind == "local":
        # A root that does not exist yet, like `vault init /new/path`: the backend creates it.
        return LocalStorage(tmp_path / "repo")
    if kind == "s3":
        # The real SeaweedFS server of this test run; a fresh two-level prefix, so that prefix
        # handling is exercised too.
        server = request.getfixturevalue("s3_server")
        request.getfixturevalue("s3_env")
        return open_storage(fresh_s3_url(server) + "/nested")
    raise AssertionError(f"unknown backend {kind}")


@pytest.fixture(params=BACKENDS)
def storage_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def storage(storage_kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Storage:
    return make_storage(storage_kind, tmp_path, request)


def keys_of(storage: Storage, prefix: str = "") -> set[str]:
    return {info.key for info in storage.list(prefix)}


# -- conformance: every backend -----------------------------------------------------------------


def test_put_then_get_returns_the_same_bytes(storage: Storage) -> None:
    data = bytes(range(256)) * 17
    storage.put("data/ab/abcd", data)
    assert storage.get("data/ab/abcd") == data


def test_empty_object_round_trips(storage: Storage) -> None:
    storage.put("config", b"")
    assert storage.get("config") == b""
    assert storage.stat("config") == ObjectInfo("config", 0)


def test_put_overwrites_an_existing_object(storage: Storage) -> None:
    storage.put("config", b"old content")
    storage.put("config", b"new")
    assert storage.get("config") == b"new"
    assert storage.stat("config").size == 3


def test_put_if_absent_on_existing_key_raises_and_keeps_old_content(storage: Storage) -> None:
    storage.put("snapshots/s1", b"first")
    with pytest.raises(ObjectExists) as caught:
        storage.put("snapshots/s1", b"second", if_absent=True)
    assert caught.value.key == "snapshots/s1"
    assert isinstance(caught.value, StorageError)
    assert storage.get("snapshots/s1") == b"first"


def test_put_if_absent_on_new_key_creates_the_object(storage: Storage) -> None:
    storage.put("snapshots/s1", b"first", if_absent=True)
    assert storage.get("snapshots/s1") == b"first"


@pytest.mark.parametrize(
    ("offset", "length", "expected"),
    [
        (0, None, b"0123456789"),
        (0, 4, b"0123"),
        (3, 4, b"3456"),
        (3, None, b"3456789"),
        (9, 1, b"9"),
        (0, 0, b""),
        (8, 5, b"89"),  # range running past the end: what exists
        (10, None, b""),  # offset at the end
        (15, 3, b""),  # offset past the end
        (15, None, b""),
    ],
)
def test_get_with_offset_and_length_returns_that_range(
    storage: Storage, offset: int, length: int | None, expected: bytes
) -> None:
    storage.put("data/00/obj", b"0123456789")
    assert storage.get("data/00/obj", offset=offset, length=length) == expected


def test_get_of_missing_key_raises_object_not_found(storage: Storage) -> None:
    with pytest.raises(ObjectNotFound) as caught:
        storage.get("data/ab/missing")
    assert caught.value.key == "data/ab/missing"


def test_stat_of_missing_key_raises_object_not_found(storage: Storage) -> None:
    storage.put("data/ab/other", b"x")
    with pytest.raises(ObjectNotFound):
        storage.stat("data/ab/missing")


def test_stat_reports_the_key_and_size(storage: Storage) -> None:
    storage.put("index/i1", b"12345")
    assert storage.stat("index/i1") == ObjectInfo("index/i1", 5)


def test_prefix_of_existing_keys_is_not_itself_an_object(storage: Storage) -> None:
    # On a local directory the prefix is a directory; on S3 it is nothing at all.
    storage.put("data/ab/abcd", b"x")
    with pytest.raises(ObjectNotFound):
        storage.stat("data")
    with pytest.raises(ObjectNotFound):
        storage.get("data/ab")
    storage.delete("data")  # a missing key: not an error
    assert storage.get("data/ab/abcd") == b"x"


def test_key_below_an_existing_object_does_not_exist(storage: Storage) -> None:
    storage.put("config", b"x")
    with pytest.raises(ObjectNotFound):
        storage.get("config/sub")
    with pytest.raises(ObjectNotFound):
        storage.stat("config/sub")
    storage.delete("config/sub")


def test_list_returns_exactly_the_keys_with_the_prefix(storage: Storage) -> None:
    objects = {
        "version": b"v",
        "config": b"c",
        "keys/k1": b"1",
        "keys/k2": b"22",
        "data/ab/abcd": b"333",
        "data/ab/abef": b"4444",
        "data/cd/cdef": b"55555",
        "index/i1": b"6",
        "snapshots/s1": b"7",
    }
    for key, data in objects.items():
        storage.put(key, data)

    assert keys_of(storage) == set(objects)
    assert keys_of(storage, "data/") == {"data/ab/abcd", "data/ab/abef", "data/cd/cdef"}
    assert keys_of(storage, "data/ab/") == {"data/ab/abcd", "data/ab/abef"}
    assert keys_of(storage, "data/ab/abe") == {"data/ab/abef"}
    assert keys_of(storage, "data/a") == {"data/ab/abcd", "data/ab/abef"}
    assert keys_of(storage, "keys/") == {"keys/k1", "keys/k2"}
    assert keys_of(storage, "k") == {"keys/k1", "keys/k2"}
    assert keys_of(storage, "con") == {"config"}
    assert keys_of(storage, "config") == {"config"}
    assert keys_of(storage, "locks/") == set()
    assert keys_of(storage, "data/zz/") == set()
    assert keys_of(storage, "nothing") == set()


def test_list_reports_each_object_size(storage: Storage) -> None:
    storage.put("data/ab/abcd", b"333")
    storage.put("data/ab/abef", b"")
    assert set(storage.list("data/")) == {
        ObjectInfo("data/ab/abcd", 3),
        ObjectInfo("data/ab/abef", 0),
    }


def test_list_of_empty_storage_is_empty(storage: Storage) -> None:
    assert list(storage.list()) == []
    assert list(storage.list("data/")) == []


def test_delete_removes_the_object_from_get_stat_and_list(storage: Storage) -> None:
    storage.put("locks/l1", b"x")
    storage.put("locks/l2", b"y")
    storage.delete("locks/l1")
    with pytest.raises(ObjectNotFound):
        storage.get("locks/l1")
    with pytest.raises(ObjectNotFound):
        storage.stat("locks/l1")
    assert keys_of(storage, "locks/") == {"locks/l2"}


def test_delete_is_idempotent(storage: Storage) -> None:
    storage.put("locks/l1", b"x")
    storage.delete("locks/l1")
    storage.delete("locks/l1")
    storage.delete("locks/never-existed")
    assert keys_of(storage) == set()


def test_put_if_absent_succeeds_again_after_delete(storage: Storage) -> None:
    storage.put("snapshots/s1", b"one", if_absent=True)
    storage.delete("snapshots/s1")
    storage.put("snapshots/s1", b"two", if_absent=True)
    assert storage.get("snapshots/s1") == b"two"


def test_location_is_a_non_empty_string(storage: Storage) -> None:
    assert isinstance(storage.location(), str)
    assert storage.location()


# -- local directory only ----------------------------------------------------------------------


@pytest.fixture
def local(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "repo")


def _files_and_dirs(root: Path) -> tuple[list[Path], list[Path]]:
    files: list[Path] = []
    dirs: list[Path] = [root]
    for dirpath, dirnames, filenames in os.walk(root):
        dirs.extend(Path(dirpath) / d for d in dirnames)
        files.extend(Path(dirpath) / f for f in filenames)
    return files, dirs


def _mode(path: Path) -> int:
    return stat_mode.S_IMODE(path.stat().st_mode)


def test_local_objects_are_files_readable_only_by_the_owner(local: LocalStorage) -> None:
    local.put("config", b"c")
    local.put("keys/k1", b"k")
    local.put("data/ab/abcd", b"d", if_absent=True)
    files, _ = _files_and_dirs(local.root)
    assert len(files) == 3
    assert {oct(_mode(f)) for f in files} == {oct(0o600)}


def test_local_directories_are_private_to_the_owner(local: LocalStorage) -> None:
    local.put("data/ab/abcd", b"d")  # creates root, data/ and data/ab/ in one go
    local.put("keys/k1", b"k")
    _, dirs = _files_and_dirs(local.root)
    assert {d.relative_to(local.root).as_posix(): oct(_mode(d)) for d in dirs} == {
        ".": oct(0o700),
        "data": oct(0o700),
        "data/ab": oct(0o700),
        "keys": oct(0o700),
    }


def test_local_directories_created_one_level_at_a_time_are_private(
    tmp_path: Path,
) -> None:
    # The path `vault init` takes today: `config` first creates the root, then one level each.
    storage = LocalStorage(tmp_path / "repo")
    storage.put("config", b"c")
    storage.put("keys/k1", b"k")
    storage.put("index/i1", b"i")
    _, dirs = _files_and_dirs(storage.root)
    assert {oct(_mode(d)) for d in dirs} == {oct(0o700)}


def test_local_put_leaves_no_temp_files(local: LocalStorage) -> None:
    local.put("config", b"c")
    local.put("config", b"c2")
    local.put("data/ab/abcd", b"d", if_absent=True)
    with pytest.raises(ObjectExists):
        local.put("data/ab/abcd", b"other", if_absent=True)
    files, _ = _files_and_dirs(local.root)
    assert sorted(f.relative_to(local.root).as_posix() for f in files) == [
        "config",
        "data/ab/abcd",
    ]


def test_local_list_ignores_stray_temp_files(local: LocalStorage) -> None:
    local.put("data/ab/abcd", b"d")
    (local.root / "data" / "ab" / ".tmp-0123456789abcdef").write_bytes(b"partial")
    assert keys_of(local) == {"data/ab/abcd"}


@pytest.mark.parametrize(
    "key",
    ["", "../x", "a/../../x", "a//b", "/abs", "a/", ".", "a/./b", "..", "data/.tmp-0123"],
)
def test_local_invalid_keys_are_rejected_by_every_operation(
    local: LocalStorage, tmp_path: Path, key: str
) -> None:
    operations: list[Callable[[], object]] = [
        lambda: local.put(key, b"x"),
        lambda: local.get(key),
        lambda: local.stat(key),
        lambda: local.delete(key),
    ]
    for operation in operations:
        with pytest.raises(StorageError) as caught:
            operation()
        assert not isinstance(caught.value, ObjectNotFound)
    # Nothing was written anywhere, in particular not outside the root.
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def _fail(*args: object, **kwargs: object) -> None:
    raise OSError(5, "Input/output error (injected)")


@pytest.mark.parametrize(
    ("function", "if_absent"),
    [("replace", False), ("fsync", False), ("link", True), ("fsync", True)],
)
def test_local_put_failing_midway_leaves_no_partial_object_and_no_temp_file(
    local: LocalStorage, monkeypatch: pytest.MonkeyPatch, function: str, if_absent: bool
) -> None:
    local.put("keys/k0", b"unrelated")
    monkeypatch.setattr(os, function, _fail)
    with pytest.raises(StorageError) as caught:
        local.put("keys/k1", b"new content", if_absent=if_absent)
    assert "keys/k1" in str(caught.value)
    monkeypatch.undo()

    with pytest.raises(ObjectNotFound):
        local.get("keys/k1")
    files, _ = _files_and_dirs(local.root)
    assert [f.relative_to(local.root).as_posix() for f in files] == ["keys/k0"]


def test_local_overwrite_failing_midway_keeps_the_old_content(
    local: LocalStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    local.put("config", b"old")
    monkeypatch.setattr(os, "replace", _fail)
    with pytest.raises(StorageError):
        local.put("config", b"new content")
    monkeypatch.undo()
    assert local.get("config") == b"old"
    files, _ = _files_and_dirs(local.root)
    assert [f.name for f in files] == ["config"]


@pytest.fixture
def synced_dirs(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Record every directory that is fsynced (by watching os.open and os.fsync)."""
    real_open, real_fsync = os.open, os.fsync
    dir_fds: dict[int, str] = {}
    synced: list[str] = []

    def recording_open(path: object, flags: int, *args: object, **kwargs: object) -> int:
        fd = real_open(path, flags, *args, **kwargs)  # type: ignore[arg-type]
        if flags & os.O_DIRECTORY:
            dir_fds[fd] = os.fspath(path)  # type: ignore[arg-type]
        return fd

    def recording_fsync(fd: int) -> None:
        if fd in dir_fds:
            synced.append(dir_fds.pop(fd))
        real_fsync(fd)

    monkeypatch.setattr(os, "open", recording_open)
    monkeypatch.setattr(os, "fsync", recording_fsync)
    yield synced


def test_local_put_syncs_the_directory_holding_the_new_name(
    tmp_path: Path, synced_dirs: list[str]
) -> None:
    storage = LocalStorage(tmp_path / "repo")
    storage.put("config", b"c")
    synced_dirs.clear()
    storage.put("config", b"c2")
    assert str(storage.root) in synced_dirs


def test_local_put_syncs_every_directory_that_gained_an_entry(
    tmp_path: Path, synced_dirs: list[str]
) -> None:
    storage = LocalStorage(tmp_path / "repo")
    storage.put("config", b"c")  # the root exists from here on
    synced_dirs.clear()
    storage.put("data/ab/abcd", b"d")
    root = storage.root
    assert {str(root), str(root / "data"), str(root / "data" / "ab")} <= set(synced_dirs)
