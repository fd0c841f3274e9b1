"""Shared Hypothesis strategies for the unit and property tests."""

from __future__ import annotations

import random

from hypothesis import strategies as st

from vault.format.chunker import ChunkerParams
from vault.format.index import PackInfo
from vault.format.pack import BlobType, PackEntry

# pyfastcdc accepts min_size >= 64, avg_size >= 256 and max_size >= 1024 (with
# min <= avg <= max); these are the smallest sizes, so a few KiB already hold many chunks.
SMALL_CHUNKER = ChunkerParams(min_size=64, avg_size=256, max_size=1024, normalization=1)

ID_BYTES = 32


@st.composite
def chunker_params(draw: st.DrawFn) -> ChunkerParams:
    """Small but varied chunker parameters within pyfastcdc's bounds (powers of two)."""
    min_size = draw(st.sampled_from([64, 128, 256]))
    avg_size = draw(st.sampled_from([a for a in (256, 512, 1024) if a >= min_size]))
    max_size = draw(st.sampled_from([m for m in (1024, 2048, 4096) if m >= avg_size]))
    normalization = draw(st.integers(0, 3))
    return ChunkerParams(min_size, avg_size, max_size, normalization)


def random_bytes(max_size: int) -> st.SearchStrategy[bytes]:
    """High-entropy bytes from a seeded PRNG (Hypothesis' own binary() is mostly zeros)."""
    return st.builds(
        lambda seed, n: random.Random(seed).randbytes(n),
        st.integers(0, 2**32 - 1),
        st.integers(0, max_size),
    )


def repetitive_bytes(max_size: int) -> st.SearchStrategy[bytes]:
    """A short pattern repeated: compresses well and exercises the zstd path."""
    return st.builds(
        lambda pattern, n: (pattern * (n // len(pattern) + 1))[:n],
        st.binary(min_size=1, max_size=16),
        st.integers(0, max_size),
    )


def payloads(max_size: int = 4096) -> st.SearchStrategy[bytes]:
    """Arbitrary payloads: shrinkable binary, random (incompressible) and repetitive bytes."""
    return st.one_of(
        st.binary(max_size=max_size), random_bytes(max_size), repetitive_bytes(max_size)
    )


blob_ids = st.binary(min_size=ID_BYTES, max_size=ID_BYTES)
hex_ids = blob_ids.map(bytes.hex)
blob_types = st.sampled_from(list(BlobType))
compression_levels = st.sampled_from([0, 3])
u32 = st.integers(0, 2**32 - 1)

pack_infos = st.builds(
    PackInfo,
    id=hex_ids,
    epoch=u32,
    salt=st.binary(min_size=16, max_size=16),
)

pack_entries = st.builds(
    PackEntry,
    type=blob_types,
    id=blob_ids,
    offset=u32,
    length=u32,
    raw_length=u32,
)


def flip(data: bytes, position: int, mask: int) -> bytes:
    """`data` with the byte at `position` XORed with `mask` (1..255: always a change)."""
    assert 0 < mask < 256
    out = bytearray(data)
    out[position] ^= mask
    return bytes(out)


flip_masks = st.integers(1, 255)
