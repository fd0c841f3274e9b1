"""Chunk compression with zstd, the only home of the `zstandard` library.

Compressors are not thread-safe, so each thread keeps its own. A chunk that does not shrink is
stored raw (images already compressed, like JPEG photos, cost no CPU on restore).

Uncompressed DICOM pixel data is mostly 16-bit little-endian samples of which 12 bits are used:
every second byte is a nearly constant high byte, every other a noisy low byte. zstd does far
better on the two byte planes apart (the HDF5/Blosc "shuffle" filter): on the benchmark's CBCT
ratio 2.62 instead of 2.21 at level 3, and faster, because the planes need no match search —
level 2 on the planes equals level 3 (docs/benchmarks.md). A cheap look at a sample decides
per chunk; text, JPEG and 8-bit data are compressed as they are.
"""

from __future__ import annotations

import threading

import zstandard

RAW = 0
ZSTD = 1
ZSTD_PLANES = 2  # zstd of the even bytes followed by the odd bytes

_SAMPLE = 4096
_FEW_HIGH_BYTES = 32  # distinct values in a plane of 12-bit samples: at most 16

_local = threading.local()


def _compressor(level: int) -> zstandard.ZstdCompressor:
    cache: dict[int, zstandard.ZstdCompressor] | None = getattr(_local, "compressors", None)
    if cache is None:
        cache = _local.compressors = {}
    if level not in cache:
        cache[level] = zstandard.ZstdCompressor(level=level)
    return cache[level]


def _decompressor() -> zstandard.ZstdDecompressor:
    d: zstandard.ZstdDecompressor | None = getattr(_local, "decompressor", None)
    if d is None:
        d = _local.decompressor = zstandard.ZstdDecompressor()
    return d


def looks_like_16bit_samples(data: bytes) -> bool:
    """One byte plane of a sample from the middle has few values, the other many."""
    middle = max(0, len(data) // 2 - _SAMPLE // 2) & ~1
    sample = data[middle : middle + _SAMPLE]
    even, odd = len(set(sample[0::2])), len(set(sample[1::2]))
    return min(even, odd) <= _FEW_HIGH_BYTES and max(even, odd) >= 4 * min(even, odd)


def compress(
    data: bytes | bytearray | memoryview, level: int, *, planes: bool = True
) -> tuple[int, bytes]:
    """(encoding, payload): zstd (of the byte planes, when `planes` and the data looks like
    16-bit samples) when it saves at least 1/64 of the size, else the raw bytes."""
    if level > 0 and len(data) >= 64:
        raw = bytes(data)
        if planes and len(raw) >= 2 * _SAMPLE and looks_like_16bit_samples(raw):
            # Levels above 2 find nothing more in byte planes; asked-for higher levels stand.
            plane_level = min(level, 2) if level <= 3 else level
            split = raw[0::2] + raw[1::2]
            encoding, packed = ZSTD_PLANES, _compressor(plane_level).compress(split)
        else:
            encoding, packed = ZSTD, _compressor(level).compress(raw)
        if len(packed) < len(raw) - len(raw) // 64:
            return encoding, packed
        return RAW, raw
    return RAW, bytes(data)


def decompress(encoding: int, payload: bytes | memoryview, raw_length: int) -> bytes | bytearray:
    """The raw bytes. Byte planes come back as the bytearray they were interleaved into: a
    restore writes and hashes them as they are, and a copy to bytes cost a tenth of its time
    on image data."""
    if encoding == RAW:
        return bytes(payload) if isinstance(payload, memoryview) else payload
    if encoding == ZSTD_PLANES:
        planes = memoryview(_zstd(payload, raw_length))
        if len(planes) != raw_length:
            raise ValueError("byte planes do not match the raw length")
        out = bytearray(raw_length)
        half = (raw_length + 1) // 2
        # Views, not slices: a slice of bytes is a copy, and these are megabytes each.
        out[0::2] = planes[:half]
        out[1::2] = planes[half:]
        return out
    if encoding == ZSTD:
        return _zstd(payload, raw_length)
    raise ValueError(f"unknown encoding {encoding}")


def _zstd(payload: bytes | memoryview, raw_length: int) -> bytes:
    try:
        out: bytes = _decompressor().decompress(payload, max_output_size=raw_length)
    except zstandard.ZstdError as exc:
        raise ValueError(f"zstd: {exc}") from None
    return out
