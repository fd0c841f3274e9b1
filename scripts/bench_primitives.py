"""Single-core throughput of each step a backup applies to every byte, on the benchmark's own
data, and the ceiling they set for the whole pipeline on this machine's cores."""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vault.format import compression, crypto
from vault.format.chunker import Chunker, ChunkerParams
from vault.format.config import DEFAULT_ZSTD_LEVEL

SAMPLE_BYTES = 192 * 1024 * 1024
CHUNK = 1024 * 1024


def _sample(data: Path) -> bytes:
    """About SAMPLE_BYTES of the archive, mostly CBCT (the bulk of a real one)."""
    parts, total = [], 0
    for path in sorted(data.rglob("*.dcm")):
        blob = path.read_bytes()
        parts.append(blob)
        total += len(blob)
        if total >= SAMPLE_BYTES:
            break
    return b"".join(parts)


def _rate(step: Callable[[memoryview], object], sample: bytes) -> float:
    """MB/s of `step` over the sample in 1 MiB pieces (best of two passes)."""
    view = memoryview(sample)
    best = 0.0
    for _ in range(2):
        started = time.perf_counter()
        for offset in range(0, len(sample), CHUNK):
            step(view[offset : offset + CHUNK])
        best = max(best, len(sample) / (time.perf_counter() - started) / 1e6)
    return best


def primitives(data: Path) -> dict[str, Any]:
    sample = _sample(data)
    key, nonce = os.urandom(32), os.urandom(12)
    aead = crypto.Aead(key)
    chunker = Chunker(ChunkerParams(), seed=12345)
    compressed = sum(
        len(compression.compress(sample[i : i + CHUNK], DEFAULT_ZSTD_LEVEL)[1])
        for i in range(0, len(sample), CHUNK)
    )
    rates = {
        "sha256": _rate(lambda b: hashlib.sha256(b).digest(), sample),
        "hmac_sha256": _rate(lambda b: hmac.digest(key, b, hashlib.sha256), sample),
        "fastcdc": len(sample) / _timed(lambda: chunker.cut(sample)) / 1e6,
        f"zstd_{DEFAULT_ZSTD_LEVEL}_plain": _rate(
            lambda b: compression.compress(b, DEFAULT_ZSTD_LEVEL, planes=False), sample
        ),
        "vault_compress": _rate(lambda b: compression.compress(b, DEFAULT_ZSTD_LEVEL), sample),
        "aes_256_gcm": _rate(lambda b: aead.seal(nonce, bytes(b), b""), sample),
    }
    # Every byte passes every step once (AES-GCM on the compressed bytes): seconds per MB add.
    # The pipeline compresses once, the way vault does (byte planes for image data).
    ratio = len(sample) / compressed
    steps = {k: v for k, v in rates.items() if not k.endswith("_plain")}
    per_mb = sum(1 / r if name != "aes_256_gcm" else 1 / (r * ratio) for name, r in steps.items())
    cores = os.cpu_count() or 1
    return {
        "sample_bytes": len(sample),
        "zstd_ratio": round(ratio, 3),
        "single_core_mb_per_s": {k: round(v, 1) for k, v in rates.items()},
        "pipeline_one_core_mb_per_s": round(1 / per_mb, 1),
        "pipeline_ceiling_mb_per_s": round(cores / per_mb, 1),
        "cores": cores,
    }


def _timed(step: Callable[[], object]) -> float:
    started = time.perf_counter()
    step()
    return time.perf_counter() - started
