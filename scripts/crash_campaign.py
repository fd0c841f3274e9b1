#!/usr/bin/env python3
"""SIGKILL campaign: kill backup, prune, key re-encryption and restore at random moments.

For each job and backend (a local directory, SeaweedFS S3 on loopback), ITERATIONS times: run
the job as a child process and SIGKILL it after a random number (seeded) of storage events —
inotify events for a local repository, requests through the counting proxy for S3; the upper
bound comes from one uninterrupted calibration run. After every kill:

  * `vault check --read-data` passes;
  * the snapshot made before the campaign restores byte-identical (`restore --verify` and a
    comparison of every file's content and metadata with the source);
  * the job run again completes.

For backup it also records how much the interrupted run uploaded and how much of it the re-run
sent again. The index checkpoint stays at its default (every GiB or 5 minutes), so a killed
backup here never wrote an index: what the re-run does not send again it owes to adopting the
packs the killed run left (vault/repo/recover.py). Results go to the `crash` section of
docs/reliability.md.

    python scripts/crash_campaign.py [--iterations 50] [--backends local,s3] [--seed 1]
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import random
import select
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from doc_section import replace_section  # noqa: E402
from make_sample_archive import generate  # noqa: E402

from tests.faultproxy import FaultProxy  # noqa: E402
from tests.s3server import start_server  # noqa: E402
from tests.treecompare import describe_tree  # noqa: E402

PASSWORD = "crash campaign passphrase"
JOBS = ("backup", "prune", "reencrypt", "restore")
PACK = 16 * 1024 * 1024


class InotifyCounter:
    """Counts file-system events under a directory tree (new directories are watched)."""

    _MASK = 0x2 | 0x8 | 0x80 | 0x100 | 0x200  # modify, close-write, moved-to, create, delete
    _EVENT = struct.Struct("iIII")

    def __init__(self, root: Path) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._fd = self._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        self._paths: dict[int, bytes] = {}
        self.count = 0
        for directory, _, _ in os.walk(root):
            self._watch(os.fsencode(directory))

    def _watch(self, path: bytes) -> None:
        wd = self._libc.inotify_add_watch(self._fd, path, self._MASK)
        if wd >= 0:
            self._paths[wd] = path

    def pump(self, timeout: float) -> None:
        ready, _, _ = select.select([self._fd], [], [], timeout)
        if not ready:
            return
        data = os.read(self._fd, 1 << 16)
        offset = 0
        while offset < len(data):
            wd, mask, _, length = self._EVENT.unpack_from(data, offset)
            name = data[offset + 16 : offset + 16 + length].rstrip(b"\0")
            offset += 16 + length
            self.count += 1
            if mask & 0x100 and mask & 0x40000000 and wd in self._paths:
                self._watch(os.path.join(self._paths[wd], name))

    def close(self) -> None:
        os.close(self._fd)


class Backend:
    def __init__(self, name: str, work: Path, server: Any) -> None:
        self.name, self.work, self.server = name, work, server
        self.proxy: FaultProxy | None = None
        self.counter: InotifyCounter | None = None

    def new_repo(self, label: str) -> tuple[str, dict[str, str]]:
        env = dict(
            os.environ, VAULT_PASSWORD=PASSWORD, VAULT_TEST_FAST_KDF="1", VAULT_TEST_SUITE="1"
        )
        if self.name == "local":
            path = self.work / f"repo-{label}"
            shutil.rmtree(path, ignore_errors=True)
            return str(path), env
        host, port = self.server.endpoint.removeprefix("http://").split(":")
        if self.proxy is None:
            self.proxy = FaultProxy(host, int(port))
        bucket = "campaign"
        client = self.server.client()
        with contextlib.suppress(Exception):
            client.create_bucket(Bucket=bucket)
        env.update(self.server.env())
        env["AWS_ENDPOINT_URL_S3"] = self.proxy.endpoint
        return f"s3://{bucket}/{label}-{random.getrandbits(40):010x}", env

    def events(self) -> int:
        if self.proxy is not None:
            return self.proxy.requests
        assert self.counter is not None
        return self.counter.count

    def watch(self, repo: str, extra: Path | None) -> None:
        if self.name == "local":
            self.counter = InotifyCounter(Path(extra) if extra else Path(repo))

    def pump(self) -> None:
        if self.counter is not None:
            self.counter.pump(0.05)
        elif self.proxy is not None:
            self.proxy.changes.wait(0.05)

    def unwatch(self) -> None:
        if self.counter is not None:
            self.counter.close()
            self.counter = None


def vault(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "vault", *args, "--quiet"], env=env, capture_output=True, text=True
    )
    if check and done.returncode != 0:
        raise RuntimeError(f"vault {' '.join(args[:2])} failed: {done.stderr.strip()[-500:]}")
    return done


def run_killed(
    backend: Backend, env: dict[str, str], args: list[str], kill_after: int | None, watch: Path
) -> tuple[bool, int]:
    """Run `vault ARGS`; SIGKILL after `kill_after` events (None: let it finish). Returns
    (killed, events seen)."""
    backend.watch(str(watch), watch)
    base = backend.events()
    process = subprocess.Popen(
        [sys.executable, "-m", "vault", *args, "--quiet"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    killed = False
    try:
        while process.poll() is None:
            if kill_after is not None and backend.events() - base >= kill_after:
                process.send_signal(signal.SIGKILL)
                killed = True
                break
            backend.pump()
        _, err = process.communicate()
        if not killed and process.returncode != 0:
            raise RuntimeError(f"vault {args[0]} failed: {err.decode()[-500:]}")
        return killed, backend.events() - base
    finally:
        backend.unwatch()


def data_bytes(backend: Backend, repo: str) -> int:
    """Bytes of every complete pack object, indexed or not (what was really uploaded; a
    temporary file a killed run was still writing is not an upload)."""
    if backend.name == "local":
        return sum(
            p.stat().st_size
            for p in Path(repo, "data").rglob("*")
            if p.is_file() and not p.name.startswith(".tmp-")
        )
    bucket, prefix = repo.removeprefix("s3://").split("/", 1)
    pages = backend.server.client().get_paginator("list_objects_v2")
    return sum(
        o["Size"]
        for page in pages.paginate(Bucket=bucket, Prefix=f"{prefix}/data/")
        for o in page.get("Contents", [])
    )


def verify(repo: str, env: dict[str, str], source: Path, work: Path) -> None:
    """check --read-data passes and the first snapshot restores byte-identical."""
    vault(env, "check", "-r", repo, "--read-data")
    target = work / "verify"
    shutil.rmtree(target, ignore_errors=True)
    listed = json.loads(vault(env, "snapshots", "-r", repo, "--json").stdout)
    snapshot = [x for x in listed if x["paths"] == [str(source)]][-1]["id"]
    vault(env, "restore", snapshot, "-r", repo, "--target", str(target), "--verify")
    if describe_tree(target / str(source).lstrip("/")) != describe_tree(source):
        raise RuntimeError("the first snapshot no longer restores byte-identical")
    shutil.rmtree(target)


def prepare(job: str, repo: str, env: dict[str, str], archive: Path, big: Path) -> list[str]:
    """A repository whose first snapshot is of `archive`, ready for `job`; returns the job's
    arguments."""
    vault(env, "init", "-r", repo)
    if job == "prune":
        # An older snapshot that also held `big`, which retention then forgets: prune has
        # packs to delete and packs to keep.
        extra = archive / "old-scans"
        shutil.copytree(big, extra)
        vault(env, "backup", "-r", repo, str(archive), "--time", "2020-01-01 00:00:00")
        shutil.rmtree(extra)
        vault(env, "backup", "-r", repo, str(archive))
        policy = big.parent / "keep-last.toml"
        policy.write_text("[retention]\nkeep_last = 1\n")
        vault(env, "forget", "-r", repo, "--policy", str(policy))
        return ["prune", "-r", repo]
    vault(env, "backup", "-r", repo, str(archive))
    if job == "backup":
        return ["backup", "-r", repo, str(big)]
    vault(env, "backup", "-r", repo, str(big))
    if job == "reencrypt":
        return ["key", "rotate", "-r", repo, "--reencrypt"]
    return ["restore", "latest", "-r", repo, "--target", str(big.parent / "restore-target")]


def _fresh(target: Path) -> None:
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir()


def campaign(
    backend: Backend, job: str, iterations: int, rng: random.Random, archive: Path, big: Path
) -> dict[str, Any]:
    outcome: dict[str, Any] = defaultdict(int)
    waste: list[float] = []
    target = big.parent / "restore-target"

    def watched(repo: str) -> Path:
        return target if job == "restore" else Path(repo)

    # Calibration: the events of uninterrupted runs, and (backup) what one uploads. The
    # fewest of three: inotify merges repeated events, so counts vary a little from run to
    # run, and a kill point past the end of a short run would only let it finish.
    totals = []
    for attempt in range(3):
        repo, env = backend.new_repo(f"{job}-cal{attempt}")
        args = prepare(job, repo, env, archive, big)
        _fresh(target)
        before = data_bytes(backend, repo) if job == "backup" else 0
        totals.append(run_killed(backend, env, args, None, watched(repo))[1])
        clean_upload = data_bytes(backend, repo) - before if job == "backup" else 0
    total = min(totals)
    for _ in range(iterations):
        repo, env = backend.new_repo(job)
        args = prepare(job, repo, env, archive, big)
        _fresh(target)
        before = data_bytes(backend, repo) if job == "backup" else 0
        killed, _ = run_killed(backend, env, args, rng.randint(1, max(1, total)), watched(repo))
        outcome["kills" if killed else "finished_before_kill"] += 1
        verify(repo, env, archive, backend.work)
        uploaded = data_bytes(backend, repo) - before if job == "backup" else 0
        if job == "restore":
            _fresh(target)
        vault(env, *args)
        if job == "backup" and killed and uploaded > 0:
            total_upload = data_bytes(backend, repo) - before
            waste.append(max(0, total_upload - clean_upload) / uploaded)
        verify(repo, env, archive, backend.work)
        outcome["survived"] += 1
    outcome["waste_median"] = round(statistics.median(waste), 3) if waste else None
    outcome["waste_max"] = round(max(waste), 3) if waste else None
    return dict(outcome)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--backends", default="local,s3")
    parser.add_argument("--jobs", default=",".join(JOBS))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "reliability.md")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    # Stopped with SIGTERM (or by a CI timeout): unwind, so the S3 server is stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    work = Path(tempfile.mkdtemp(prefix="vault-crash-"))
    archive = work / "archive"
    generate(archive, seed=5, scale=0.3)
    big = work / "big"
    big.mkdir()
    data = random.Random(args.seed)
    for i in range(4):
        (big / f"scan{i}.raw").write_bytes(data.randbytes(PACK))
    server = None
    results: dict[tuple[str, str], dict[str, Any]] = {}
    started = time.monotonic()
    try:
        for name in args.backends.split(","):
            if name == "s3" and server is None:
                server = start_server(work / "seaweedfs")
            backend = Backend(name, work, server)
            for job in args.jobs.split(","):
                print(f"{name} {job}: {args.iterations} iterations", file=sys.stderr)
                results[(name, job)] = campaign(backend, job, args.iterations, rng, archive, big)
            if backend.proxy is not None:
                backend.proxy.close()
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
    write_section(args.out, results, args, time.monotonic() - started)
    return 0


def write_section(
    path: Path, results: dict[tuple[str, str], dict[str, Any]], args: Any, seconds: float
) -> None:
    lines = [
        f"`python scripts/crash_campaign.py --iterations {args.iterations} --backends "
        f"{args.backends} --seed {args.seed}` ({seconds / 60:.0f} min):",
        "",
        "| backend | job | SIGKILLs | finished before the kill | survived | re-sent after a "
        "killed backup (median / max, of what it had uploaded) |",
        "|---|---|---|---|---|---|",
    ]
    for (backend, job), r in results.items():
        waste = (
            f"{r['waste_median']:.0%} / {r['waste_max']:.0%}"
            if r.get("waste_median") is not None
            else "-"
        )
        lines.append(
            f"| {backend} | {job} | {r.get('kills', 0)} | {r.get('finished_before_kill', 0)} | "
            f"{r.get('survived', 0)} of {args.iterations} | {waste} |"
        )
    replace_section(path, "crash", "\n".join(lines), title="Reliability")


if __name__ == "__main__":
    sys.exit(main())
