"""Writing the files' contents: every pack that holds needed chunks is fetched once, as byte
ranges covering only the needed blobs (nearby blobs merged into one request), by a pool of
threads; every chunk is authenticated by GCM and its id recomputed, then written at its offsets
with pwrite. A chunk of zeros is not written into a file this restore created (files are created
at full size, so sparse files come back sparse). With resume, what a killed restore left is
checked chunk by chunk and kept where it has the snapshot's bytes.

Packs are fetched in the order of the first file that needs them, so files given in priority
order (newest study first) complete roughly in that order while the threads keep every pack
fetch parallel: a 2 GB volume spread over a hundred packs is fetched four packs at a time, not
one chunk at a time.
"""

from __future__ import annotations

import os
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from vault.errors import IntegrityError, VaultError
from vault.format import crypto, layout
from vault.format.index import Location
from vault.format.pack import BlobType, open_blob
from vault.format.paths import display
from vault.format.tree import Node
from vault.jobs.restore.entries import Entry
from vault.jobs.restore.target import FileId, Target, UnsafeTarget, set_metadata
from vault.progress import Progress
from vault.repo.repository import Repository

MERGE_GAP = 1 << 20  # fetch across gaps up to 1 MiB rather than issue another request
# One request reads at most this much of a pack (one blob larger than it is read whole). Each
# fetch thread holds its range while it opens the blobs in it, so the range sets a restore's
# memory. On S3, where a request costs a round trip, whole 16 MiB packs made a 3 GB restore
# peak at 188 MiB and 8 MiB ranges at 146 MiB, about 5 % slower over loopback; 4 MiB cost
# 10-15 %. A local (or mounted) repository pays nothing per request: there 4 MiB ranges run
# in the same time as 8 (medians of four 3 GB restores, 10.6 s and 10.5 s) and peak at
# 103 MiB instead of 130, which is the key derivation's own peak (docs/benchmarks.md).
MAX_RANGE = 8 << 20
MAX_RANGE_LOCAL = 4 << 20
FETCH_THREADS = 4


@dataclass
class Fetched:
    """What writing one set of files did."""

    file_ids: dict[int, FileId] = field(default_factory=dict)  # by file number
    problems: list[tuple[str, str]] = field(default_factory=list)
    failed: set[int] = field(default_factory=set)  # files (by number) with a problem
    # Files whose owner, mode and times were set as their last chunk was written.
    metadata_set: set[int] = field(default_factory=set)
    bytes_downloaded: int = 0
    requests: int = 0
    # With resume: bytes found already written correctly, and files that were complete.
    bytes_kept: int = 0
    files_kept: int = 0


class _Outputs:
    """The files being restored, created by the first chunk written to each (in the fetch
    threads: creating thousands of files one by one before fetching took a third of a restore)
    and kept open until their last chunk is written. With `nodes`, a file whose last chunk is
    written gets its owner, mode and times there, on the descriptor still open, instead of
    being reopened for them afterwards (three system calls a file fewer; no change in restore
    time was measured, docs/benchmarks.md)."""

    MAX_OPEN = 512

    def __init__(
        self,
        target: Target,
        rels: list[bytes],
        sizes: list[int],
        overwrite: bool,
        nodes: list[Node] | None,
    ):
        self.target, self.rels, self.sizes, self.overwrite = target, rels, sizes, overwrite
        self.nodes = nodes
        # Not as root, a file whose recorded mode does not let its owner read and write it
        # gets its metadata in the pass afterwards: a restore killed in between must be able
        # to open it again when resumed.
        self.as_root = os.geteuid() == 0
        self.metadata_set: set[int] = set()
        self.incomplete: set[int] = set()  # a chunk was missing before anything was fetched
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

    def write(self, number: int, data: bytes | bytearray, offset: int) -> None:
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

    def _write(self, number: int, data: bytes | bytearray, offset: int) -> None:
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
            complete = self.remaining[number] == 0
            if complete:
                self._set_metadata(number, fd)
            if complete or len(self.fds) > self.MAX_OPEN:
                with self._table:
                    del self.fds[number]
                os.close(fd)

    def _set_metadata(self, number: int, fd: int) -> None:
        """The file's owner, mode and times, now that its last chunk is written; a failure
        leaves it to the pass afterwards, which reports it as before."""
        if self.nodes is None or number in self.incomplete:
            return
        node = self.nodes[number]
        if not self.as_root and node.mode & 0o600 != 0o600:
            return
        try:
            set_metadata(fd, node)
        except OSError:
            return
        self.metadata_set.add(number)

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


def write_contents(
    repo: Repository,
    target: Target,
    files: list[Entry],
    progress: Progress,
    *,
    overwrite: bool,
    resume: bool,
    on_kept: Callable[[int], None] | None = None,
    metadata: bool = False,
) -> Fetched:
    """Write every file's content, in about the order given; every file exists at its size
    afterwards (one whose chunks failed is reported in `problems`). With `metadata`, a file
    whose chunks were all written gets its owner, mode and times too (`metadata_set`)."""
    result = Fetched()
    # pack id -> blob id -> [(file index, offset in file)]
    plan: dict[str, dict[bytes, list[tuple[int, int]]]] = defaultdict(lambda: defaultdict(list))
    first_needed: dict[str, int] = {}  # pack id -> the first file (in the given order) it serves
    locations: dict[bytes, Location] = {}
    outputs = _Outputs(
        target,
        [f.rel for f in files],
        [f.node.size for f in files],
        overwrite,
        [f.node for f in files] if metadata else None,
    )
    for number, item in enumerate(files):
        present = _Present.open(repo, target, item) if resume else None
        offset = 0
        for chunk_hex in item.node.chunks:
            blob_id = bytes.fromhex(chunk_hex)
            location = locations.get(blob_id) or repo.index.lookup(blob_id)
            if location is None or location.entry.type != BlobType.DATA:
                result.problems.append(
                    (display(item.path), f"chunk {chunk_hex[:16]} is not in the index")
                )
                result.failed.add(number)
                break
            locations[blob_id] = location
            length = location.entry.raw_length
            if present is not None and present.holds(offset, length, blob_id):
                result.bytes_kept += length
                (on_kept or progress.advance)(length)
            else:
                plan[location.pack.id][blob_id].append((number, offset))
                first_needed.setdefault(location.pack.id, number)
            offset += length
        if present is not None:
            present.close()
            outputs.file_ids[number] = present.file_id
            outputs.in_place.add(number)
            if present.complete:
                result.files_kept += 1
    outputs.incomplete = set(result.failed)
    for wanted in plan.values():
        for places in wanted.values():
            for number, _ in places:
                outputs.expect(number)
    counted = threading.Lock()
    max_range = MAX_RANGE_LOCAL if repo.storage.local_root() is not None else MAX_RANGE

    def fetch_range(job: tuple[str, list[Location]]) -> list[tuple[int, str]]:
        pack_id, run = job
        wanted = plan[pack_id]
        start = run[0].entry.offset
        end = run[-1].entry.offset + run[-1].entry.length
        name = layout.pack(pack_id)
        try:
            data = repo.storage.get(name, offset=start, length=end - start)
            with counted:  # fetch threads share the result's counters
                result.requests += 1
                result.bytes_downloaded += len(data)
            key = repo.pack_key(pack_id, run[0].pack.epoch, run[0].pack.salt)
        except VaultError as exc:
            return [(n, str(exc)) for loc in run for n, _ in wanted[loc.entry.id]]
        failures: list[tuple[int, str]] = []
        view = memoryview(data)  # blobs are opened in place, not sliced out (a copy each)
        for loc in run:
            e = loc.entry
            try:
                plain = open_blob(
                    key, e, view[e.offset - start : e.offset - start + e.length], pack_name=name
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

    # The ranges of one pack are fetched in parallel too, not one after another: a study in
    # one or two packs is two to four ranges, and over a wide-area link each is a round trip
    # plus its transfer.
    jobs = [
        (pack_id, run)
        for pack_id in sorted(plan, key=lambda pack_id: (first_needed[pack_id], pack_id))
        for run in _ranges(
            sorted((locations[b] for b in plan[pack_id]), key=lambda loc: loc.entry.offset),
            max_range,
        )
    ]
    try:
        with ThreadPoolExecutor(max_workers=FETCH_THREADS, thread_name_prefix="fetch") as pool:
            for failures in pool.map(fetch_range, jobs):
                for number, message in failures:
                    result.problems.append((display(files[number].path), message))
                    result.failed.add(number)
    except BaseException:
        outputs.close()  # stop here: no more files made in a target that proved unsafe
        raise
    result.file_ids = outputs.finish()
    result.metadata_set = outputs.metadata_set
    return result


class _Present:
    """A file a killed restore left in the target, checked chunk by chunk: a chunk counts as
    written when the bytes at its place have its keyed id (so a hole, a torn write or foreign
    bytes are fetched again, and nothing is trusted by name)."""

    def __init__(self, repo: Repository, fd: int, file_id: FileId) -> None:
        self.repo, self.fd, self.file_id = repo, fd, file_id
        self.complete = True

    @classmethod
    def open(cls, repo: Repository, target: Target, item: Entry) -> _Present | None:
        file_id = target.resumable_file(item.rel, item.node.size)
        if file_id is None:
            return None
        return cls(repo, target.reopen_file(item.rel, file_id, os.O_RDONLY), file_id)

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


def _ranges(entries: list[Location], max_range: int) -> Iterator[list[Location]]:
    run: list[Location] = []
    for loc in entries:
        if run:
            last = run[-1].entry
            gap = loc.entry.offset - (last.offset + last.length)
            span = loc.entry.offset + loc.entry.length - run[0].entry.offset
            if gap > MERGE_GAP or span > max_range:
                yield run
                run = []
        run.append(loc)
    if run:
        yield run


def _all_zero(data: bytes | bytearray) -> bool:
    # A comparison with zeros (memcmp) stops at the first byte that differs. Counting zeros
    # read every byte under the GIL, and image chunks often start and end in black
    # background: it was 40 % of the GIL-holding time of a whole restore.
    return data[:1] == b"\0" and data[-1:] == b"\0" and data == bytes(len(data))


def _pwrite(fd: int, data: bytes | bytearray, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written
