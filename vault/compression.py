"""Chunk compression with zstd, the only home of the `zstandard` library.

Compressors are not thread-safe, so each thread keeps its own. A chunk that does not shrink is
stored raw (images already compressed, like JPEG photos, cost no CPU on restore).
"""

from __future__ import annotations

import threading

import zstandard

RAW = 0
ZSTD = 1

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


def compress(data: bytes | memoryview, level: int) -> tuple[int, bytes]:
    """(encoding, payload): zstd when it saves at least 1/64 of the size, else the raw bytes."""
    if level > 0 and len(data) >= 64:
        packed = _compressor(level).compress(data)
        if len(packed) < len(data) - len(data) // 64:
            return ZSTD, packed
    return RAW, bytes(data)


def decompress(encoding: int, payload: bytes, raw_length: int) -> bytes:
    if encoding == RAW:
        return payload
    if encoding == ZSTD:
        try:
            out: bytes = _decompressor().decompress(payload, max_output_size=raw_length)
        except zstandard.ZstdError as exc:
            raise ValueError(f"zstd: {exc}") from None
        return out
    raise ValueError(f"unknown encoding {encoding}")
