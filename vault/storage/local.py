"""A repository in a local directory: atomic writes via temp file, fsync and rename.

Objects are files under the root; key 'data/ab/abcd…' is the file root/data/ab/abcd…. Files are
created 0600 and directories 0700: a repository holds only ciphertext, but key slots and the
layout of a practice's backups are nobody else's business on a shared machine.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path

from vault.errors import ObjectExists, ObjectNotFound, StorageError
from vault.storage.base import VERSIONS_NONE, ObjectInfo, OldVersion, Retention

_TEMP_PREFIX = ".tmp-"


class LocalStorage:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser().absolute()

    def location(self) -> str:
        return str(self.root)

    def local_root(self) -> str | None:
        return str(self.root)

    def supports_object_lock(self) -> bool:
        return False

    def extend_retention(self, key: str, retention: Retention) -> None:
        raise StorageError("a local directory cannot hold objects under Object Lock")

    # A directory keeps no old versions itself; file-system snapshots or copies of it are
    # outside what vault can see (an erase certificate says so).
    def versioning(self) -> str:
        return VERSIONS_NONE

    def atomic_if_absent(self) -> bool:
        return True

    def capabilities(self) -> dict[str, str]:
        return {
            "backend": "local directory",
            "transport": "none (local file system)",
            "conditional writes": "yes (exclusive create, atomic rename)",
            "versioning": "none kept by vault (file-system snapshots are outside its view)",
            "object lock": "not available",
        }

    def old_versions(self, prefix: str = "") -> Iterator[OldVersion]:
        return iter(())

    def delete_version(self, key: str, version_id: str) -> None:
        raise StorageError(f"{self.location()} keeps no old versions")

    def _path(self, key: str) -> Path:
        parts = key.split("/")
        if not key or any(p in ("", ".", "..") or p.startswith(_TEMP_PREFIX) for p in parts):
            raise StorageError(f"invalid object name {key!r}")
        return self.root.joinpath(*parts)

    def put(
        self, key: str, data: bytes, *, if_absent: bool = False, retention: Retention | None = None
    ) -> None:
        if retention is not None:
            raise StorageError("a local directory cannot hold objects under Object Lock")
        path = self._path(key)
        try:
            self._make_dirs(path.parent)
            temp = path.parent / f"{_TEMP_PREFIX}{secrets.token_hex(8)}"
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
                if if_absent:
                    # link() refuses to replace an existing name: an atomic create-if-absent.
                    try:
                        os.link(temp, path)
                    except FileExistsError:
                        raise ObjectExists(key) from None
                    finally:
                        os.unlink(temp)
                else:
                    os.replace(temp, path)
            except BaseException:
                temp.unlink(missing_ok=True)
                raise
            _fsync_dir(path.parent)
        except OSError as exc:
            raise StorageError(f"cannot write {key} in {self.root}: {exc.strerror}") from exc

    def _make_dirs(self, directory: Path) -> None:
        """Create missing directories 0700, each made durable in its parent (a new directory
        entry is lost in a power cut unless the parent is fsynced too)."""
        missing = []
        while not directory.is_dir():
            missing.append(directory)
            directory = directory.parent
        for new in reversed(missing):
            try:
                new.mkdir(mode=0o700)
            except FileExistsError:
                continue  # another writer made it
            _fsync_dir(new.parent)

    def get(self, key: str, *, offset: int = 0, length: int | None = None) -> bytes:
        path = self._path(key)
        try:
            with open(path, "rb") as handle:
                if offset:
                    handle.seek(offset)
                return handle.read() if length is None else handle.read(length)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise ObjectNotFound(key) from None
        except OSError as exc:
            raise StorageError(f"cannot read {key} in {self.root}: {exc.strerror}") from exc

    def stat(self, key: str) -> ObjectInfo:
        try:
            st = self._path(key).stat()
        except (FileNotFoundError, NotADirectoryError):
            raise ObjectNotFound(key) from None
        except OSError as exc:
            raise StorageError(f"cannot stat {key} in {self.root}: {exc.strerror}") from exc
        if not stat.S_ISREG(st.st_mode):
            raise ObjectNotFound(key)  # a directory of the layout is not an object
        return ObjectInfo(key, st.st_size)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        base, _, _ = prefix.rpartition("/")
        start = self.root / base if base else self.root
        if not start.is_dir():
            return
        for dirpath, dirnames, filenames in os.walk(start):
            dirnames.sort()
            rel_dir = os.path.relpath(dirpath, self.root)
            for name in sorted(filenames):
                if name.startswith(_TEMP_PREFIX):
                    continue
                key = name if rel_dir == "." else f"{rel_dir}/{name}".replace(os.sep, "/")
                if not key.startswith(prefix):
                    continue
                try:
                    size = os.stat(os.path.join(dirpath, name)).st_size
                except FileNotFoundError:
                    continue  # deleted while listing
                yield ObjectInfo(key, size)

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            pass
        except OSError as exc:
            raise StorageError(f"cannot delete {key} in {self.root}: {exc.strerror}") from exc


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    except OSError as exc:  # some filesystems refuse fsync on directories
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)
