"""The restore job: rebuild files from a snapshot into a target directory.

Each pack that holds needed chunks is fetched once, as byte ranges covering only the needed
blobs (nearby blobs are merged into one request), by a pool of threads; every chunk is
authenticated by GCM and its id recomputed, then written at its offsets with pwrite (a chunk of
zeros is not written: files are created at full size, so sparse files come back sparse). Metadata
(modes, owners, mtimes) is applied after the content, directories last, deepest first.
Everything is written through `Target` (directory descriptors, nothing below the target
followed: vault.jobs.restore.target); trees whose names could escape a directory never decode.
Existing files are not overwritten unless asked.
"""

from __future__ import annotations

import hashlib
import os
import stat
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from vault.errors import IntegrityError, UsageError, VaultError
from vault.format import crypto, layout
from vault.format.index import Location
from vault.format.pack import BlobType, open_blob
from vault.format.paths import IncludeMatcher, display, is_safe_name, normalize
from vault.format.snapshot import Snapshot
from vault.format.tree import DIR, FILE, SYMLINK, Node
from vault.jobs.restore.target import FileId, Target, UnsafeTarget
from vault.progress import NoProgress, Progress
from vault.repo.repository import Repository

MERGE_GAP = 1 << 20  # fetch across gaps up to 1 MiB rather than issue another request
FETCH_THREADS = 4


@dataclass(frozen=True)
class RestoreOptions:
    target: Path
    includes: tuple[str, ...] = ()
    overwrite: bool = False
    verify: bool = False
    # Complete an interrupted restore: existing files of the right size are checked chunk by
    # chunk against the snapshot (keyed chunk ids) and only what is missing or wrong is fetched.
    resume: bool = False


@dataclass
class RestoreResult:
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    bytes: int = 0
    bytes_downloaded: int = 0
    requests: int = 0
    verified: int = 0
    problems: list[tuple[str, str]] = field(default_factory=list)
    # With resume: bytes found already written correctly (verified chunk by chunk, not trusted
    # by name), and files that were complete.
    bytes_kept: int = 0
    files_kept: int = 0


@dataclass(frozen=True)
class _Item:
    path: bytes  # snapshot path, absolute
    node: Node


def walk(
    repo: Repository,
    snapshot: Snapshot,
    problems: list[tuple[str, str]],
    descend: Callable[[bytes], bool] = lambda path: True,
) -> Iterator[_Item]:
    """Every entry of a snapshot, parents before children; unsafe names reported and skipped.
    Directories for which `descend` is false are listed but not entered (their trees are not
    even fetched: restoring one study does not read the whole archive's metadata)."""
    stack: list[tuple[bytes, str]] = [(b"", snapshot.tree)]
    while stack:
        prefix, tree_id = stack.pop()
        for node in repo.load_tree(tree_id).nodes:
            if not is_safe_name(node.name):
                problems.append(
                    (
                        display(prefix + b"/" + node.name),
                        "refused: name would escape the target directory",
                    )
                )
                continue
            path = prefix + b"/" + node.name
            yield _Item(path, node)
            if node.type == DIR and node.subtree and descend(path):
                stack.append((path, node.subtree))


def restore(
    repo: Repository, snapshot: Snapshot, options: RestoreOptions, progress: Progress | None = None
) -> RestoreResult:
    progress = progress or NoProgress()
    result = RestoreResult()
    repo.load_index()
    includes = [normalize(i) for i in options.includes]
    matcher = IncludeMatcher(includes)
    found = walk(repo, snapshot, result.problems, descend=matcher.selected)
    items = [i for i in found if matcher.selected(i.path)]
    # Ancestors of an include are created as directories but keep nothing else.
    items = [i for i in items if i.node.type == DIR or matcher.inside(i.path)]
    if includes and not any(matcher.inside(i.path) for i in items):
        raise UsageError(
            f"nothing in snapshot {snapshot.id[:8]} matches {', '.join(options.includes)}"
        )
    with Target(options.target.absolute()) as target:
        _check_target(target, items, options.overwrite or options.resume)
        _write_items(repo, target, items, result, progress, options)
    return result


def _rel(item: _Item) -> bytes:
    """An item's path below the target (snapshot paths are absolute)."""
    return item.path[1:]


def _write_items(
    repo: Repository,
    target: Target,
    items: list[_Item],
    result: RestoreResult,
    progress: Progress,
    options: RestoreOptions,
) -> None:
    files = [i for i in items if i.node.type == FILE]
    for item in items:
        if item.node.type == DIR:
            target.make_dir(_rel(item))
            result.dirs += 1
    progress.start("restore", sum(i.node.size for i in files))
    file_ids = _fetch_and_write(repo, target, files, result, progress, options)
    progress.finish()
    for item in items:
        if item.node.type == SYMLINK:
            target.symlink(_rel(item), item.node.link_target, options.overwrite or options.resume)
            result.symlinks += 1
    failed = {p for p, _ in result.problems}
    for number, item in enumerate(files):
        if display(item.path) in failed:
            continue
        result.files += 1
        result.bytes += item.node.size
        if options.verify:
            _verify(target, item, file_ids[number], result)
    for number, item in enumerate(files):
        target.apply_metadata(_rel(item), item.node, file_ids[number])
    for item in items:
        if item.node.type == SYMLINK:
            target.apply_metadata(_rel(item), item.node)
    for item in sorted((i for i in items if i.node.type == DIR), key=lambda i: -i.path.count(b"/")):
        target.apply_metadata(_rel(item), item.node)


def _check_target(target: Target, items: list[_Item], overwrite: bool) -> None:
    """Refuse before writing anything: a directory of the snapshot that exists in the target
    as something else (a planted symlink, a file), and without overwrite any existing name."""
    if target.fresh:
        return
    clashes = []
    for item in items:
        st = target.lstat(_rel(item))
        if st is None:
            continue
        if item.node.type == DIR:
            if not stat.S_ISDIR(st.st_mode):
                what = "a symlink" if stat.S_ISLNK(st.st_mode) else "not a directory"
                raise UnsafeTarget(
                    f"restore target: {target.where(_rel(item))} is {what}; refusing to "
                    "restore through it (move it away and run the restore again)"
                )
        elif not overwrite:
            clashes.append(item)
    if clashes:
        raise UsageError(
            f"refusing to overwrite {len(clashes)} existing file(s) in {target.root} "
            f"(first: {display(clashes[0].path)}); pass --overwrite to replace them"
        )


class _Outputs:
    """The files being restored, created by the first chunk written to each (in the fetch
    threads: creating thousands of files one by one before fetching took a third of a restore)
    and kept open until their last chunk is written."""

    MAX_OPEN = 512

    def __init__(self, target: Target, rels: list[bytes], sizes: list[int], overwrite: bool):
        self.target, self.rels, self.sizes, self.overwrite = target, rels, sizes, overwrite
        self.remaining = [0] * len(rels)
        self.fds: dict[int, int] = {}
        # Files to complete in place (a resumed restore) start here, so they are reopened,
        # never created again.
        self.file_ids: dict[int, FileId] = {}
        self.in_place: set[int] = set()
        self._locks = [threading.Lock() for _ in range(64)]
        self._table = threading.Lock()

    def expect(self, number: int) -> None:
        self.remaining[number] += 1

    def write(self, number: int, data: bytes, offset: int) -> None:
        try:
            self._write(number, data, offset)
        except UnsafeTarget:
            raise
        except OSError as exc:
            # A full or read-only target: one clear error naming the file, not a bare errno.
            where = self.target.where(self.rels[number])
            raise VaultError(f"cannot write {where}: {exc.strerror or exc}") from None

    def _open(self, number: int) -> int:
        file_id = self.file_ids.get(number)
        if file_id is not None:
            return self.target.reopen_file(self.rels[number], file_id)
        fd, self.file_ids[number] = self.target.create_file(
            self.rels[number], self.sizes[number], self.overwrite
        )
        return fd

    def _write(self, number: int, data: bytes, offset: int) -> None:
        with self._locks[number % 64]:
            fd = self.fds.get(number)
            if fd is None:
                fd = self._open(number)
                with self._table:
                    self.fds[number] = fd
            # A file this restore made at full size: zeros stay a hole. One completed in place
            # (resume) may hold other bytes there, so its zeros are written.
            if number in self.in_place or not _all_zero(data):
                _pwrite(fd, data, offset)
            self.remaining[number] -= 1
            if self.remaining[number] == 0 or len(self.fds) > self.MAX_OPEN:
                with self._table:
                    del self.fds[number]
                os.close(fd)

    def close(self) -> None:
        for fd in list(self.fds.values()):
            os.close(fd)
        self.fds.clear()

    def finish(self) -> dict[int, FileId]:
        """Close what is still open; create every file no chunk reached (empty files, and
        files whose chunks failed: they exist at their size, and are reported)."""
        self.close()
        for number in range(len(self.rels)):
            if number not in self.file_ids:
                os.close(self._open(number))
        return self.file_ids


def _fetch_and_write(
    repo: Repository,
    target: Target,
    files: list[_Item],
    result: RestoreResult,
    progress: Progress,
    options: RestoreOptions,
) -> dict[int, FileId]:
    """Write every file's content; returns the id of each file created, by number."""
    # pack id -> blob id -> [(file index, offset in file)]
    plan: dict[str, dict[bytes, list[tuple[int, int]]]] = defaultdict(lambda: defaultdict(list))
    locations: dict[bytes, Location] = {}
    overwrite = options.overwrite or options.resume
    outputs = _Outputs(target, [_rel(f) for f in files], [f.node.size for f in files], overwrite)
    for number, item in enumerate(files):
        present = _Present.open(repo, target, item) if options.resume else None
        offset = 0
        for chunk_hex in item.node.chunks:
            blob_id = bytes.fromhex(chunk_hex)
            location = locations.get(blob_id) or repo.index.lookup(blob_id)
            if location is None or location.entry.type != BlobType.DATA:
                result.problems.append(
                    (display(item.path), f"chunk {chunk_hex[:16]} is not in the index")
                )
                break
            locations[blob_id] = location
            length = location.entry.raw_length
            if present is not None and present.holds(offset, length, blob_id):
                result.bytes_kept += length
                progress.advance(length)
            else:
                plan[location.pack.id][blob_id].append((number, offset))
            offset += length
        if present is not None:
            present.close()
            outputs.file_ids[number] = present.file_id
            outputs.in_place.add(number)
            if present.complete:
                result.files_kept += 1
    for wanted in plan.values():
        for places in wanted.values():
            for number, _ in places:
                outputs.expect(number)
    counted = threading.Lock()

    def fetch_pack(pack_id: str) -> list[tuple[int, str]]:
        wanted = plan[pack_id]
        entries = sorted((locations[b] for b in wanted), key=lambda loc: loc.entry.offset)
        failures: list[tuple[int, str]] = []
        key = None
        for run in _ranges(entries):
            start = run[0].entry.offset
            end = run[-1].entry.offset + run[-1].entry.length
            name = layout.pack(pack_id)
            try:
                data = repo.storage.get(name, offset=start, length=end - start)
                with counted:  # fetch threads share the result's counters
                    result.requests += 1
                    result.bytes_downloaded += len(data)
                if key is None:
                    key = repo.pack_key(pack_id, run[0].pack.epoch, run[0].pack.salt)
            except VaultError as exc:
                failures.extend((n, str(exc)) for loc in run for n, _ in wanted[loc.entry.id])
                continue
            for loc in run:
                e = loc.entry
                try:
                    plain = open_blob(
                        key, e, data[e.offset - start : e.offset - start + e.length], pack_name=name
                    )
                    if not crypto.constant_time_equal(repo.blob_id(plain, e.type), e.id):
                        raise IntegrityError(
                            f"{name}: chunk at offset {e.offset} does not match its id"
                        )
                except IntegrityError as exc:
                    failures.extend((n, str(exc)) for n, _ in wanted[e.id])
                    continue
                for n, file_offset in wanted[e.id]:
                    outputs.write(n, plain, file_offset)
                progress.advance(len(plain) * len(wanted[e.id]))
        return failures

    try:
        with ThreadPoolExecutor(max_workers=FETCH_THREADS, thread_name_prefix="fetch") as pool:
            for failures in pool.map(fetch_pack, sorted(plan)):
                for number, message in failures:
                    result.problems.append((display(files[number].path), message))
    except BaseException:
        outputs.close()  # stop here: no more files made in a target that proved unsafe
        raise
    return outputs.finish()


class _Present:
    """A file a killed restore left in the target, checked chunk by chunk: a chunk counts as
    written when the bytes at its place have its keyed id (so a hole, a torn write or foreign
    bytes are fetched again, and nothing is trusted by name)."""

    def __init__(self, repo: Repository, fd: int, file_id: FileId) -> None:
        self.repo, self.fd, self.file_id = repo, fd, file_id
        self.complete = True

    @classmethod
    def open(cls, repo: Repository, target: Target, item: _Item) -> _Present | None:
        file_id = target.resumable_file(_rel(item), item.node.size)
        if file_id is None:
            return None
        return cls(repo, target.reopen_file(_rel(item), file_id, os.O_RDONLY), file_id)

    def holds(self, offset: int, length: int, blob_id: bytes) -> bool:
        data = os.pread(self.fd, length, offset)
        if len(data) == length and crypto.constant_time_equal(
            self.repo.blob_id(data, BlobType.DATA), blob_id
        ):
            return True
        self.complete = False
        return False

    def close(self) -> None:
        os.close(self.fd)


def _ranges(entries: list[Location]) -> Iterator[list[Location]]:
    run: list[Location] = []
    for loc in entries:
        if run:
            last = run[-1].entry
            if loc.entry.offset - (last.offset + last.length) > MERGE_GAP:
                yield run
                run = []
        run.append(loc)
    if run:
        yield run


def _all_zero(data: bytes) -> bool:
    # Ends first: a chunk of real data almost never starts and ends with a zero byte.
    return data[:1] == b"\0" and data[-1:] == b"\0" and data.count(0) == len(data)


def _pwrite(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


def _verify(target: Target, item: _Item, file_id: FileId, result: RestoreResult) -> None:
    sha = hashlib.sha256()
    fd = target.reopen_file(_rel(item), file_id, os.O_RDONLY)
    with open(fd, "rb", closefd=True) as handle:
        while block := handle.read(1 << 20):
            sha.update(block)
    if sha.hexdigest() == item.node.sha256:
        result.verified += 1
    else:
        result.problems.append(
            (display(item.path), "restored content does not match the recorded SHA-256")
        )
