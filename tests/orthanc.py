"""A real Orthanc PACS for the tests (Debian's `orthanc`), and DCMTK's storescp as a second,
independent receiver: each started on loopback with its own configuration and free ports,
ready when it answers, stopped by PID.

Orthanc's REST API is used only by the tests, to ask what the PACS holds; vault speaks DICOM to
it. Orthanc listens on every interface (it has no bind address for DICOM); its REST API is
restricted to loopback (RemoteAccessAllowed false) and the tests connect to 127.0.0.1 only.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.waiting import DirectoryChanges, wait_until

ORTHANC = shutil.which("Orthanc") or "/usr/sbin/Orthanc"


def _dcmtk(tool: str) -> str | None:
    """DCMTK's `tool`. Not just the first on PATH: pynetdicom installs Python apps of the same
    names (storescp, storescu) into the virtual environment, with other options."""
    for directory in ("/usr/bin", "/usr/local/bin", *os.environ.get("PATH", "").split(os.pathsep)):
        path = os.path.join(directory, tool)
        if os.access(path, os.X_OK) and b"dcmtk" in _version(path).lower():
            return path
    return None


def _version(path: str) -> bytes:
    try:
        run = subprocess.run([path, "--version"], capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return b""
    return run.stdout + run.stderr


STORESCP = _dcmtk("storescp")
STORESCU = _dcmtk("storescu")


def have_orthanc() -> bool:
    return os.access(ORTHANC, os.X_OK)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Orthanc:
    """One Orthanc server in `root`; `start()` waits until its REST API answers."""

    root: Path
    ae_title: str = "ORTHANC"
    known_modalities: dict[str, str] = field(default_factory=dict)  # name -> calling AE title
    modality_ports: dict[str, int] = field(default_factory=dict)  # name -> its port (for C-STORE)
    allow_any_caller: bool = True
    tls: dict[str, str] | None = None  # certificate, key, trusted (CA) PEM paths
    require_client_certificate: bool = False
    dicom_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"{self.ae_title}@127.0.0.1:{self.dicom_port}"

    def config(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "Name": "vault-test",
            "StorageDirectory": str(self.root / "storage"),
            "IndexDirectory": str(self.root / "index"),
            "DicomAet": self.ae_title,
            "DicomPort": self.dicom_port,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomCheckCalledAet": True,
            "DicomAlwaysAllowEcho": self.allow_any_caller,
            "DicomAlwaysAllowStore": self.allow_any_caller,
            "DicomAlwaysAllowFind": self.allow_any_caller,
            "DicomAlwaysAllowGet": self.allow_any_caller,
            "DicomAlwaysAllowMove": self.allow_any_caller,
            "DicomModalities": {
                name: [aet, "127.0.0.1", self.modality_ports.get(name, 1)]
                for name, aet in self.known_modalities.items()
            },
            "OverwriteInstances": True,
            "StorageCompression": False,
            "HttpThreadsCount": 4,
            "DicomThreadsCount": 4,
            "Plugins": [],
        }
        if self.tls:
            doc |= {
                "DicomTlsEnabled": True,
                "DicomTlsCertificate": self.tls["certificate"],
                "DicomTlsPrivateKey": self.tls["key"],
                "DicomTlsTrustedCertificates": self.tls["trusted"],
                "DicomTlsRemoteCertificateRequired": self.require_client_certificate,
            }
        return doc

    def start(self, timeout: float = 60.0) -> Orthanc:
        self.root.mkdir(parents=True, exist_ok=True)
        config = self.root / "orthanc.json"
        config.write_text(json.dumps(self.config(), indent=2))
        log = open(self.root / "orthanc.log", "wb")  # noqa: SIM115 - kept for the process
        self.process = subprocess.Popen(
            [ORTHANC, str(config)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        # Orthanc logs and writes its index as it comes up: each change is worth a retry.
        changes = DirectoryChanges(self.root)
        try:
            ready = wait_until(self._answers, changes, timeout=timeout, process=self.process)
        finally:
            changes.close()
        if not ready:
            self.stop()
            raise RuntimeError(f"Orthanc did not start: {self.log_tail()}")
        return self

    def _answers(self) -> bool:
        try:
            self.rest("/system")
            return True
        except (urllib.error.URLError, ConnectionError, OSError):
            return False

    def log_tail(self) -> str:
        path = self.root / "orthanc.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.process = None

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def rest(self, path: str, data: bytes | None = None) -> Any:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.http_port}{path}", data=data, method="POST" if data else "GET"
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            body = response.read()
        kind = response.headers.get("Content-Type", "")
        return json.loads(body) if "json" in kind else body

    def instances(self) -> list[str]:
        return list(self.rest("/instances"))

    def instance_file(self, orthanc_id: str) -> bytes:
        return bytes(self.rest(f"/instances/{orthanc_id}/file"))

    def instance_tags(self, orthanc_id: str) -> dict[str, Any]:
        return dict(self.rest(f"/instances/{orthanc_id}/simplified-tags"))

    def received_by_sop_instance(self) -> dict[str, bytes]:
        """SOP Instance UID -> the file Orthanc keeps for it."""
        out = {}
        for orthanc_id in self.instances():
            uid = self.instance_tags(orthanc_id)["SOPInstanceUID"]
            out[uid] = self.instance_file(orthanc_id)
        return out


@dataclass
class StoreSCP:
    """DCMTK's storescp writing what it receives into `root/received`."""

    root: Path
    ae_title: str = "STORESCP"
    port: int = field(default_factory=free_port)
    profile: Path | None = None  # an association negotiation profile (-xf FILE PROFILE)
    process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"{self.ae_title}@127.0.0.1:{self.port}"

    @property
    def received(self) -> Path:
        return self.root / "received"

    def start(self, timeout: float = 30.0) -> StoreSCP:
        assert STORESCP, "storescp (DCMTK) is not installed"
        self.received.mkdir(parents=True, exist_ok=True)
        # --bit-preserving: each data set written exactly as it arrived.
        args = [STORESCP, "--verbose", "--bit-preserving", "--aetitle", self.ae_title,
                "--output-directory", str(self.received)]  # fmt: skip
        args += ["-xf", str(self.profile), "Vault"] if self.profile else ["--accept-all"]
        log = open(self.root / "storescp.log", "wb")  # noqa: SIM115 - kept for the process
        self.process = subprocess.Popen(
            [*args, str(self.port)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        changes = DirectoryChanges(self.root)  # its verbose log says when it listens
        try:
            ready = wait_until(self._listens, changes, timeout=timeout, process=self.process)
        finally:
            changes.close()
        if not ready:
            self.stop()
            log_text = (self.root / "storescp.log").read_text()
            raise RuntimeError(f"storescp did not start: {log_text}")
        return self

    def _listens(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.process = None

    def files(self) -> list[Path]:
        return sorted(p for p in self.received.rglob("*") if p.is_file())
