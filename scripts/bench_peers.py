"""The backup tools `scripts/bench.py` compares, each behind the same small interface.

Every command runs as a child process measured by the kernel: wall time, CPU seconds (user +
system, os.wait4) and peak resident memory of that one process, as GNU time reports it. Not
wait4's peak: a child started from the bench inherits the bench's own peak memory (Linux
carries the parent's high-water mark through vfork and exec), so every tool would report at
least what the bench once held (the 1 GB volume it generated read as every tool's 2.9 GB).

Settings are the comparable ones: each tool encrypts with AES-256 and compresses with zstd
where it can choose (restic: repository v2, compression "auto" = zstd level 3 class; borg:
zstd,3; vault: zstd level 3 by default).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PASSWORD = "bench passphrase, not a secret"


@dataclass
class Measured:
    seconds: float
    cpu_seconds: float
    peak_rss_bytes: int
    stdout: str


GNU_TIME = "/usr/bin/time"


def measure(argv: list[str], env: dict[str, str], cwd: Path | None = None) -> Measured:
    """Run argv to completion; raise with its stderr when it fails."""
    import tempfile

    with tempfile.NamedTemporaryFile("r", suffix=".rss") as rss:
        timed = [GNU_TIME, "-f", "%M", "-o", rss.name, "--", *argv]
        started = time.perf_counter()
        process = subprocess.Popen(
            timed, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        # Read the pipes in threads (communicate) but reap with wait4 for the CPU time (of
        # time and the tool it waited for; time's own is a millisecond).
        out, err = _drain(process)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode not in (0, 3):
            raise RuntimeError(
                f"{' '.join(argv[:3])} failed ({process.returncode}): {err[-2000:]}"
            )
        peak_kib = int(rss.read().split()[-1])
    return Measured(seconds, usage.ru_utime + usage.ru_stime, peak_kib * 1024, out)


def _drain(process: subprocess.Popen[str]) -> tuple[str, str]:
    import threading

    chunks: dict[str, list[str]] = {"out": [], "err": []}

    def read(name: str, stream: Any) -> None:
        chunks[name].append(stream.read())

    threads = [
        threading.Thread(target=read, args=("out", process.stdout)),
        threading.Thread(target=read, args=("err", process.stderr)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return "".join(chunks["out"]), "".join(chunks["err"])


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


class Tool:
    name = ""

    def __init__(self, repo: str, env: dict[str, str]) -> None:
        self.repo = repo
        self.env = env

    def version(self) -> str:
        raise NotImplementedError

    def init(self) -> Measured:
        raise NotImplementedError

    def backup(self, source: Path) -> Measured:
        raise NotImplementedError

    def restore(self, target: Path, include: str | None = None) -> Measured:
        raise NotImplementedError

    def check_read_data(self) -> Measured:
        raise NotImplementedError

    def added_bytes(self, result: Measured) -> int | None:
        """What the tool itself reports as new data stored by a backup, if it says."""
        return None


class Vault(Tool):
    name = "vault"

    def __init__(self, repo: str, env: dict[str, str]) -> None:
        super().__init__(repo, dict(env, VAULT_REPO=repo, VAULT_PASSWORD=PASSWORD))

    def _run(self, *args: str) -> Measured:
        return measure([sys.executable, "-m", "vault", *args, "--quiet"], self.env)

    def version(self) -> str:
        return self._run("--version").stdout.strip()

    def init(self) -> Measured:
        return self._run("init")

    def backup(self, source: Path) -> Measured:
        return self._run("backup", str(source), "--json")

    def restore(self, target: Path, include: str | None = None) -> Measured:
        extra = ["--include", include] if include else []
        return self._run("restore", "latest", "--target", str(target), *extra, "--json")

    def check_read_data(self) -> Measured:
        return self._run("check", "--read-data", "--json")

    def added_bytes(self, result: Measured) -> int | None:
        return int(json.loads(result.stdout)["stats"]["bytes_stored"])


class Restic(Tool):
    name = "restic"

    def __init__(self, repo: str, env: dict[str, str]) -> None:
        super().__init__(repo, dict(env, RESTIC_REPOSITORY=repo, RESTIC_PASSWORD=PASSWORD))

    def _run(self, *args: str) -> Measured:
        return measure(["restic", *args], self.env)

    def version(self) -> str:
        return self._run("version").stdout.strip().split(" compiled")[0]

    def init(self) -> Measured:
        return self._run("init", "--repository-version", "2")

    def backup(self, source: Path) -> Measured:
        return self._run("backup", str(source), "--json", "--compression", "auto")

    def restore(self, target: Path, include: str | None = None) -> Measured:
        extra = ["--include", include] if include else []
        return self._run("restore", "latest", "--target", str(target), *extra)

    def check_read_data(self) -> Measured:
        return self._run("check", "--read-data")

    def added_bytes(self, result: Measured) -> int | None:
        for line in reversed(result.stdout.splitlines()):
            doc = json.loads(line)
            if doc.get("message_type") == "summary":
                return int(doc.get("data_added_packed", doc["data_added"]))
        return None


class Borg(Tool):
    name = "borg"

    def __init__(self, repo: str, env: dict[str, str]) -> None:
        super().__init__(
            repo,
            dict(
                env,
                BORG_REPO=repo,
                BORG_PASSPHRASE=PASSWORD,
                BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK="yes",
                BORG_RELOCATED_REPO_ACCESS_IS_OK="yes",
            ),
        )
        self.archives = 0

    def _run(self, *args: str, cwd: Path | None = None) -> Measured:
        return measure(["borg", *args], self.env, cwd)

    def version(self) -> str:
        return self._run("--version").stdout.strip()

    def init(self) -> Measured:
        return self._run("init", "--encryption", "repokey")

    def backup(self, source: Path) -> Measured:
        self.archives += 1
        return self._run(
            "create", "--json", "--compression", "zstd,3", f"::a{self.archives}", str(source)
        )

    def restore(self, target: Path, include: str | None = None) -> Measured:
        target.mkdir(parents=True, exist_ok=True)
        extra = [include.lstrip("/")] if include else []
        return self._run("extract", f"::a{self.archives}", *extra, cwd=target)

    def check_read_data(self) -> Measured:
        return self._run("check", "--verify-data")

    def added_bytes(self, result: Measured) -> int | None:
        return int(json.loads(result.stdout)["archive"]["stats"]["deduplicated_size"])


TOOLS: dict[str, type[Tool]] = {"vault": Vault, "restic": Restic, "borg": Borg}


def ensure_installed(names: list[str]) -> None:
    """Install restic and borg from the distribution when missing (needs root and apt)."""
    missing = [n for n in names if n != "vault" and shutil.which(n) is None]
    if not os.path.exists(GNU_TIME):
        missing.append("time")
    if not missing:
        return
    packages = {"restic": "restic", "borg": "borgbackup", "time": "time"}
    print(f"installing {', '.join(missing)} with apt-get", file=sys.stderr)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", *(packages[n] for n in missing)], check=True, env=env
    )
