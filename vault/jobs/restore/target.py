"""The restore target: a directory that is written only through directory file descriptors.

Restore usually runs as root, into a directory that may already hold what a local user planted.
So every path below the target is reached one component at a time with
openat(O_DIRECTORY | O_NOFOLLOW) from the target's own descriptor: a symlink (or a file) where a
directory should be is refused with an error naming it, never followed, and a component swapped
while the restore runs can make the restore fail but never make it write elsewhere. Files are
created with O_EXCL (with overwrite, an existing name is unlinked first, so a planted hard link
is replaced, not written through) and reopened only after checking they are still the file the
restore created. Modes, owners and times are set on an open descriptor, or with
follow_symlinks=False for links; setuid and setgid bits are kept only when the owner was
restored too.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import threading
from collections import OrderedDict
from pathlib import Path

from vault.errors import UsageError, VaultError
from vault.format.paths import display
from vault.format.tree import DIR, SYMLINK, Node

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_SET_ID_BITS = stat.S_ISUID | stat.S_ISGID

FileId = tuple[int, int]  # (st_dev, st_ino) of a file the restore created


class UnsafeTarget(VaultError):
    """Something in the target is not what the restore may write through."""


class Target:
    """The target directory, as a descriptor, and the directories below it (a bounded cache of
    open descriptors; a directory evicted from it is reached again from the nearest cached
    ancestor, component by component). Safe to use from several threads."""

    CACHED_DIRS = 64

    def __init__(self, root: Path) -> None:
        # The target itself is what the user named, links and all; below it nothing is followed.
        if root.exists() and not root.is_dir():
            raise UsageError(f"restore target {root} exists and is not a directory")
        self.fresh = not root.exists()  # made by this restore: nothing in it to clash with
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self._root = os.fsencode(root)
        self._root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self._dirs: OrderedDict[bytes, int] = OrderedDict()
        self._links: dict[bytes, FileId] = {}  # symlinks this restore made, by inode
        self._lock = threading.RLock()

    def __enter__(self) -> Target:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            for fd in self._dirs.values():
                os.close(fd)
            self._dirs.clear()
            if self._root_fd >= 0:
                os.close(self._root_fd)
                self._root_fd = -1

    def where(self, rel: bytes) -> str:
        """A path below the target as the user sees it, for messages."""
        return display(self._root + b"/" + rel)

    # -- directories ---------------------------------------------------------------------------

    def _dir_fd(self, rel: bytes, create: bool) -> int | None:
        """The descriptor of directory `rel` (b"" is the target); None when it does not exist
        and `create` is false. Caller holds the lock; the descriptor belongs to the cache."""
        # From the nearest cached ancestor down, one component at a time (no recursion: trees
        # may be thousands of directories deep).
        base, rest = rel, []
        while base and base not in self._dirs:
            base, _, name = base.rpartition(b"/")
            rest.append(name)
        fd = self._dirs[base] if base else self._root_fd
        if base:
            self._dirs.move_to_end(base)
        for name in reversed(rest):
            base = base + b"/" + name if base else name
            opened = self._open_child(fd, name, base, create)
            if opened is None:
                return None
            fd = opened
        return fd

    def _open_child(self, parent_fd: int, name: bytes, rel: bytes, create: bool) -> int | None:
        try:
            try:
                fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
            except FileNotFoundError:
                if not create:
                    return None
                with contextlib.suppress(FileExistsError):  # made meanwhile: checked below
                    os.mkdir(name, 0o700, dir_fd=parent_fd)
                fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
        except OSError as exc:
            raise self._not_a_dir(rel, exc) from None
        self._dirs[rel] = fd
        if len(self._dirs) > self.CACHED_DIRS:
            # The oldest entry is never the parent just used: that one was touched last.
            _, old = self._dirs.popitem(last=False)
            os.close(old)
        return fd

    def _not_a_dir(self, rel: bytes, exc: OSError) -> VaultError:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            what = "a symlink" if exc.errno == errno.ELOOP else "not a directory"
            return UnsafeTarget(
                f"restore target: {self.where(rel)} is {what}; refusing to restore through it "
                "(move it away and run the restore again)"
            )
        return VaultError(f"cannot open {self.where(rel)}: {exc.strerror or exc}")

    def make_dir(self, rel: bytes) -> None:
        """Directory `rel` and its parents, made 0700 where missing (modes are set last)."""
        with self._lock:
            self._dir_fd(rel, create=True)

    def _parent(self, rel: bytes, create: bool = True) -> tuple[int | None, bytes]:
        parent, _, name = rel.rpartition(b"/")
        return self._dir_fd(parent, create), name

    # -- entries -------------------------------------------------------------------------------

    def lstat(self, rel: bytes) -> os.stat_result | None:
        """What is at `rel` now (links not followed); None when nothing is. A component on the
        way that is not a real directory is refused."""
        with self._lock:
            parent_fd, name = self._parent(rel, create=False)
            if parent_fd is None:
                return None
            try:
                return os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
            except FileNotFoundError:
                return None

    def _clear(self, parent_fd: int, name: bytes, rel: bytes) -> None:
        """Remove what an overwrite replaces; a directory is never removed."""
        try:
            st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            raise UnsafeTarget(
                f"restore target: {self.where(rel)} is a directory; cannot replace it with a file"
            )
        os.unlink(name, dir_fd=parent_fd)

    def create_file(self, rel: bytes, size: int, overwrite: bool) -> tuple[int, FileId]:
        """A new file of `size` bytes (holes until written), open for writing, and its id."""
        with self._lock:
            parent_fd, name = self._parent(rel)
            assert parent_fd is not None
            if overwrite:
                self._clear(parent_fd, name, rel)
            fd = os.open(name, _NEW_FILE_FLAGS, 0o600, dir_fd=parent_fd)
        try:
            os.ftruncate(fd, size)
            st = os.fstat(fd)
        except BaseException:
            os.close(fd)
            raise
        return fd, (st.st_dev, st.st_ino)

    def resumable_file(self, rel: bytes, size: int) -> FileId | None:
        """A regular file already at `rel` that a resumed restore may complete in place: the
        right size (a restore makes files at full size first), and one link only, so writing
        into it can never change a file outside the target through a planted hard link."""
        st = self.lstat(rel)
        if st is None or not stat.S_ISREG(st.st_mode) or st.st_nlink != 1 or st.st_size != size:
            return None
        return (st.st_dev, st.st_ino)

    def reopen_file(self, rel: bytes, file_id: FileId, flags: int = os.O_WRONLY) -> int:
        """The file the restore created at `rel`, opened again; refused if it was replaced."""
        with self._lock:
            parent_fd, name = self._parent(rel, create=False)
            if parent_fd is None:
                raise UnsafeTarget(f"restore target: {self.where(rel)} vanished during the restore")
            try:
                # O_NONBLOCK: a FIFO swapped in for the file must fail the open, not hang it.
                fd = os.open(
                    name, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=parent_fd
                )
            except OSError as exc:
                raise UnsafeTarget(
                    f"restore target: {self.where(rel)} changed during the restore "
                    f"({exc.strerror or exc})"
                ) from None
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != file_id or not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise UnsafeTarget(f"restore target: {self.where(rel)} was replaced during the restore")
        return fd

    def symlink(self, rel: bytes, link_target: bytes, overwrite: bool) -> None:
        with self._lock:
            parent_fd, name = self._parent(rel)
            assert parent_fd is not None
            if overwrite:
                self._clear(parent_fd, name, rel)
            os.symlink(link_target, name, dir_fd=parent_fd)
            st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
            self._links[rel] = (st.st_dev, st.st_ino)

    # -- metadata ------------------------------------------------------------------------------

    def apply_metadata(self, rel: bytes, node: Node, file_id: FileId | None = None) -> None:
        """Owner, mode and times of `rel` from `node`, on an open descriptor (files and
        directories) or without following the link (symlinks)."""
        if node.type == SYMLINK:
            with self._lock:
                parent_fd, name = self._parent(rel, create=False)
                if parent_fd is None:
                    return
                # Still the link this restore made? A hard link swapped in at its name would
                # take the owner and times meant for the link.
                st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
                if not stat.S_ISLNK(st.st_mode) or (st.st_dev, st.st_ino) != self._links.get(rel):
                    raise UnsafeTarget(
                        f"restore target: {self.where(rel)} was replaced during the restore"
                    )
                _chown(name, node, dir_fd=parent_fd)
                os.utime(
                    name,
                    ns=(node.mtime_ns, node.mtime_ns),
                    dir_fd=parent_fd,
                    follow_symlinks=False,
                )
            return
        if node.type == DIR:
            with self._lock:
                dir_fd = self._dir_fd(rel, create=True)
                assert dir_fd is not None
                fd = os.dup(dir_fd)
        else:
            assert file_id is not None
            fd = self.reopen_file(rel, file_id, os.O_RDONLY)
        try:
            set_metadata(fd, node)
        finally:
            os.close(fd)


def set_metadata(fd: int, node: Node) -> None:
    """Owner, mode and times from `node` on an open file or directory, in that order: a
    chown clears set-id bits, and the times go last so nothing after them moves the mtime."""
    owned = _chown(fd, node)
    mode = node.mode if owned else node.mode & ~_SET_ID_BITS
    os.chmod(fd, stat.S_IMODE(mode))
    os.utime(fd, ns=(node.mtime_ns, node.mtime_ns))


def _chown(path: int | bytes, node: Node, dir_fd: int | None = None) -> bool:
    """Restore the owner; False when this process may not (not root), which is not an error."""
    try:
        if isinstance(path, int):
            os.chown(path, node.uid, node.gid)
        else:
            os.chown(path, node.uid, node.gid, dir_fd=dir_fd, follow_symlinks=False)
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EINVAL):
            raise
        return False
    return True
