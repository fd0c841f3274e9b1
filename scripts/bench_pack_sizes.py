#!/usr/bin/env python3
"""What stored pack sizes tell the storage provider, and what padding them would cost.

Backs up a generated archive, then one new file per night of three sizes, and prints for each
night the new pack objects, the size an observer derives from them (pack size minus the
format's fixed overhead, with the blob count read off the plaintext trailer length), and the
file's real compressed size. Then prices Padmé padding (Nikitin et al., PETS 2019: at most
12 % overhead, leaks O(log log n) bits) over every pack the runs wrote.

    .venv/bin/python scripts/bench_pack_sizes.py [--scale 0.3]
"""

from __future__ import annotations

import argparse
import math
import os
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import sample_archive  # noqa: E402

PASSWORD = "pack size measurement passphrase, not a secret"
HEADER, LENGTH_FIELD, TRAILER_ENTRY, TAG, ENCODING = 24, 4, 45, 16, 1


def padme(length: int) -> int:
    """Padmé: round `length` up so that only O(log log length) bits of it remain."""
    if length < 2:
        return length
    exponent = math.floor(math.log2(length))
    size_bits = math.floor(math.log2(exponent)) + 1
    last_bits = exponent - size_bits
    mask = (1 << last_bits) - 1
    return (length + mask) & ~mask


def vault(env: dict[str, str], *args: str | Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "vault", *map(str, args)],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        cwd=ROOT,
    )


def packs(repo: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in (repo / "data").rglob("*") if p.is_file()}


def observed(path: Path) -> tuple[int, int]:
    """(blobs, sum of compressed blob bodies) as anyone holding the object can compute them."""
    data = path.read_bytes()
    (trailer,) = struct.unpack(">I", data[-4:])
    blobs = (trailer - TAG) // TRAILER_ENTRY
    body = len(data) - HEADER - LENGTH_FIELD - trailer - blobs * (ENCODING + TAG)
    return blobs, body


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=0.3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        env = dict(os.environ, VAULT_PASSWORD=PASSWORD, VAULT_REPO=str(work / "repo"))
        env.pop("VAULT_TEST_FAST_KDF", None)
        archive = work / "archive"
        sample_archive.generate(archive, scale=args.scale, seed=5)
        vault(env, "init")
        vault(env, "backup", archive)
        all_packs = packs(work / "repo")
        print(
            "| night's new file | packs written | data blobs (from trailer) | size an observer "
            "derives | real compressed size |"
        )
        print("|---|---|---|---|---|")
        for night, size in enumerate((40_000, 3_000_000, 25_000_000), start=1):
            before = packs(work / "repo")
            new_file = archive / f"night{night}.bin"
            new_file.write_bytes(os.urandom(size))  # incompressible: compressed size = size
            vault(env, "backup", archive)
            after = packs(work / "repo")
            fresh = [name for name in after if name not in before]
            seen = sorted(observed(next((work / "repo" / "data").rglob(n))) for n in fresh)
            # The smallest new pack holds the night's directory trees; the rest, its data.
            data_packs = sorted(seen, key=lambda s: s[1])[1:]
            derived = sum(body for _, body in data_packs)
            print(
                f"| {size:,} B | {len(fresh)} | {sum(b for b, _ in data_packs)} | "
                f"{derived:,} B | {size:,} B |"
            )
            all_packs.update(after)
        stored = sum(all_packs.values())
        padded = sum(padme(s) for s in all_packs.values())
        partial = [s for s in all_packs.values() if s < 16 * 1024 * 1024]
        print()
        print(f"packs: {len(all_packs)}, {stored:,} B stored")
        overhead = padded - stored
        print(f"Padmé on every pack: +{overhead:,} B ({100 * overhead / stored:.2f} %)")
        extra = sum(padme(s) - s for s in partial)
        print(
            f"Padmé on the {len(partial)} partial packs only: +{extra:,} B "
            f"({100 * extra / max(1, sum(partial)):.2f} % of them)"
        )
        full = 16 * 1024 * 1024
        fixed = sum(full - s for s in partial)
        print(
            f"every partial pack padded to a full {full // 2**20} MiB (sizes hidden): "
            f"+{fixed:,} B ({100 * fixed / stored:.0f} % of everything stored), that is "
            f"{full / 2**20:.0f} MiB per pack kind per night however little changed"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
