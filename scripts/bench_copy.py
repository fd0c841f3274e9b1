#!/usr/bin/env python3
"""The offsite copy, side by side: `vault copy` of a local repository into a replica on S3,
against `restic copy` between the same two places, on the same archive.

Both repositories are filled by one backup of the archive beforehand (or given). The S3 side
is a SeaweedFS server on loopback. Reported: the time and the bytes stored on S3 for the first
copy, and for the copy after one nightly increment (a new study), with passphrases and again
with machine key files; and how much of a copy a resume after SIGKILL sends again.

    scripts/bench_copy.py --data DIR [--out result.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

sys.path.insert(0, str(ROOT / "scripts"))

from make_sample_archive import generate  # noqa: E402

from tests.s3server import start_server  # noqa: E402

PASSWORD = "bench-pass-phrase-long-enough-1"


def _run(cmd: list[str], env: dict[str, str]) -> float:
    t = time.monotonic()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} failed: {done.stderr.strip()[-400:]}")
    return time.monotonic() - t


def _bucket_bytes(client: Any, bucket: str) -> int:
    total = 0
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        total += sum(o["Size"] for o in page.get("Contents", []))
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="the archive to back up")
    parser.add_argument("--new-study", type=Path, help="a folder added as the nightly change")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    # Bytecode compiled once, as an installed package has it (pip compiles at install): with
    # PYTHONDONTWRITEBYTECODE set, each run would otherwise compile vault's modules again.
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "vault")], check=True)
    work = Path(tempfile.mkdtemp(prefix="vault-bench-copy-", dir="/var/tmp"))
    secret = work / "passphrase"
    secret.write_text(PASSWORD + "\n")
    secret.chmod(0o600)
    server = start_server(work / "seaweedfs")
    results: dict[str, Any] = {}
    try:
        client = server.client()
        for bucket in ("vault-offsite", "restic-offsite"):
            client.create_bucket(Bucket=bucket)
        env = {
            **os.environ,
            **server.env(),
            "VAULT_PASSWORD_FILE": str(secret),
            "RESTIC_PASSWORD_FILE": str(secret),
            "RESTIC_FROM_PASSWORD_FILE": str(secret),
        }
        env.pop("VAULT_TEST_FAST_KDF", None)
        vault = [sys.executable, "-m", "vault"]
        nas, offsite = str(work / "nas"), "s3://vault-offsite/repo"
        rnas, roff = str(work / "restic-nas"), f"s3:{server.endpoint}/restic-offsite/repo"
        _run([*vault, "init", "-r", nas], env)
        _run([*vault, "backup", "-r", nas, str(args.data)], env)
        _run(["restic", "init", "-q", "-r", rnas], env)
        _run(["restic", "backup", "-q", "-r", rnas, str(args.data)], env)
        _run([*vault, "init", "-r", offsite, "--replica-of", nas], env)
        # restic copies without re-chunking only into a repository that shares the chunker
        # parameters: made so, as restic's documentation says to.
        _run(["restic", "init", "-q", "-r", roff, "--from-repo", rnas,
              "--copy-chunker-params"], env)  # fmt: skip
        base_v, base_r = (
            _bucket_bytes(client, "vault-offsite"),
            _bucket_bytes(client, "restic-offsite"),
        )
        results["source_bytes"] = {
            "vault": sum(f.stat().st_size for f in Path(nas).rglob("*") if f.is_file()),
            "restic": sum(f.stat().st_size for f in Path(rnas).rglob("*") if f.is_file()),
        }

        def copy_both(label: str, *opens: str) -> None:
            nonlocal base_v, base_r
            tv = _run([*vault, "copy", "-r", nas, "--to", offsite, *opens], env)
            tr = _run(["restic", "copy", "-q", "-r", roff, "--from-repo", rnas], env)
            now_v, now_r = (
                _bucket_bytes(client, "vault-offsite"),
                _bucket_bytes(client, "restic-offsite"),
            )
            row = {
                "vault_seconds": round(tv, 2),
                "restic_seconds": round(tr, 2),
                "speed_vs_restic": round(tr / tv, 2) if tv else None,
                "vault_bytes_added": now_v - base_v,
                "restic_bytes_added": now_r - base_r,
            }
            base_v, base_r = now_v, now_r
            results[label] = row
            print(label, json.dumps(row), flush=True)

        copy_both("first_copy")
        if args.new_study:
            shutil.copytree(args.new_study, work / "nightly" / args.new_study.name)
            _run([*vault, "backup", "-r", nas, str(args.data), str(work / "nightly")], env)
            _run(["restic", "backup", "-q", "-r", rnas, str(args.data), str(work / "nightly")], env)
            copy_both("nightly_copy")
            # The same, with machine key files on both repositories (`vault key add
            # --new-key-file`): a key file carries 256 bits, so no Argon2id is paid. restic
            # has only passphrases (scrypt); it copies as before.
            keys = {name: work / f"{name}.key" for name in ("nas", "offsite")}
            for name, repo in (("nas", nas), ("offsite", offsite)):
                _run([*vault, "key", "add", "-r", repo, "--new-key-file", str(keys[name])], env)
            generate(work / "nightly" / "second-study", seed=100, scale=1.0)
            _run([*vault, "backup", "-r", nas, str(args.data), str(work / "nightly")], env)
            _run(["restic", "backup", "-q", "-r", rnas, str(args.data), str(work / "nightly")], env)
            copy_both("nightly_copy_key_files", "--key-file", str(keys["nas"]),
                      "--to-key-file", str(keys["offsite"]))  # fmt: skip

        # Resume: a fresh replica, the copy killed once half of the source's packs landed.
        client.create_bucket(Bucket="vault-resume")
        resume = "s3://vault-resume/repo"
        _run([*vault, "init", "-r", resume, "--replica-of", nas], env)
        total = sum(f.stat().st_size for f in (Path(nas) / "data").rglob("*") if f.is_file())
        copy = subprocess.Popen([*vault, "copy", "-r", nas, "--to", resume], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        while copy.poll() is None and _bucket_bytes(client, "vault-resume") < total / 2:
            time.sleep(0.2)  # a bench, polling the bucket: not a test's synchronisation
        os.kill(copy.pid, signal.SIGKILL)
        copy.wait()
        landed = _bucket_bytes(client, "vault-resume")
        subprocess.run([*vault, "unlock", "-r", resume, "--remove-all"], env=env, check=True,
                       capture_output=True)  # fmt: skip
        out = subprocess.run([*vault, "copy", "-r", nas, "--to", resume, "--json"], env=env,
                             capture_output=True, text=True, check=True)  # fmt: skip
        doc = json.loads(out.stdout)
        results["resume"] = {
            "landed_before_kill": landed,
            "kept": doc["bytes_resumed"],
            "sent_again_of_landed": max(0, landed - doc["bytes_resumed"]),
            "sent_after_resume": doc["bytes_copied"] + doc["bytes_repacked"],
            "total_pack_bytes": total,
        }
        print("resume", json.dumps(results["resume"]), flush=True)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
