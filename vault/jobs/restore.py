"""The restore job: rebuild files from a snapshot into a target directory.

Each pack that holds needed chunks is fetched once, as byte ranges covering only the needed
blobs (nearby blobs are merged into one request), by a pool of threads; every chunk is
authenticated by GCM and its id recomputed, then written at its offsets with pwrite (a chunk of
zeros is not written: files are created at full size, so sparse files come back sparse). Metadata
(modes, owners, mtimes) is applied after the content, directories last, deepest first.
Names that could escape the target are refused; existing files are not overwritten unless
asked.
"""

from __future__ import annotations

import errno
import hashlib
import os
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
    target = options.target.absolute()
    _check_target(target, items, options.overwrite)
    target.mkdir(parents=True, exist_ok=True)

    files = [i for i in items if i.node.type == FILE]
    for item in items:
        dest = _dest(target, item.path)
        if item.node.type == DIR:
            os.makedirs(dest, mode=0o700, exist_ok=True)
            result.dirs += 1
    progress.start("restore", sum(i.node.size for i in files))
    _fetch_and_write(repo, target, files, result, progress, options.overwrite)
    progress.finish()
    for item in items:
        if item.node.type == SYMLINK:
            dest = _dest(target, item.path)
            if options.overwrite and os.path.lexists(dest):
                os.unlink(dest)
            os.symlink(item.node.link_target, dest)
            result.symlinks += 1
    failed = {p for p, _ in result.problems}
    for item in files:
        if display(item.path) in failed:
            continue
        result.files += 1
        result.bytes += item.node.size
        if options.verify:
            _verify(_dest(target, item.path), item, result)
    for item in items:
        if item.node.type != DIR:
            _apply_metadata(_dest(target, item.path), item.node)
    for item in sorted((i for i in items if i.node.type == DIR), key=lambda i: -i.path.count(b"/")):
        _apply_metadata(_dest(target, item.path), item.node)
    return result


def _dest(target: Path, snapshot_path: bytes) -> bytes:
    return os.fsencode(target) + snapshot_path


def _check_target(target: Path, items: list[_Item], overwrite: bool) -> None:
    if target.exists() and not target.is_dir():
        raise UsageError(f"restore target {target} exists and is not a directory")
    if overwrite or not target.exists():
        return
    clashes = [i for i in items if i.node.type != DIR and os.path.lexists(_dest(target, i.path))]
    if clashes:
        raise UsageError(
            f"refusing to overwrite {len(clashes)} existing file(s) in {target} "
            f"(first: {display(clashes[0].path)}); pass --overwrite to replace them"
        )


def _create_file(dest: bytes, size: int, overwrite: bool) -> int:
    """A new file of `size` bytes (holes until written), open for writing."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
    if not overwrite:
        flags |= os.O_EXCL
    elif os.path.islink(dest):
        os.unlink(dest)
    fd = os.open(dest, flags, 0o600)
    try:
        os.ftruncate(fd, size)
    except BaseException:
        os.close(fd)
        raise
    return fd


class _Outputs:
    """The files being restored, created by the first chunk written to each (in the fetch
    threads: creating thousands of files one by one before fetching took a third of a restore)
    and kept open until their last chunk is written."""

    MAX_OPEN = 512

    def __init__(self, dests: list[bytes], sizes: list[int], overwrite: bool) -> None:
        self.dests, self.sizes, self.overwrite = dests, sizes, overwrite
        self.remaining = [0] * len(dests)
        self.fds: dict[int, int] = {}
        self.created: set[int] = set()
        self._locks = [threading.Lock() for _ in range(64)]
        self._table = threading.Lock()

    def expect(self, number: int) -> None:
        self.remaining[number] += 1

    def write(self, number: int, data: bytes, offset: int) -> None:
        try:
            self._write(number, data, offset)
        except OSError as exc:
            # A full or read-only target: one clear error naming the file, not a bare errno.
            where = os.fsdecode(self.dests[number])
            raise VaultError(f"cannot write {where}: {exc.strerror or exc}") from None

    def _write(self, number: int, data: bytes, offset: int) -> None:
        with self._locks[number % 64]:
            fd = self.fds.get(number)
            if fd is None:
                if number in self.created:
                    fd = os.open(self.dests[number], os.O_WRONLY | getattr(os, "O_NOFOLLOW", 0))
                else:
                    fd = _create_file(self.dests[number], self.sizes[number], self.overwrite)
                    self.created.add(number)
                with self._table:
                    self.fds[number] = fd
            if not _all_zero(data):  # the file was made at full size: zeros stay a hole
                _pwrite(fd, data, offset)
            self.remaining[number] -= 1
            if self.remaining[number] == 0 or len(self.fds) > self.MAX_OPEN:
                with self._table:
                    del self.fds[number]
                os.close(fd)

    def finish(self) -> None:
        """Close what is still open; create every file no chunk reached (empty files, and
        files whose chunks failed: they exist at their size, and are reported)."""
        for fd in list(self.fds.values()):
            os.close(fd)
        self.fds.clear()
        for number in range(len(self.dests)):
            if number not in self.created:
                os.close(_create_file(self.dests[number], self.sizes[number], self.overwrite))


def _fetch_and_write(
    repo: Repository,
    target: Path,
    files: list[_Item],
    result: RestoreResult,
    progress: Progress,
    overwrite: bool,
) -> None:
    # pack id -> blob id -> [(file index, offset in file)]
    plan: dict[str, dict[bytes, list[tuple[int, int]]]] = defaultdict(lambda: defaultdict(list))
    locations: dict[bytes, Location] = {}
    for number, item in enumerate(files):
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
            plan[location.pack.id][blob_id].append((number, offset))
            offset += location.entry.raw_length
    outputs = _Outputs(
        [_dest(target, f.path) for f in files], [f.node.size for f in files], overwrite
    )
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
    finally:
        outputs.finish()


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


def _verify(dest: bytes, item: _Item, result: RestoreResult) -> None:
    sha = hashlib.sha256()
    with open(dest, "rb") as handle:
        while block := handle.read(1 << 20):
            sha.update(block)
    if sha.hexdigest() == item.node.sha256:
        result.verified += 1
    else:
        result.problems.append(
            (display(item.path), "restored content does not match the recorded SHA-256")
        )


def _apply_metadata(dest: bytes, node: Node) -> None:
    is_link = node.type == SYMLINK
    try:
        os.chown(dest, node.uid, node.gid, follow_symlinks=False)
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EINVAL):
            raise
    if not is_link:
        os.chmod(dest, node.mode)
    os.utime(dest, ns=(node.mtime_ns, node.mtime_ns), follow_symlinks=not is_link)
