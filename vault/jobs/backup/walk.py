"""The walk of a backup: directories children first, files read in blocks, hashed and cut
into chunks that a pool of workers stores; unchanged files and trees reused from the parent,
and (carry_over) what the parent held and the disk no longer has, kept."""

from __future__ import annotations

import fnmatch
import hashlib
import os
import stat
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace

from vault.dicom.catalog import Catalog, CatalogBuilder
from vault.dicom.header import HeaderCollector
from vault.errors import DAMAGE, Interrupted, StorageError
from vault.format.pack import BlobType
from vault.format.tree import DIR, FILE, SYMLINK, Node, Tree
from vault.jobs.backup.options import BackupOptions, Problem
from vault.progress import Progress
from vault.repo.repository import Repository
from vault.repo.writer import BlobWriter

# Chunks handed to the workers but not yet stored, per worker: enough that the walk (reading,
# hashing, cutting, parsing DICOM headers) never waits on one slow chunk, few enough that
# memory stays bounded by the pipeline, not the file size (~1 MiB each).
IN_FLIGHT_PER_WORKER = 4
# A chunk this small (a small file, or a file's short tail) is stored by the walk itself: handing
# it to a worker cost more than storing it (a thread wake-up and two GIL switches for some
# microseconds of hashing, compressing and sealing). 200,000 files of 0.1-4 KB: 51 → 20 s; see
# docs/benchmarks.md, "A million tiny files".
STORE_INLINE_BELOW = 64 * 1024


@dataclass
class Pending:
    """A file node whose chunks are still being stored. The walk goes on to the next file
    at once; chunk ids are collected only when the directory's tree is written, so small
    files (one chunk each) do not serialize the walk and the workers."""

    node: Node
    parts: list[Future[bytes] | bytes]  # a chunk's id, or the future of a worker storing it

    def resolve(self) -> Node:
        ids = (p if isinstance(p, bytes) else p.result() for p in self.parts)
        return replace(self.node, chunks=tuple(i.hex() for i in ids))


Entry = Node | Pending


def _resolved(entries: list[Entry]) -> tuple[Node, ...]:
    return tuple(e.resolve() if isinstance(e, Pending) else e for e in entries)


@dataclass
class _Counters:
    files: int = 0
    dirs: int = 0
    bytes: int = 0
    files_new: int = 0
    files_changed: int = 0
    files_unchanged: int = 0
    bytes_read: int = 0


def _node_base(name: bytes, st: os.stat_result) -> dict[str, object]:
    """The node fields every entry type has."""
    return dict(
        name=name,
        mode=stat.S_IMODE(st.st_mode),
        uid=st.st_uid,
        gid=st.st_gid,
        mtime_ns=st.st_mtime_ns,
    )


@dataclass
class _DirFrame:
    """A directory being saved: the names still to visit and the nodes made so far."""

    path: bytes
    names: Iterator[bytes]
    old: Tree | None
    old_id: str
    base: dict[str, object]  # this directory's own node fields (unused for the top one)
    nodes: list[Entry] = field(default_factory=list)


class Job:
    def __init__(
        self,
        repo: Repository,
        options: BackupOptions,
        progress: Progress,
        parent_catalog: Catalog | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        self.repo = repo
        self.stop = stop or threading.Event()
        self.parent_root_id = ""  # the parent snapshot's root tree, reused when unchanged
        self.catalog = CatalogBuilder(parent_catalog)
        self.options = options
        self.progress = progress
        self.writer = BlobWriter(repo)
        self.chunker = repo.chunker()
        self.counters = _Counters()
        self.errors: list[Problem] = []
        self.unstable: list[Problem] = []
        self.special: list[str] = []
        self.pool = ThreadPoolExecutor(max_workers=options.workers, thread_name_prefix="chunk")
        self.in_flight = threading.BoundedSemaphore(IN_FLIGHT_PER_WORKER * options.workers)
        # A local repository inside a source would back up its own growing packs.
        self.skip_paths: set[bytes] = set()
        local_root = repo.storage.local_root()
        if local_root is not None:
            self.skip_paths.add(os.fsencode(local_root))

    # -- walking -----------------------------------------------------------------------------

    def excluded(self, path: bytes) -> bool:
        if path in self.skip_paths:
            return True
        if not self.options.excludes:
            return False
        text = os.fsdecode(path)
        name = os.path.basename(text)
        return any(
            fnmatch.fnmatchcase(text, g) or fnmatch.fnmatchcase(name, g)
            for g in self.options.excludes
        )

    def save_dir(self, path: bytes, old: Tree | None, old_id: str = "") -> str:
        """The tree id of the directory at `path`. Iterative, children before parents: a tree
        can be ~2,000 levels deep (PATH_MAX), beyond Python's frame limit."""
        stack = [self._open_dir(path, old, old_id, {})]
        while True:
            frame = stack[-1]
            name = next(frame.names, None)
            if name is None:
                if self.options.carry_over and frame.old is not None:
                    self._carry(frame)
                stack.pop()
                self.counters.dirs += 1
                tree_id = self.tree_id(_resolved(frame.nodes), frame.old, frame.old_id)
                if not stack:
                    return tree_id
                stack[-1].nodes.append(Node(type=DIR, subtree=tree_id, **frame.base))  # type: ignore[arg-type]
                continue
            child = os.path.join(frame.path, name)
            if self.excluded(child):
                continue
            try:
                st = os.lstat(child)
            except OSError as exc:
                self.error(child, exc)
                continue
            old_node = frame.old.get(name) if frame.old else None
            if stat.S_ISDIR(st.st_mode):
                self.stop_if_asked()
                stack.append(
                    self._open_dir(child, *self.old_subtree(old_node), _node_base(name, st))
                )
                continue
            node = self.save_entry(child, name, st, old_node)
            if node is not None:
                frame.nodes.append(node)

    def _carry(self, frame: _DirFrame) -> None:
        """Nodes of the parent's directory that the disk no longer has, kept as they were
        (their chunks are in the repository; their catalog entries come along)."""
        assert frame.old is not None
        present = {(n.node if isinstance(n, Pending) else n).name for n in frame.nodes}
        for node in frame.old.nodes:
            if node.name in present:
                continue
            if node.type == DIR and node.subtree:
                try:
                    below = list(_files_below(self.repo, os.path.join(frame.path, node.name),
                                              node.subtree))  # fmt: skip
                except DAMAGE:
                    continue  # a damaged tree is not carried: what it held is fetched again
                if not all(self._indexed(kept) for _, kept in below):
                    continue
                for path, kept in below:
                    self._count_kept(path, kept)
                self.counters.dirs += 1
            elif node.type == FILE:
                if not self._indexed(node):
                    continue  # lost chunks are not carried: the file is fetched again
                self._count_kept(os.path.join(frame.path, node.name), node)
            frame.nodes.append(node)

    def _indexed(self, node: Node) -> bool:
        return all(bytes.fromhex(c) in self.writer.index for c in node.chunks)

    def _count_kept(self, path: bytes, node: Node) -> None:
        self.counters.files += 1
        self.counters.files_unchanged += 1
        self.counters.bytes += node.size
        self.catalog.add_unchanged(os.fsdecode(path), node.size)

    def _open_dir(
        self, path: bytes, old: Tree | None, old_id: str, base: dict[str, object]
    ) -> _DirFrame:
        try:
            with os.scandir(path) as it:
                names = sorted(entry.name for entry in it)
        except OSError as exc:
            self.error(path, exc)
            names = []
        return _DirFrame(path, iter(names), old, old_id, base)

    def tree_id(self, nodes: tuple[Node, ...], old: Tree | None, old_id: str) -> str:
        """The id of the tree of `nodes`: the old tree's when nothing in it changed (a nightly
        run over an unchanged archive then serializes and hashes no tree at all)."""
        unchanged = (
            old is not None
            and old_id
            and len(nodes) == len(old.nodes)
            and all(old.get(node.name) == node for node in nodes)
            and bytes.fromhex(old_id) in self.writer.index
        )
        if unchanged:
            return old_id
        return self.writer.add(BlobType.TREE, Tree(nodes).to_bytes()).hex()

    def save_entry(
        self, path: bytes, name: bytes, st: os.stat_result, old: Node | None
    ) -> Entry | None:
        self.stop_if_asked()
        base = _node_base(name, st)
        if stat.S_ISDIR(st.st_mode):
            subtree = self.save_dir(path, *self.old_subtree(old))
            return Node(type=DIR, subtree=subtree, **base)  # type: ignore[arg-type]
        if stat.S_ISLNK(st.st_mode):
            try:
                target = os.readlink(path)
            except OSError as exc:
                self.error(path, exc)
                return None
            self.counters.files += 1
            return Node(type=SYMLINK, link_target=target, **base)  # type: ignore[arg-type]
        if stat.S_ISREG(st.st_mode):
            return self.save_file(path, st, old, base)
        self.special.append(os.fsdecode(path))
        return None

    def old_subtree(self, old: Node | None) -> tuple[Tree | None, str]:
        """The parent snapshot's tree for a directory, and its id ("" when there is none)."""
        if old is None or old.type != DIR or not old.subtree:
            return None, ""
        try:
            return self.repo.load_tree(old.subtree), old.subtree
        except DAMAGE:
            return None, ""  # a damaged parent only costs re-reading

    # -- files -------------------------------------------------------------------------------

    def unchanged(self, st: os.stat_result, old: Node | None) -> bool:
        return (
            old is not None
            and old.type == FILE
            and not old.unstable
            and old.size == st.st_size
            and old.mtime_ns == st.st_mtime_ns
            and old.ctime_ns == st.st_ctime_ns
            and old.inode == st.st_ino
            and all(bytes.fromhex(c) in self.writer.index for c in old.chunks)
        )

    def save_file(
        self, path: bytes, st: os.stat_result, old: Node | None, base: dict[str, object]
    ) -> Entry | None:
        self.counters.files += 1
        self.counters.bytes += st.st_size
        if old is not None and self.unchanged(st, old):
            self.counters.files_unchanged += 1
            self.catalog.add_unchanged(os.fsdecode(path), st.st_size)
            self.progress.advance(st.st_size)
            if all(getattr(old, key) == value for key, value in base.items()):
                return old  # the usual nightly case: no copy of the node at all
            return replace(old, **base)  # type: ignore[arg-type]
        try:
            node = self.read_file(path, st, base)
        except OSError as exc:
            self.counters.files -= 1
            self.counters.bytes -= st.st_size
            self.error(path, exc)
            return None
        if old is None:
            self.counters.files_new += 1
        else:
            self.counters.files_changed += 1
        return node

    def read_file(self, path: bytes, st: os.stat_result, base: dict[str, object]) -> Pending | Node:
        sha = hashlib.sha256()
        parts: list[Future[bytes] | bytes] = []
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NOCTTY", 0)
        fd = os.open(path, flags)
        with os.fdopen(fd, "rb", buffering=0) as handle:
            opened = os.fstat(handle.fileno())

            total = 0
            header = HeaderCollector()

            def read(n: int) -> bytes:
                nonlocal total
                block = handle.read(n) or b""
                if header.wants_more or not total:
                    header.feed(block)  # keeps only what a DICOM header needs
                sha.update(block)
                total += len(block)
                self.counters.bytes_read += len(block)
                self.progress.advance(len(block))
                return block

            for chunk in self.chunker.chunks(read):
                self.stop_if_asked()
                if len(chunk) < STORE_INLINE_BELOW:
                    parts.append(self.store_inline(chunk))
                    continue
                self.in_flight.acquire()
                parts.append(self.pool.submit(self.store_chunk, chunk))
            after = os.fstat(handle.fileno())
        unstable = (
            total != st.st_size
            or after.st_size != st.st_size
            or after.st_mtime_ns != st.st_mtime_ns
            or opened.st_ino != st.st_ino
        )
        if unstable:
            self.unstable.append(Problem(os.fsdecode(path), "changed while it was being read"))
        self.catalog.add_read(os.fsdecode(path), header.result(), total)
        stored = [p for p in parts if isinstance(p, bytes)]
        done = len(stored) == len(parts)  # every chunk stored already: no Pending to resolve
        node = Node(
            type=FILE,
            size=total,
            inode=st.st_ino,
            ctime_ns=st.st_ctime_ns,
            chunks=tuple(i.hex() for i in stored) if done else (),
            sha256=sha.hexdigest(),
            unstable=unstable,
            **base,  # type: ignore[arg-type]
        )
        return node if done else Pending(node, parts)

    def store_inline(self, chunk: bytes) -> bytes:
        """A small chunk stored by the walk. Called while the file is being read, inside the
        handler for the file's read errors: a failure of the repository's side must not pass
        for one (the file reported unreadable and the backup going on)."""
        try:
            return self.writer.add(BlobType.DATA, chunk)
        except OSError as exc:
            raise StorageError(f"cannot store a chunk: {exc.strerror or exc}") from exc

    def store_chunk(self, chunk: bytes) -> bytes:
        try:
            return self.writer.add(BlobType.DATA, chunk)
        finally:
            self.in_flight.release()

    def stop_if_asked(self) -> None:
        if self.stop.is_set():
            raise Interrupted("backup stopped on request; no snapshot was written")

    def error(self, path: bytes, exc: OSError) -> None:
        self.errors.append(Problem(os.fsdecode(path), exc.strerror or str(exc)))

    # -- the root: the ancestors of each source path, as in the source file system -----------

    def save_root(self, sources: list[bytes], parent_root: Tree | None) -> str:
        layout_tree: dict[bytes, object] = {}
        for source in sources:
            parts = [p for p in source.split(b"/") if p]
            node = layout_tree
            for part in parts[:-1]:
                node = node.setdefault(part, {})  # type: ignore[assignment]
            node[parts[-1]] = source
        return self.save_virtual(b"/", layout_tree, parent_root, self.parent_root_id)

    def save_virtual(
        self, path: bytes, mapping: dict[bytes, object], old: Tree | None, old_id: str = ""
    ) -> str:
        nodes: list[Entry] = []
        for name in sorted(mapping):
            child = os.path.join(path, name)
            old_node = old.get(name) if old else None
            try:
                st = os.lstat(child)
            except OSError as exc:
                self.error(child, exc)
                continue
            sub = mapping[name]
            if isinstance(sub, bytes):
                node = self.save_entry(child, name, st, old_node)
                if node is not None:
                    nodes.append(node)
                continue
            subtree = self.save_virtual(child, sub, *self.old_subtree(old_node))  # type: ignore[arg-type]
            nodes.append(Node(type=DIR, subtree=subtree, **_node_base(name, st)))  # type: ignore[arg-type]
        return self.tree_id(_resolved(nodes), old, old_id)


def _files_below(repo: Repository, path: bytes, tree_id: str) -> Iterator[tuple[bytes, Node]]:
    stack = [(path, tree_id)]
    while stack:
        where, subtree = stack.pop()
        for node in repo.load_tree(subtree).nodes:
            child = os.path.join(where, node.name)
            if node.type == DIR and node.subtree:
                stack.append((child, node.subtree))
            elif node.type == FILE:
                yield child, node
