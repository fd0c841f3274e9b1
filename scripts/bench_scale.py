#!/usr/bin/env python3
"""Scale without memory growth: the blob index at millions of chunks, and a backup of a
million tiny files.

    python scripts/bench_scale.py index [--chunks 10000000]
    python scripts/bench_scale.py files [--files 1000000] [--work DIR] [--no-restic]
    python scripts/bench_scale.py bigfile [--gib 10] [--work DIR]

`index` builds the in-memory index the way opening a repository does (index objects decoded
and bulk-loaded, then frozen), then measures lookups of present and absent ids and the resident
memory per chunk (from /proc: what the process really holds, not what the structure claims).
`files` writes FILES small files (100 B – 4 KiB, 1000 per directory) and times `vault backup` of
them (first and no-change), with the peak RSS of the vault process, then `restic backup` of the
same files the same way (files/s and peak memory side by side; `--no-restic` skips it).
`bigfile` writes one file of GIB GiB of incompressible data and times its backup, a verified
restore (every byte hashed against the SHA-256 taken at backup) and `check --read-data`, with
peak RSS: memory must not grow with file size, offsets past 4 GiB must hold. Results are
printed as JSON and can be pasted
into docs/benchmarks.md or docs/reliability.md.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench import settle  # noqa: E402
from bench_peers import PASSWORD, measure  # noqa: E402

from vault.format.index import Index, PackInfo, decode, encode  # noqa: E402
from vault.format.pack import BlobType, PackEntry  # noqa: E402

BLOBS_PER_PACK = 20  # 16 MiB packs of ~0.8 MiB chunks
PACKS_PER_INDEX_OBJECT = 500  # a checkpoint's worth


def _rss() -> int:
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _trimmed_rss() -> int:
    """RSS after glibc returns free heap pages (what is fragmentation, what is held)."""
    import ctypes

    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    return _rss()


def _hwm() -> int:
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def bench_index(chunks: int) -> dict[str, Any]:
    rng = random.Random(1)
    gc.collect()
    base = _rss()
    index = Index()
    started = time.perf_counter()
    sample: list[bytes] = []
    made = 0
    while made < chunks:
        packs = []
        for _ in range(PACKS_PER_INDEX_OBJECT):
            if made >= chunks:
                break
            info = PackInfo(rng.randbytes(32).hex(), 1, rng.randbytes(16))
            entries = [
                PackEntry(BlobType.DATA, rng.randbytes(32), 24 + i * 800_000, 400_000, 800_000)
                for i in range(min(BLOBS_PER_PACK, chunks - made))
            ]
            made += len(entries)
            packs.append((info, entries))
        if len(sample) < 100_000:
            sample.extend(e.id for _, entries in packs for e in entries[:2])
        # As opening a repository does: one encoded index object at a time.
        for info, entries in decode(encode(packs), name="bench"):
            index.load_pack(info, entries)
    loaded = time.perf_counter()
    index.freeze()
    frozen = time.perf_counter()
    gc.collect()
    resident = _rss() - base
    trimmed = _trimmed_rss() - base
    present = sample[:100_000]
    absent = [rng.randbytes(32) for _ in range(100_000)]
    t0 = time.perf_counter()
    found = sum(1 for blob_id in present if blob_id in index)
    t1 = time.perf_counter()
    missing = sum(1 for blob_id in absent if blob_id not in index)
    t2 = time.perf_counter()
    assert found == len(present) and missing == len(absent)
    return {
        "chunks": len(index),
        "packs": len(index.packs()),
        "load_seconds": round(loaded - started, 1),
        "freeze_seconds": round(frozen - loaded, 1),
        "index_bytes_per_chunk": round(index.memory_bytes() / len(index), 1),
        "resident_bytes_per_chunk": round(resident / len(index), 1),
        "resident_after_malloc_trim_bytes_per_chunk": round(trimmed / len(index), 1),
        "peak_resident_mib": round(_hwm() / 2**20),
        "lookups_per_second_present": round(len(present) / (t1 - t0)),
        "lookups_per_second_absent": round(len(absent) / (t2 - t1)),
    }


def make_tiny_files(root: Path, count: int) -> None:
    marker = root / f".complete-{count}"
    if marker.exists():
        return
    rng = random.Random(2)
    for d in range(0, count, 1000):
        directory = root / f"d{d // 1000:05d}"
        directory.mkdir(parents=True, exist_ok=True)
        for i in range(min(1000, count - d)):
            (directory / f"f{i:04d}.txt").write_bytes(rng.randbytes(rng.randrange(100, 4096)))
    marker.write_text("")


def bench_files(count: int, work: Path, *, with_restic: bool = True) -> dict[str, Any]:
    source = work / f"tiny-{count}"
    started = time.perf_counter()
    make_tiny_files(source, count)
    made = time.perf_counter() - started
    repo = work / "tiny-repo"
    env = dict(os.environ, VAULT_REPO=str(repo), VAULT_PASSWORD=PASSWORD)
    env.pop("VAULT_TEST_FAST_KDF", None)
    if repo.exists():
        import shutil

        shutil.rmtree(repo)
    vault = [sys.executable, "-m", "vault"]
    measure([*vault, "init"], env)
    # Each tool's first backup starts with every file in the page cache: the
    # side-by-side used to run vault on files read from disk and restic right after on the
    # files vault had just brought into the cache (303 s against 84).
    settle(source, drop=False)
    first = measure([*vault, "backup", str(source), "--json", "--quiet"], env)
    again = measure([*vault, "backup", str(source), "--json", "--quiet"], env)
    result: dict[str, Any] = {"files": count, "make_seconds": round(made, 1)}
    result["vault"] = _files_result(count, first, again)
    if with_restic:
        # The same files, right after, the same way: restic 0.14 with its defaults.
        import shutil

        from bench_peers import TOOLS, ensure_installed

        ensure_installed(["restic"])
        restic_repo = work / "tiny-restic"
        shutil.rmtree(restic_repo, ignore_errors=True)
        restic = TOOLS["restic"](str(restic_repo), env)
        restic.init()
        settle(source, drop=False)
        r_first, r_again = restic.backup(source), restic.backup(source)
        result["restic"] = _files_result(count, r_first, r_again)
        result["vault_vs_restic_files_per_second"] = round(r_first.seconds / first.seconds, 2)
        result["vault_vs_restic_nochange_time"] = round(r_again.seconds / again.seconds, 2)
    return result


def _files_result(count: int, first: Any, again: Any) -> dict[str, Any]:
    return {
        "first_backup_seconds": round(first.seconds, 1),
        "first_backup_files_per_second": round(count / first.seconds),
        "first_backup_peak_rss_mib": round(first.peak_rss_bytes / 2**20),
        "nochange_backup_seconds": round(again.seconds, 1),
        "nochange_backup_files_per_second": round(count / again.seconds),
        "nochange_backup_peak_rss_mib": round(again.peak_rss_bytes / 2**20),
    }


def bench_bigfile(gib: int, work: Path) -> dict[str, Any]:
    source = work / "big"
    source.mkdir(exist_ok=True)
    big = source / f"volume-{gib}g.raw"
    if not big.exists() or big.stat().st_size != gib * 2**30:
        rng = random.Random(3)
        with open(big, "wb") as handle:
            for _ in range(gib * 16):  # 64 MiB at a time: random, so nothing dedups
                handle.write(rng.randbytes(64 * 2**20))
    repo, target = work / "big-repo", work / "big-restore"
    import shutil

    for path in (repo, target):
        shutil.rmtree(path, ignore_errors=True)
    env = dict(os.environ, VAULT_REPO=str(repo), VAULT_PASSWORD=PASSWORD)
    env.pop("VAULT_TEST_FAST_KDF", None)
    vault = [sys.executable, "-m", "vault"]
    measure([*vault, "init"], env)
    backed = measure([*vault, "backup", str(source), "--json", "--quiet"], env)
    restored = measure(
        [*vault, "restore", "latest", "--target", str(target), "--verify", "--json", "--quiet"],
        env,
    )
    verified = json.loads(restored.stdout).get("verified_files")
    copy = target / big.relative_to("/")
    same_size = copy.stat().st_size == big.stat().st_size
    shutil.rmtree(target)
    checked = measure([*vault, "check", "--read-data", "--json", "--quiet"], env)
    shutil.rmtree(repo)
    size = big.stat().st_size
    return {
        "file_bytes": size,
        "backup_seconds": round(backed.seconds, 1),
        "backup_mib_per_second": round(size / backed.seconds / 2**20),
        "backup_peak_rss_mib": round(backed.peak_rss_bytes / 2**20),
        "restore_verify_seconds": round(restored.seconds, 1),
        "restore_peak_rss_mib": round(restored.peak_rss_bytes / 2**20),
        "restore_verified_files": verified,
        "restored_size_matches": same_size,
        "check_read_data_seconds": round(checked.seconds, 1),
        "check_outcome": json.loads(checked.stdout)["outcome"],
        "check_peak_rss_mib": round(checked.peak_rss_bytes / 2**20),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    i = sub.add_parser("index")
    i.add_argument("--chunks", type=int, default=10_000_000)
    f = sub.add_parser("files")
    f.add_argument("--files", type=int, default=1_000_000)
    f.add_argument("--work", type=Path, default=Path("/var/tmp/vault-bench"))
    f.add_argument("--no-restic", action="store_true", help="vault only, no side-by-side")
    b = sub.add_parser("bigfile")
    b.add_argument("--gib", type=int, default=10)
    b.add_argument("--work", type=Path, default=Path("/var/tmp/vault-bench"))
    args = parser.parse_args()
    if args.what == "index":
        result = bench_index(args.chunks)
    elif args.what == "files":
        args.work.mkdir(parents=True, exist_ok=True)
        result = bench_files(args.files, args.work, with_restic=not args.no_restic)
    else:
        args.work.mkdir(parents=True, exist_ok=True)
        result = bench_bigfile(args.gib, args.work)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
