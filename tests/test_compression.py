"""Chunk compression: every encoding round-trips, 12-bit image samples are split into byte
planes (smaller than plain zstd), other data is not, and lengths are enforced."""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from vault.format import compression


def _ct_like(n_samples: int, seed: int = 1) -> bytes:
    rng = np.random.default_rng(seed)
    phantom = 1040 + 400 * np.sin(np.linspace(0, 40, n_samples)) + rng.normal(0, 28, n_samples)
    return phantom.clip(0, 4095).astype("<u2").tobytes()


def test_twelve_bit_samples_go_to_byte_planes_and_compress_better() -> None:
    data = _ct_like(400_000)
    encoding, packed = compression.compress(data, 3)
    assert encoding == compression.ZSTD_PLANES
    plain = compression._compressor(3).compress(data)
    assert len(packed) < 0.9 * len(plain)
    assert compression.decompress(encoding, packed, len(data)) == data


@pytest.mark.parametrize(
    "data",
    [
        b"".join(f"{i:07d}|2024-03-01|DEMO-{i % 97:04d}|paid\n".encode() for i in range(9000)),
        random.Random(3).randbytes(300_000),  # JPEG-like: incompressible
        bytes(range(256)) * 2000,  # 8-bit ramp
    ],
    ids=["text", "random", "8-bit"],
)
def test_other_data_is_not_split(data: bytes) -> None:
    encoding, packed = compression.compress(data, 3)
    assert encoding in (compression.ZSTD, compression.RAW)
    assert compression.decompress(encoding, packed, len(data)) == data


def test_sealed_objects_never_use_planes() -> None:
    data = _ct_like(100_000)
    assert compression.compress(data, 3, planes=False)[0] == compression.ZSTD


@given(
    st.one_of(
        st.binary(min_size=0, max_size=20_000),
        st.integers(min_value=4096, max_value=30_000).map(lambda n: _ct_like(n)[: 2 * n - 1]),
    ),
    st.sampled_from([0, 1, 3, 6]),
)
def test_every_encoding_round_trips(data: bytes, level: int) -> None:
    encoding, packed = compression.compress(data, level)
    assert compression.decompress(encoding, packed, len(data)) == data


def test_planes_whose_length_disagrees_are_rejected() -> None:
    data = _ct_like(50_000)
    encoding, packed = compression.compress(data, 3)
    assert encoding == compression.ZSTD_PLANES
    with pytest.raises(ValueError):
        compression.decompress(encoding, packed, len(data) - 2)
    with pytest.raises(ValueError):
        compression.decompress(encoding, packed, len(data) + 2)
