#!/usr/bin/env python3
"""Peak memory and throughput of backing up and restoring one large file.

Writes a file of SIZE_GB (default 2) of CT-like 12-bit noise, backs it up into a fresh local
repository with the installed `vault`, restores it with --verify, and prints peak RSS (of each
vault process, from the kernel's rusage) and MB/s. Not part of the test suite: it needs several
GB of disk and a minute or more.

    python scripts/bench_memory.py [--size-gb 2] [--workdir DIR] [--json]
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

import numpy as np

BLOCK = 64 * 1024 * 1024


def make_file(path: Path, size: int, seed: int = 1) -> None:
    rng = np.random.default_rng(seed)
    with open(path, "wb") as handle:
        written = 0
        while written < size:
            n = min(BLOCK, size - written)
            values = rng.normal(1000, 200, size=n // 2).clip(0, 4095).astype("<u2")
            handle.write(values.tobytes()[:n])
            written += n


def run(argv: list[str], env: dict[str, str]) -> tuple[float, int, str]:
    """(seconds, peak RSS in bytes of this child alone, stdout)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        child = subprocess.Popen(argv, env=env, stdout=out, stderr=err)
        # wait4 gives exactly this child's rusage (RUSAGE_CHILDREN would give the maximum
        # over every child so far, e.g. the Argon2id peak of `init`).
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        if child.returncode != 0:
            sys.exit(f"{' '.join(argv[2:4])} failed ({child.returncode}): {err.read().decode()}")
        return seconds, usage.ru_maxrss * 1024, out.read().decode()


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "--make-file":
        make_file(Path(sys.argv[2]), int(sys.argv[3]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gb", type=float, default=2.0)
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="vault-bench-mem-", dir=args.workdir))
    try:
        source = work / "src"
        source.mkdir()
        size = int(args.size_gb * 1024**3)
        # In a child process: a child's peak RSS as the kernel reports it includes the RSS of
        # its parent at fork/exec time, so this process must stay small.
        subprocess.run(
            [sys.executable, __file__, "--make-file", str(source / "volume.raw"), str(size)],
            check=True,
        )
        keyfile = work / "pw"
        keyfile.write_text("benchmark passphrase\n")
        keyfile.chmod(0o600)
        env = dict(os.environ, VAULT_REPO=str(work / "repo"), VAULT_PASSWORD_FILE=str(keyfile))
        vault = [sys.executable, "-m", "vault"]
        _, i_rss, _ = run([*vault, "init"], env)
        b_sec, b_rss, _ = run([*vault, "backup", str(source), "--json"], env)
        r_sec, r_rss, _ = run(
            [*vault, "restore", "latest", "--target", str(work / "out"), "--verify", "--json"], env
        )
        result = {
            "file_bytes": size,
            "init_peak_rss_bytes": i_rss,
            "backup_seconds": round(b_sec, 2),
            "backup_mb_per_second": round(size / b_sec / 1e6, 1),
            "backup_peak_rss_bytes": b_rss,
            "restore_verify_seconds": round(r_sec, 2),
            "restore_verify_mb_per_second": round(size / r_sec / 1e6, 1),
            "restore_peak_rss_bytes": r_rss,
        }
        if args.json:
            print(json.dumps(result, indent=2))
        else:
            for key, value in result.items():
                print(f"{key:32} {value}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
