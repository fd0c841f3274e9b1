"""BlobWriter: deduplicates, compresses, seals and packs blobs, uploads packs, writes indexes.

Thread-safe: backup workers call `add` concurrently. Write order (docs/format.md, "Write
order"): a pack is durable before any index names it; an index is durable before any snapshot
refers to its blobs. Indexes are checkpointed at least every CHECKPOINT_BYTES of packed data or
CHECKPOINT_SECONDS, so an interrupted run loses at most that much upload work.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from vault import ids
from vault.errors import IntegrityError
from vault.format import compression, crypto, index, layout, sealing
from vault.format.index import Index, PackInfo
from vault.format.pack import BlobType, PackBuilder, PackEntry, open_blob, read_trailer
from vault.repo.repository import Repository
from vault.units import whole_number

CHECKPOINT_BYTES = 1 << 30
CHECKPOINT_SECONDS = 300.0
# Operators on slow links may want more frequent checkpoints; crash tests want tiny ones.
CHECKPOINT_ENV = "VAULT_INDEX_CHECKPOINT_BYTES"
UPLOADS_IN_FLIGHT = 2


@dataclass
class WriteStats:
    blobs_added: int = 0
    bytes_added: int = 0  # plaintext bytes of new file-content chunks
    tree_bytes_added: int = 0  # plaintext bytes of new directory trees
    bytes_stored: int = 0  # sealed bytes of all new blobs (what the repository grew by)
    packs_written: int = 0
    indexes_written: int = 0


class BlobWriter:
    def __init__(
        self,
        repo: Repository,
        *,
        clock: Callable[[], float] = time.monotonic,
        checkpoint_bytes: int | None = None,
        index: Index | None = None,
    ) -> None:
        self.repo = repo
        # Deduplicate against this index (re-encryption passes one without retired packs).
        self.index = index if index is not None else repo.load_index()
        self.stats = WriteStats()
        self._lock = threading.Lock()
        self._reserved: set[bytes] = set()
        self._builders: dict[BlobType, PackBuilder] = {}
        self._uploads = ThreadPoolExecutor(
            max_workers=UPLOADS_IN_FLIGHT, thread_name_prefix="upload"
        )
        self._slots = threading.Semaphore(UPLOADS_IN_FLIGHT)
        self._pending_uploads: list[Future[None]] = []
        self._unindexed: list[tuple[PackInfo, list[PackEntry]]] = []
        self._unindexed_bytes = 0
        self._clock = clock
        self._last_checkpoint = clock()
        self._checkpoint_bytes = checkpoint_bytes or _checkpoint_bytes_from_env()
        self._level = repo.config.zstd_level
        self._failure: BaseException | None = None

    def has(self, blob_id: bytes) -> bool:
        with self._lock:
            return blob_id in self._reserved or blob_id in self.index

    def add(
        self,
        blob_type: BlobType,
        data: bytes | bytearray | memoryview,
        blob_id: bytes | None = None,
    ) -> bytes:
        """Store `data` unless a blob with its id exists; returns the id. Thread-safe."""
        if blob_id is None:
            blob_id = self.repo.blob_id(data, blob_type)
        with self._lock:
            self._raise_failure()
            if blob_id in self._reserved or blob_id in self.index:
                return blob_id
            self._reserved.add(blob_id)
        encoding, body = compression.compress(data, self._level)
        full: PackBuilder | None = None
        with self._lock:
            builder = self._builders.get(blob_type)
            if builder is None:
                builder = self._builders[blob_type] = self._new_builder()
            before = builder.size
            builder.add_compressed(blob_type, blob_id, len(data), encoding, body)
            if blob_type == BlobType.DATA:
                self.stats.blobs_added += 1
                self.stats.bytes_added += len(data)
            else:
                self.stats.tree_bytes_added += len(data)
            self.stats.bytes_stored += builder.size - before
            if builder.size >= self.repo.config.pack_size:
                full = self._builders.pop(blob_type)
        if full is not None:
            self._upload(full)
        return blob_id

    def copy_pack(self, pack: PackInfo, wanted: Callable[[PackEntry], bool]) -> tuple[int, int]:
        """Copy the blobs of an existing pack that `wanted` accepts (and this writer's index
        does not already hold) into new packs — each authenticated and its id recomputed on the
        way. For re-encryption and prune. Returns (bytes read, blobs copied)."""
        name = layout.pack(pack.id)
        data = self.repo.storage.get(name)
        key = self.repo.pack_key(pack.id, pack.epoch, pack.salt)
        copied = 0
        for entry in read_trailer(data, None, pack_id=pack.id, pack_name=name, key=key):
            if not wanted(entry) or self.has(entry.id):
                continue
            sealed = data[entry.offset : entry.offset + entry.length]
            plain = open_blob(key, entry, sealed, pack_name=name)
            if not crypto.constant_time_equal(self.repo.blob_id(plain, entry.type), entry.id):
                raise IntegrityError(f"{name}: blob at offset {entry.offset} does not match its id")
            self.add(entry.type, plain, entry.id)
            copied += 1
        return len(data), copied

    def adopt(self, packs: list[tuple[PackInfo, list[PackEntry]]]) -> None:
        """Take packs already in storage but named by no index (left by a killed run) into
        this writer's index; the next checkpoint makes that durable."""
        with self._lock:
            for info, entries in packs:
                self.index.add_pack(info, entries)
                self._unindexed.append((info, entries))

    def _new_builder(self) -> PackBuilder:
        epoch = self.repo.keyring.current_epoch
        return PackBuilder(ids.new_id(), epoch, self.repo.keyring.epoch_key(epoch))

    def _upload(self, builder: PackBuilder) -> None:
        self._slots.acquire()  # bounds memory: at most UPLOADS_IN_FLIGHT finished packs wait
        try:
            future = self._uploads.submit(self._write_pack, builder)
        except BaseException:
            self._slots.release()
            raise
        with self._lock:
            self._pending_uploads.append(future)

    def _write_pack(self, builder: PackBuilder) -> None:
        try:
            data = builder.finish()
            self.repo.put(layout.pack(builder.pack_id), data)
            info = PackInfo(builder.pack_id, builder.epoch, builder.salt)
            with self._lock:
                self.index.add_pack(info, builder.entries)
                for entry in builder.entries:
                    self._reserved.discard(entry.id)
                self._unindexed.append((info, builder.entries))
                self._unindexed_bytes += len(data)
                self.stats.packs_written += 1
        except BaseException as exc:
            with self._lock:
                self._failure = self._failure or exc
            raise
        finally:
            self._slots.release()
        self.maybe_checkpoint()

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure

    def maybe_checkpoint(self) -> None:
        with self._lock:
            due = self._unindexed and (
                self._unindexed_bytes >= self._checkpoint_bytes
                or self._clock() - self._last_checkpoint >= CHECKPOINT_SECONDS
            )
        if due:
            self._write_index()

    def _write_index(self) -> None:
        with self._lock:
            batch, self._unindexed = self._unindexed, []
            self._unindexed_bytes = 0
            self._last_checkpoint = self._clock()
        if not batch:
            return
        index_id = ids.new_id()
        blob = self.repo.seal(sealing.Kind.INDEX, index_id, index.encode(batch))
        try:
            self.repo.put(layout.index(index_id), blob, if_absent=True)
        except BaseException:
            with self._lock:
                self._unindexed = batch + self._unindexed
            raise
        with self._lock:
            self.stats.indexes_written += 1

    def flush(self) -> None:
        """Upload every partial pack and write the index for everything written: after this,
        all blobs added so far are durable and findable."""
        with self._lock:
            builders = list(self._builders.values())
            self._builders = {}
        for builder in builders:
            self._upload(builder)
        with self._lock:
            pending, self._pending_uploads = self._pending_uploads, []
        for future in pending:
            future.result()
        self._raise_failure()
        self._write_index()

    def close(self) -> None:
        self._uploads.shutdown(wait=True)


def _checkpoint_bytes_from_env() -> int:
    value = whole_number(os.environ.get(CHECKPOINT_ENV, ""))
    return value if value else CHECKPOINT_BYTES
