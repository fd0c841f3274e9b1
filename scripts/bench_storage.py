#!/usr/bin/env python3
"""Backup and restore throughput and request counts: local directory versus S3 (SeaweedFS).

Generates a synthetic dental archive plus CT-like volumes (seeded), starts a SeaweedFS server
on loopback, and runs the same vault backup / nightly backup / restore --verify against both
backends, printing a table and (with --json) one JSON document. Not part of the test suite.

    python scripts/bench_storage.py [--volumes-mb 256] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_memory import make_file  # noqa: E402
from make_sample_archive import generate  # noqa: E402

from tests.s3server import start_server  # noqa: E402


def run(args: list[str], env: dict[str, str]) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "vault", *args, "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"vault {args[0]} failed: {done.stderr.strip()}")
    return seconds, json.loads(done.stdout)


def measure(url: str, source: Path, work: Path, env: dict[str, str]) -> dict[str, Any]:
    env = dict(env, VAULT_REPO=url, VAULT_PASSWORD="bench passphrase")
    run(["init"], env)
    size = sum(p.stat().st_size for p in source.rglob("*") if p.is_file())
    b_sec, backup = run(["backup", str(source)], env)
    n_sec, nightly = run(["backup", str(source)], env)
    target = work / f"restore-{url.split(':')[0]}"
    r_sec, restore = run(["restore", "latest", "--target", str(target), "--verify"], env)
    shutil.rmtree(target)
    _, studies = run(["studies", "--modality", "CT"], env)
    study = max(studies, key=lambda st: st["files"])  # the one-file-per-slice CBCT series
    s_sec, one = run(
        ["restore", "latest", "--study", study["catalog_id"], "--target", str(target)], env
    )
    shutil.rmtree(target)
    return {
        "bytes": size,
        "backup_seconds": round(b_sec, 2),
        "backup_mb_per_s": round(size / b_sec / 1e6, 1),
        "backup_requests": backup["requests"],
        "nightly_seconds": round(n_sec, 2),
        "nightly_requests": nightly["requests"],
        "restore_verify_seconds": round(r_sec, 2),
        "restore_mb_per_s": round(size / r_sec / 1e6, 1),
        "restore_requests": restore["storage_requests"],
        "study_files": one["files"],
        "study_bytes": one["bytes"],
        "study_restore_seconds": round(s_sec, 2),
        "study_bytes_downloaded": one["bytes_downloaded"],
        "study_get_requests": one["storage_requests"]["get"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--volumes-mb", type=int, default=256)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="vault-bench-storage-"))
    server = None
    try:
        source = work / "share"
        generate(source, seed=21, scale=2.0)
        for i in range(max(1, args.volumes_mb // 64)):
            make_file(source / f"cbct-volume-{i}.raw", 64 * 1024 * 1024, seed=i + 1)
        server = start_server(work / "seaweedfs")
        server.client().create_bucket(Bucket="bench")
        env = dict(os.environ, **server.env())
        results = {
            "local": measure(str(work / "repo"), source, work, env),
            "s3": measure("s3://bench/vault", source, work, env),
        }
        if args.json:
            print(json.dumps(results, indent=2))
        else:
            for name, r in results.items():
                print(
                    f"{name:5}  backup {r['backup_mb_per_s']:7.1f} MB/s  "
                    f"restore+verify {r['restore_mb_per_s']:7.1f} MB/s  "
                    f"nightly {r['nightly_seconds']:.2f} s  "
                    f"backup PUTs {r['backup_requests']['put']}  "
                    f"restore GETs {r['restore_requests']['get']}  "
                    f"one study ({r['study_files']} files, {r['study_bytes'] / 1e6:.1f} MB): "
                    f"{r['study_restore_seconds']:.2f} s, "
                    f"{r['study_bytes_downloaded'] / 1e6:.1f} MB downloaded"
                )
            print(f"{results['local']['bytes'] / 1e6:.0f} MB archive")
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
