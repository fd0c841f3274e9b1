"""The blob index: blob id -> (pack, offset, length, raw length, type), compact in memory.

Index objects are sealed; their payload (docs/format.md, "Index"):

    u32 pack count   | per pack : id (32) | epoch (u32) | salt (16)
    u32 entry count  | per entry: type (1) | blob id (32) | pack number (u32) | offset (u32)
                                | length (u32) | raw length (u32)

In memory: 49 bytes per blob in one sorted buffer (below) instead of the ~250 a dict of tuples
costs. Blobs added during a run sit in a small dict until `freeze`.
"""

from __future__ import annotations

import struct
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from vault.errors import IntegrityError
from vault.format.pack import BlobType, PackEntry

_U32 = struct.Struct(">I")
_PACK = struct.Struct(">32sI16s")
_ENTRY = struct.Struct(">B32sIIII")
ID_LEN = 32


@dataclass(frozen=True, slots=True)
class PackInfo:
    id: str
    epoch: int
    salt: bytes


@dataclass(frozen=True, slots=True)
class Location:
    pack: PackInfo
    entry: PackEntry


def encode(packs: Iterable[tuple[PackInfo, list[PackEntry]]]) -> bytes:
    pack_list = list(packs)
    out = [_U32.pack(len(pack_list))]
    out.extend(_PACK.pack(bytes.fromhex(p.id), p.epoch, p.salt) for p, _ in pack_list)
    count = sum(len(entries) for _, entries in pack_list)
    out.append(_U32.pack(count))
    for number, (_, entries) in enumerate(pack_list):
        out.extend(
            _ENTRY.pack(e.type, e.id, number, e.offset, e.length, e.raw_length) for e in entries
        )
    return b"".join(out)


def decode(payload: bytes, *, name: str) -> list[tuple[PackInfo, list[PackEntry]]]:
    try:
        (npacks,) = _U32.unpack_from(payload, 0)
        pos = _U32.size
        packs: list[tuple[PackInfo, list[PackEntry]]] = []
        for _ in range(npacks):
            raw_id, epoch, salt = _PACK.unpack_from(payload, pos)
            packs.append((PackInfo(raw_id.hex(), epoch, bytes(salt)), []))
            pos += _PACK.size
        (nentries,) = _U32.unpack_from(payload, pos)
        pos += _U32.size
        for _ in range(nentries):
            t, blob_id, number, offset, length, raw = _ENTRY.unpack_from(payload, pos)
            pos += _ENTRY.size
            packs[number][1].append(PackEntry(BlobType(t), bytes(blob_id), offset, length, raw))
    except (struct.error, IndexError, ValueError):
        raise IntegrityError(f"{name} is malformed", key=name) from None
    if pos != len(payload):
        raise IntegrityError(f"{name} has trailing bytes", key=name)
    return packs


# In memory: 256 bytes buffers (one per first byte of the blob id) of fixed 49-byte records
# sorted by id, and a table of where each second byte starts inside its buffer (ids are keyed
# MACs: uniform), so a lookup bisects ~N/65536 records. Loading appends records to 256
# byte-arrays and `freeze` sorts one of them at a time: even 10 million blobs never exist as
# Python objects at once, and no second copy of the whole index is ever made.
_RECORD = struct.Struct(">32sIIIIB")  # id | pack number | offset | length | raw length | type
_META = struct.Struct(">IIIIB")
REC = _RECORD.size
_ROW = 257  # start offsets per first byte: 256 second bytes and the end
PENDING_LIMIT = 100_000  # blobs added one by one before they are compacted


def _blob_id(record: bytes) -> bytes:
    return record[:ID_LEN]


class Index:
    def __init__(self) -> None:
        # Packs, compactly too (a 10 TB repository has ~600,000): id, epoch and salt in flat
        # buffers; PackInfo objects are made when asked for.
        self._pack_ids = bytearray()
        self._pack_salts = bytearray()
        self._pack_epochs = array("I")
        self._pack_numbers: dict[bytes, int] = {}
        self._buckets: list[bytes] = [b""] * 256
        self._starts = array("I", bytes(4 * 256 * _ROW))
        self._frozen = 0
        self._pending: dict[bytes, tuple[int, int, int, int, int]] = {}
        self._loading: list[bytearray] | None = None
        self._loaded = 0

    def _pack_number(self, pack: PackInfo) -> int:
        raw = bytes.fromhex(pack.id)
        number = self._pack_numbers.get(raw)
        if number is None:
            number = self._pack_numbers[raw] = len(self._pack_epochs)
            self._pack_ids += raw
            self._pack_salts += pack.salt
            self._pack_epochs.append(pack.epoch)
        return number

    def _pack_info(self, number: int) -> PackInfo:
        return PackInfo(
            self._pack_ids[number * 32 : number * 32 + 32].hex(),
            self._pack_epochs[number],
            bytes(self._pack_salts[number * 16 : number * 16 + 16]),
        )

    def add_pack(self, pack: PackInfo, entries: Iterable[PackEntry]) -> None:
        """Add a pack written now: its blobs can be looked up at once (a blob already present
        keeps its first location)."""
        number = self._pack_number(pack)
        for e in entries:
            if e.id not in self._pending and self._find(e.id) < 0:
                self._pending[e.id] = (number, e.offset, e.length, e.raw_length, int(e.type))
        if len(self._pending) >= max(PENDING_LIMIT, self._frozen // 4):
            # A backup of a million small files adds a million blobs: as a dict they would
            # cost ~250 bytes each, compacted 49. Merging only when the new ones reach a
            # quarter of the old keeps the total merge work linear in the index size.
            self._merge(loading=False)

    def load_pack(self, pack: PackInfo, entries: Iterable[PackEntry]) -> None:
        """Bulk loading (index objects): compact at once, visible after `freeze`. Where a blob
        is also present otherwise, the location already present wins, then the first loaded."""
        number = self._pack_number(pack)
        if self._loading is None:
            self._loading = [bytearray() for _ in range(256)]
        buckets, record = self._loading, _RECORD.pack
        for e in entries:
            buckets[e.id[0]] += record(e.id, number, e.offset, e.length, e.raw_length, int(e.type))

    def freeze(self) -> None:
        """Merge added and loaded blobs into the sorted records."""
        self._merge(loading=True)

    def _merge(self, *, loading: bool) -> None:
        if not self._pending and (self._loading is None or not loading):
            return
        pending: list[list[bytes]] = [[] for _ in range(256)]
        for blob_id, meta in self._pending.items():
            pending[blob_id[0]].append(_RECORD.pack(blob_id, *meta))
        buckets = (self._loading or []) if loading else []
        for first in range(256):
            old = self._buckets[first]
            # In precedence order; the sort is stable, so the first of equal ids is kept.
            items = [old[i : i + REC] for i in range(0, len(old), REC)] + pending[first]
            if buckets:
                new = buckets[first]
                items += [bytes(new[i : i + REC]) for i in range(0, len(new), REC)]
                buckets[first] = bytearray()  # free as we go
            items.sort(key=_blob_id)
            kept, previous = [], b""
            for item in items:
                if item[:ID_LEN] != previous:
                    kept.append(item)
                    previous = item[:ID_LEN]
            self._frozen += len(kept) - len(old) // REC
            self._buckets[first] = b"".join(kept)
            self._index_row(first)
        self._pending = {}
        if loading:
            self._loading = None

    def _index_row(self, first: int) -> None:
        """Where each second id byte starts in bucket `first`."""
        records, row = self._buckets[first], first * _ROW
        counts = [0] * _ROW
        for i in range(1, len(records), REC):
            counts[records[i] + 1] += 1
        for c in range(256):
            counts[c + 1] += counts[c]
        self._starts[row : row + _ROW] = array("I", counts)

    def _find(self, blob_id: bytes) -> int:
        """Record number of blob_id inside its bucket, or -1."""
        if len(blob_id) != ID_LEN:
            return -1
        row = blob_id[0] * _ROW + blob_id[1]
        lo, hi = self._starts[row], self._starts[row + 1]
        records = self._buckets[blob_id[0]]
        while lo < hi:
            mid = (lo + hi) // 2
            key = records[mid * REC : mid * REC + ID_LEN]
            if key < blob_id:
                lo = mid + 1
            elif key > blob_id:
                hi = mid
            else:
                return mid
        return -1

    def _meta_of(self, blob_id: bytes) -> tuple[int, ...] | None:
        pending = self._pending.get(blob_id)
        if pending is not None:
            return pending
        i = self._find(blob_id)
        return None if i < 0 else _META.unpack_from(self._buckets[blob_id[0]], i * REC + ID_LEN)

    def __contains__(self, blob_id: object) -> bool:
        return isinstance(blob_id, bytes) and self._meta_of(blob_id) is not None

    def lookup(self, blob_id: bytes) -> Location | None:
        meta = self._meta_of(blob_id)
        if meta is None:
            return None
        number, offset, length, raw, t = meta
        return Location(
            self._pack_info(number), PackEntry(BlobType(t), blob_id, offset, length, raw)
        )

    def __getitem__(self, blob_id: bytes) -> Location:
        location = self.lookup(blob_id)
        if location is None:
            raise KeyError(blob_id.hex())
        return location

    def __len__(self) -> int:
        return self._frozen + len(self._pending)

    def memory_bytes(self) -> int:
        """What the frozen index holds (records and prefix table), for benchmarks."""
        packs = len(self._pack_ids) + len(self._pack_salts) + 4 * len(self._pack_epochs)
        return sum(len(b) for b in self._buckets) + 4 * len(self._starts) + packs

    def packs(self) -> list[PackInfo]:
        return [self._pack_info(n) for n in range(len(self._pack_epochs))]

    def pack(self, pack_id: str) -> PackInfo | None:
        try:
            number = self._pack_numbers.get(bytes.fromhex(pack_id))
        except ValueError:
            return None
        return None if number is None else self._pack_info(number)

    def blob_counts(self) -> dict[str, int]:
        """How many blobs the index places in each pack, by pack id, without making a
        Location for every blob."""
        counts = array("I", bytes(4 * len(self._pack_epochs)))
        for records in self._buckets:
            for record in _RECORD.iter_unpack(records):
                counts[record[1]] += 1
        for pending in self._pending.values():
            counts[pending[0]] += 1
        return {self._pack_ids[n * 32 : n * 32 + 32].hex(): c for n, c in enumerate(counts) if c}

    def __iter__(self) -> Iterator[Location]:
        infos = self.packs()
        for records in list(self._buckets):
            for i in range(0, len(records), REC):
                blob_id, number, offset, length, raw, t = _RECORD.unpack_from(records, i)
                yield Location(infos[number], PackEntry(BlobType(t), blob_id, offset, length, raw))
        for blob_id, (number, offset, length, raw, t) in list(self._pending.items()):
            pack = self._pack_info(number)
            yield Location(pack, PackEntry(BlobType(t), blob_id, offset, length, raw))
