"""The blob index: blob id -> (pack, offset, length, raw length, type), compact in memory.

Index objects are sealed; their payload (docs/format.md, "Index"):

    u32 pack count   | per pack : id (32) | epoch (u32) | salt (16)
    u32 entry count  | per entry: type (1) | blob id (32) | pack number (u32) | offset (u32)
                                | length (u32) | raw length (u32)

In memory, blob ids live in one sorted bytes buffer (32 bytes each) searched by bisection, and
their locations in a parallel array of five 32-bit ints: 52 bytes per blob instead of the ~250 a
dict of tuples costs. Blobs added during a run sit in a small dict until `freeze`.
"""

from __future__ import annotations

import bisect
import struct
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from vault.errors import IntegrityError
from vault.pack import BlobType, PackEntry

_U32 = struct.Struct(">I")
_PACK = struct.Struct(">32sI16s")
_ENTRY = struct.Struct(">B32sIIII")
ID_LEN = 32


@dataclass(frozen=True)
class PackInfo:
    id: str
    epoch: int
    salt: bytes


@dataclass(frozen=True)
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


class _SortedIds:
    """A read-only sequence view of the sorted id buffer, for bisect."""

    def __init__(self, buffer: bytes) -> None:
        self._buffer = buffer

    def __len__(self) -> int:
        return len(self._buffer) // ID_LEN

    def __getitem__(self, i: int) -> bytes:
        return self._buffer[i * ID_LEN : (i + 1) * ID_LEN]


class Index:
    def __init__(self) -> None:
        self._packs: list[PackInfo] = []
        self._pack_numbers: dict[str, int] = {}
        self._ids = b""
        self._meta = array("I")  # per blob: pack number, offset, length, raw length, type
        self._pending: dict[bytes, tuple[int, int, int, int, int]] = {}

    def _pack_number(self, pack: PackInfo) -> int:
        number = self._pack_numbers.get(pack.id)
        if number is None:
            number = self._pack_numbers[pack.id] = len(self._packs)
            self._packs.append(pack)
        return number

    def add_pack(self, pack: PackInfo, entries: Iterable[PackEntry]) -> None:
        number = self._pack_number(pack)
        for e in entries:
            if e.id not in self._pending and self._find(e.id) < 0:
                self._pending[e.id] = (number, e.offset, e.length, e.raw_length, int(e.type))

    def freeze(self) -> None:
        """Merge pending entries into the sorted arrays (call after bulk loading)."""
        if not self._pending:
            return
        merged: list[tuple[bytes, tuple[int, ...]]] = [
            (self._ids[i * ID_LEN : (i + 1) * ID_LEN], tuple(self._meta[i * 5 : i * 5 + 5]))
            for i in range(len(self._ids) // ID_LEN)
        ]
        merged.extend(self._pending.items())
        merged.sort(key=lambda item: item[0])
        self._ids = b"".join(item[0] for item in merged)
        self._meta = array("I")
        for _, meta in merged:
            self._meta.extend(meta)
        self._pending = {}

    def _find(self, blob_id: bytes) -> int:
        view = _SortedIds(self._ids)
        i = bisect.bisect_left(view, blob_id)
        if i < len(view) and view[i] == blob_id:
            return i
        return -1

    def _meta_of(self, blob_id: bytes) -> tuple[int, ...] | None:
        pending = self._pending.get(blob_id)
        if pending is not None:
            return pending
        i = self._find(blob_id)
        return None if i < 0 else tuple(self._meta[i * 5 : i * 5 + 5])

    def __contains__(self, blob_id: object) -> bool:
        return isinstance(blob_id, bytes) and self._meta_of(blob_id) is not None

    def lookup(self, blob_id: bytes) -> Location | None:
        meta = self._meta_of(blob_id)
        if meta is None:
            return None
        number, offset, length, raw, t = meta
        return Location(self._packs[number], PackEntry(BlobType(t), blob_id, offset, length, raw))

    def __getitem__(self, blob_id: bytes) -> Location:
        location = self.lookup(blob_id)
        if location is None:
            raise KeyError(blob_id.hex())
        return location

    def __len__(self) -> int:
        return len(self._ids) // ID_LEN + len(self._pending)

    def packs(self) -> list[PackInfo]:
        return list(self._packs)

    def pack(self, pack_id: str) -> PackInfo | None:
        number = self._pack_numbers.get(pack_id)
        return None if number is None else self._packs[number]

    def __iter__(self) -> Iterator[Location]:
        for i in range(len(self._ids) // ID_LEN):
            blob_id = self._ids[i * ID_LEN : (i + 1) * ID_LEN]
            number, offset, length, raw, t = self._meta[i * 5 : i * 5 + 5]
            yield Location(
                self._packs[number], PackEntry(BlobType(t), blob_id, offset, length, raw)
            )
        for blob_id, (number, offset, length, raw, t) in list(self._pending.items()):
            yield Location(
                self._packs[number], PackEntry(BlobType(t), blob_id, offset, length, raw)
            )
