#!/usr/bin/env python3
"""Storage-fault and corruption campaign: random faults, counted, each outcome judged.

Storage faults (SeaweedFS S3 on loopback behind the fault proxy): for each fault class,
ITERATIONS times, a burst of 1–3 faults (one time in seven a storm of 40) hits a random point
of a random job — a backup of a changed archive, a verified restore, or `check --read-data` —
on requests of any kind. The job must either complete correctly (backup: its snapshot restores
byte-identical; restore: every file verified and byte-identical; check: passes) or fail
cleanly: exit 1, error lines naming the cause (one, or one per file a restore could not
complete), no traceback. Then, faults cleared, the same job must complete and
`check --read-data` must pass.

Corruption (a local repository holding every kind of object): for each object kind and damage
(a flipped bit at a random offset, truncation at a random length, deletion, substitution by
another valid object), ITERATIONS times on a fresh copy: `check` (and `check --read-data` where
only content changed) must fail, and is scored on naming the object.

Results go to the `faults` section of docs/reliability.md.

    python scripts/fault_campaign.py [--iterations 20] [--corruptions 10] [--seed 1]
                                     [--classes A,B] [--no-storage] [--no-corruption]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from doc_section import replace_section  # noqa: E402
from make_sample_archive import generate  # noqa: E402

from tests.conftest import PASSWORD  # noqa: E402
from tests.faultproxy import Fault, FaultProxy  # noqa: E402
from tests.s3server import start_server  # noqa: E402
from tests.test_corruption import (  # noqa: E402
    DAMAGES,
    KINDS,
    NOT_DAMAGE,
    build_template,
    damage,
    names_it,
)
from tests.treecompare import describe_tree  # noqa: E402
from vault.cli import main as cli  # noqa: E402
from vault.repo.keys import Secret  # noqa: E402
from vault.repo.repository import Repository  # noqa: E402
from vault.storage import LocalStorage  # noqa: E402

STORAGE_FAULTS: dict[str, Fault] = {
    "HTTP 503 Service Unavailable": Fault("status", status=503, code="ServiceUnavailable"),
    "throttling (503 SlowDown)": Fault("status", status=503, code="SlowDown"),
    "HTTP 500 Internal Error": Fault("status", status=500, code="InternalError"),
    "connection reset before the answer": Fault("reset"),
    "connection reset mid-body": Fault("reset-mid-body"),
    "truncated body": Fault("truncate"),
    "wrong Content-Length": Fault("wrong-length"),
    "stall past the read timeout": Fault("delay", seconds=20),
}
JOBS = ("backup", "restore", "check")


@dataclass
class Run:
    code: int
    out: str
    err: str


def vault(*argv: str | Path) -> Run:
    """In-process, as the test suite does: no interpreter start per call."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main([str(a) for a in argv])
    return Run(code, out.getvalue(), err.getvalue())


def clean_failure(run: Run) -> bool:
    """Exit 1, every line a vault error or warning naming its cause, no traceback. One line
    for most jobs; a restore names each file it could not complete, and a job that failed
    because of the storage still tries to audit that, warning when the storage refuses."""
    lines = run.err.strip().splitlines()
    errors = [line for line in lines if line.startswith("vault: error:")]
    return (
        run.code == 1
        and bool(errors)
        and all(line.startswith(("vault: error:", "vault: warning:")) for line in lines)
        and "Traceback" not in run.err
    )


class StorageCampaign:
    def __init__(self, work: Path, rng: random.Random) -> None:
        self.work, self.rng = work, rng
        self.server = start_server(work / "seaweedfs")
        host, port = self.server.endpoint.removeprefix("http://").split(":")
        self.proxy = FaultProxy(host, int(port))
        os.environ.update(self.server.env())
        os.environ.update(
            AWS_ENDPOINT_URL_S3=self.proxy.endpoint,
            VAULT_S3_MAX_ATTEMPTS="3",
            VAULT_S3_READ_TIMEOUT="1",
        )
        self.server.client().create_bucket(Bucket="fault-campaign")
        self.source = work / "archive"
        generate(self.source, seed=9, scale=0.3)
        self.round = 0

    def close(self) -> None:
        self.proxy.close()
        self.server.stop()

    def job(self, name: str, url: str) -> tuple[Run, bool]:
        """Run one job; (its result, whether what it produced is correct)."""
        self.round += 1
        if name == "backup":
            (self.source / f"new-{self.round}.bin").write_bytes(self.rng.randbytes(400_000))
            run = vault("backup", "-r", url, self.source, "--json", "--quiet")
            return run, run.code == 0 and self.restores(url, "latest")
        if name == "restore":
            return self.restore(url, "latest")
        run = vault("check", "-r", url, "--read-data", "--quiet")
        return run, run.code == 0

    def restore(self, url: str, snapshot: str) -> tuple[Run, bool]:
        target = self.work / "restore"
        shutil.rmtree(target, ignore_errors=True)
        run = vault("restore", snapshot, "-r", url, "--target", target, "--verify", "--quiet")
        same = run.code == 0 and describe_tree(
            target / self.source.relative_to("/")
        ) == describe_tree(self.source)
        shutil.rmtree(target, ignore_errors=True)
        return run, same

    def restores(self, url: str, snapshot: str) -> bool:
        self.proxy.clear()
        return self.restore(url, snapshot)[1]

    def calibrate(self, url: str) -> dict[str, int]:
        counts = {}
        for name in JOBS:
            before = self.proxy.requests
            run, ok = self.job(name, url)
            if not ok:
                raise RuntimeError(f"{name} fails without faults: {run.err}")
            counts[name] = self.proxy.requests - before
        return counts

    def run(self, label: str, fault: Fault, iterations: int) -> dict[str, Any]:
        url = f"s3://fault-campaign/{label.split()[0].lower()}-{self.rng.randrange(10**9)}"
        if vault("init", "-r", url).code != 0 or vault("backup", "-r", url, self.source).code:
            raise RuntimeError("cannot set up the campaign repository")
        requests = self.calibrate(url)
        outcome: Counter[str] = Counter()
        for _ in range(iterations):
            name = self.rng.choice(JOBS)
            self.proxy.clear()
            before = self.proxy.faults_injected
            self.proxy.inject(
                fault,
                # Mostly short bursts, which retries absorb; sometimes a storm that outlasts
                # them, so the clean-failure path is exercised too.
                times=self.rng.choice((1, 2, 3, 1, 2, 3, 40)),
                after=self.rng.randrange(max(1, requests[name])),
            )
            run, correct = self.job(name, url)
            self.proxy.clear()
            outcome["faults"] += self.proxy.faults_injected - before
            if run.code == 0 and correct:
                outcome["completed"] += 1
            elif clean_failure(run):
                outcome["failed cleanly"] += 1
                _, recovered = self.job(name, url)
                if not recovered:
                    outcome["NOT RECOVERED"] += 1
                    continue
            else:
                outcome["WRONG"] += 1
                print(f"  {label} / {name}: rc {run.code}: {run.err[-300:]}", file=sys.stderr)
                continue
            if vault("check", "-r", url, "--read-data", "--quiet").code != 0:
                outcome["NOT RECOVERED"] += 1
        return {"iterations": iterations, **outcome}


def corruption(work: Path, iterations: int, rng: random.Random) -> dict[str, dict[str, int]]:
    archive = work / "corruption-archive"
    generate(archive, seed=3, scale=0.3)
    template = build_template(work / "corruption", archive)
    results: dict[str, dict[str, int]] = {}
    for kind in sorted(KINDS):
        for how in DAMAGES:
            cell: Counter[str] = Counter()
            for _ in range(iterations):
                copy = work / "corrupt-copy"
                shutil.rmtree(copy, ignore_errors=True)
                shutil.copytree(template.path, copy)
                storage = LocalStorage(copy)
                opened = Repository.open(storage, Secret.from_passphrase(PASSWORD))
                opened.load_index()
                victim, other = KINDS[kind](opened, template)
                damage(storage, victim, other, how, rng)
                plain = vault("check", "-r", copy)
                full = vault("check", "-r", copy, "--read-data") if plain.code == 0 else plain
                if "Traceback" in full.err:
                    cell["traceback"] += 1
                elif (kind, how) in NOT_DAMAGE:
                    cell["passed (not damage)" if full.code == 0 else "flagged"] += 1
                elif full.code == 0:
                    cell["MISSED"] += 1
                else:
                    cell["detected"] += 1
                    cell["named"] += names_it(kind, how, victim, full.out + full.err)
            results[f"{kind} / {how}"] = dict(cell)
    return results


def render(
    storage: dict[str, dict[str, Any]],
    damaged: dict[str, dict[str, int]],
    args: Any,
    minutes: float,
) -> str:
    lines = [
        f"`python scripts/fault_campaign.py --iterations {args.iterations} --corruptions "
        f"{args.corruptions} --seed {args.seed}` "
        f"({minutes:.0f} min):",
        "",
    ]
    if storage:
        lines += [
            "| storage fault (S3, through the proxy) | runs | faults injected | completed "
            "correctly | failed cleanly, then recovered | wrong or not recovered |",
            "|---|---|---|---|---|---|",
        ]
        for label, r in storage.items():
            bad = r.get("WRONG", 0) + r.get("NOT RECOVERED", 0)
            lines.append(
                f"| {label} | {r['iterations']} | {r.get('faults', 0)} | "
                f"{r.get('completed', 0)} | {r.get('failed cleanly', 0)} | {bad} |"
            )
        lines.append("")
    if damaged:
        total = sum(sum(v for k, v in c.items() if k != "named") for c in damaged.values())
        detected = sum(c.get("detected", 0) for c in damaged.values())
        named = sum(c.get("named", 0) for c in damaged.values())
        missed = sum(c.get("MISSED", 0) + c.get("traceback", 0) for c in damaged.values())
        lines += [
            f"Corruption: {total} damaged copies of a repository; {detected} detected by "
            f"`check`, {named} of them naming the object, {missed} missed. Each cell: detected "
            '/ runs (and how many named the object when not all did); "n/a" marks state '
            "vault rewrites anyway, where `check` must pass.",
            "",
            "| object | " + " | ".join(DAMAGES) + " |",
            "|---|" + "---|" * len(DAMAGES),
        ]
        for kind in sorted(KINDS):
            cells = [_cell(damaged[f"{kind} / {how}"]) for how in DAMAGES]
            lines.append(f"| {kind} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def _cell(c: dict[str, int]) -> str:
    runs = sum(v for k, v in c.items() if k != "named")
    if "passed (not damage)" in c or "flagged" in c:
        return f"n/a: {c.get('passed (not damage)', 0)}/{runs} passed"
    text = f"{c.get('detected', 0)}/{runs}"
    if c.get("named", 0) != c.get("detected", 0):
        text += f" ({c.get('named', 0)} named)"
    if c.get("MISSED", 0) or c.get("traceback", 0):
        text += f" — MISSED {c.get('MISSED', 0)}, traceback {c.get('traceback', 0)}"
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--classes", default="", help="storage fault classes (default: all)")
    parser.add_argument("--corruptions", type=int, default=10, help="runs per corruption cell")
    parser.add_argument("--no-corruption", action="store_true")
    parser.add_argument("--no-storage", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "reliability.md")
    args = parser.parse_args()
    os.environ.update(VAULT_PASSWORD=PASSWORD, VAULT_TEST_FAST_KDF="1", VAULT_TEST_SUITE="1")
    rng = random.Random(args.seed)
    # Stopped with SIGTERM (or by a CI timeout): unwind, so the S3 server is stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    work = Path(tempfile.mkdtemp(prefix="vault-faults-"))
    started = time.monotonic()
    storage_results: dict[str, dict[str, Any]] = {}
    damaged: dict[str, dict[str, int]] = {}
    try:
        if not args.no_storage:
            campaign = StorageCampaign(work, rng)
            try:
                wanted = [c for c in args.classes.split(",") if c]
                for label, fault in STORAGE_FAULTS.items():
                    if wanted and not any(w.lower() in label.lower() for w in wanted):
                        continue
                    print(f"storage: {label}", file=sys.stderr)
                    storage_results[label] = campaign.run(label, fault, args.iterations)
            finally:
                campaign.close()
        if not args.no_corruption:
            print("corruption", file=sys.stderr)
            damaged = corruption(work, args.corruptions, rng)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps({"storage": storage_results, "corruption": damaged}, indent=1))
    section = render(storage_results, damaged, args, (time.monotonic() - started) / 60)
    replace_section(args.out, "faults", section, title="Reliability")
    bad = sum(r.get("WRONG", 0) + r.get("NOT RECOVERED", 0) for r in storage_results.values())
    bad += sum(c.get("MISSED", 0) + c.get("traceback", 0) for c in damaged.values())
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
