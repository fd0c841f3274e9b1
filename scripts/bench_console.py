#!/usr/bin/env python3
"""What a console page costs to render for a large repository: by default 1,000 snapshots
and 10,000 studies (one small DICOM file a study, 2,000 patients).

The repository is real: `vault init`, one `vault backup` of the generated studies, one
`vault drill`; the other snapshots are what nightly runs of an unchanged archive write, made
without re-reading the files (each a snapshot object of its own and a catalog object of its
own, written through the repository's API). Then a real `vault serve` on loopback is timed
page by page over HTTPS: the first request after start (cold) and the median of --runs more.

    python scripts/bench_console.py [--snapshots 1000] [--studies 10000] [--runs 5]

Results go to docs/benchmarks.md between its bench:console markers (--no-docs: print only).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from doc_section import replace_section  # noqa: E402

from tests.console import ConsoleServer, run_vault, write_config  # noqa: E402
from vault import ids  # noqa: E402

SECTION = "bench:console"
PASSWORD = "correct horse battery staple 2026"


def make_studies(root: Path, count: int) -> None:
    """`count` studies of one small DICOM file each (no pixel data), 5 a patient."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    modalities = ("CT", "PX", "IO", "XC")
    for number in range(count):
        patient = number // 5
        folder = root / f"P{patient:05d}" / f"S{number:05d}"
        folder.mkdir(parents=True, exist_ok=True)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.PatientID = f"BENCH-{patient:05d}"
        ds.PatientName = f"BENCH^P{patient:05d}"
        ds.PatientBirthDate = "19700101"
        ds.StudyInstanceUID = generate_uid()
        ds.SeriesInstanceUID = generate_uid()
        ds.StudyDate = f"{2016 + number % 10}{1 + number % 12:02d}{1 + number % 28:02d}"
        ds.Modality = modalities[number % len(modalities)]
        ds.StudyDescription = "synthetic bench study"
        ds.save_as(folder / "1.dcm", enforce_file_format=True)


def clone_snapshots(repo_path: Path, env: dict[str, str], total: int) -> None:
    """Snapshots 2..total: the first one's tree under new ids and times, each with a catalog
    object of its own, as nightly runs of an unchanged archive leave them."""
    from vault.repo.keys import Secret
    from vault.repo.repository import Repository
    from vault.storage import open_storage

    repo = Repository.open(open_storage(str(repo_path)), Secret.from_passphrase(PASSWORD))
    (first,) = repo.snapshots()
    catalog = repo.load_catalog(first)
    assert catalog is not None
    now = datetime.now(UTC)
    for number in range(total - 1):
        snapshot_id = ids.new_id()
        when = now - timedelta(hours=(total - 1 - number)) + timedelta(minutes=30)
        repo.save_catalog(snapshot_id, catalog, serialized=catalog.loaded_from)
        repo.save_snapshot(
            replace(first, id=snapshot_id, time=when, catalog=snapshot_id, parent=first.id)
        )


def timed(call: Any) -> float:
    started = time.perf_counter()
    reply = call()
    seconds = time.perf_counter() - started
    assert reply.status == 200, (reply.status, reply.text[:300])
    return seconds


def resident_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--snapshots", type=int, default=1000)
    parser.add_argument("--studies", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--work", type=Path, default=Path("/var/tmp/vault-bench/console"))
    parser.add_argument("--no-docs", action="store_true")
    args = parser.parse_args()
    if args.snapshots < 1 or args.studies < 1 or args.runs < 1:
        parser.error("--snapshots, --studies and --runs take numbers of 1 or more")
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    password = args.work / "password"
    password.write_text(PASSWORD + "\n")
    password.chmod(0o600)
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("VAULT_")}
    env |= {"VAULT_PASSWORD_FILE": str(password), "VAULT_STATE_DIR": str(args.work / "state")}
    print(f"making {args.studies} studies", file=sys.stderr)
    make_studies(args.work / "archive", args.studies)
    repo = args.work / "repo"
    run_vault("init", "--repo", str(repo), env=env)
    started = time.perf_counter()
    run_vault("backup", "--repo", str(repo), str(args.work / "archive"), env=env)
    print(f"backup: {time.perf_counter() - started:.1f} s", file=sys.stderr)
    run_vault("drill", "--repo", str(repo), env=env)
    print(f"making {args.snapshots - 1} more snapshots", file=sys.stderr)
    clone_snapshots(repo, env, args.snapshots)
    config = write_config(args.work, {"bench": repo}, password)
    server = ConsoleServer(args.work, config, env)
    server.add_user("op", "operator")
    server.add_user("boss", "admin")
    started = time.perf_counter()
    server.start()
    start_seconds = time.perf_counter() - started
    try:
        op, boss = server.signed_in("op"), server.signed_in("boss")
        patient = f"BENCH-{(args.studies // 5) // 2:05d}"
        study_link: list[str] = []

        def search_one() -> Any:
            reply = op.post("/r/bench/studies", {"patient_id": patient})
            study_link[:] = [p for p in _links(reply.text) if "/studies/" in p][:1]
            return reply

        # The first search right after start waits for the index the server began building
        # as it started; then every page is timed with the index built.
        first_search = timed(search_one)
        while "indexed the studies" not in server.log.read_text():
            time.sleep(0.2)
        pages: list[tuple[str, Any]] = [
            ("fleet (/)", lambda: op.get("/")),
            ("repository overview, newest 50 snapshots", lambda: op.get("/r/bench")),
            ("repository overview, page 20", lambda: op.get("/r/bench?page=20")),
            ("studies: search one patient ID", search_one),
            (
                "studies: search a name (200 of the matches shown)",
                lambda: op.post("/r/bench/studies", {"name": "BENCH"}),
            ),
            ("one study (and the snapshots holding it)", lambda: op.get(study_link[0])),
            ("snapshot tree, top folder", lambda: op.get(f"/r/bench/snapshots/{_latest(op)}/tree")),
            ("drills", lambda: op.get("/r/bench/drills")),
            ("evidence pack", lambda: op.get("/r/bench/evidence")),
            ("audit log", lambda: op.get("/r/bench/audit")),
            ("jobs", lambda: op.get("/r/bench/jobs")),
            ("keys and policies (admin)", lambda: boss.get("/r/bench/keys")),
        ]
        rows = []
        for label, call in pages:
            cold = timed(call)
            warm = [timed(call) for _ in range(args.runs)]
            rows.append((label, cold, statistics.median(warm)))
            print(
                f"{label}: cold {cold:.3f} s, warm {statistics.median(warm):.3f} s", file=sys.stderr
            )
        assert server.process is not None
        memory = resident_mib(server.process.pid)
    finally:
        server.stop()
    import re

    built = re.search(
        r"indexed the studies of (\d+) snapshot\(s\) of bench in ([\d.]+) s", server.log.read_text()
    )
    index = f"{built[2]} s for {int(built[1]):,} snapshots" if built else "not logged"
    started = time.perf_counter()
    run_vault("studies", "--repo", str(repo), "--patient", patient, "--json", env=env)
    cli = time.perf_counter() - started
    body = render(
        args,
        rows,
        start_seconds,
        memory,
        f"{index}; the first search, sent right after signing in, took {first_search:.1f} s",
        cli,
    )
    print(body)
    if not args.no_docs:
        replace_section(ROOT / "docs" / "benchmarks.md", SECTION, body, title="Benchmarks")
    return 0


def _links(text: str) -> list[str]:
    import re

    return re.findall(r'href="([^"]+)"', text)


def _latest(web: Any) -> str:
    import re

    found = re.search(r"/r/bench/snapshots/([0-9a-f]+)/tree", web.get("/r/bench").text)
    assert found
    return found[1]


def render(
    args: argparse.Namespace,
    rows: list[tuple[str, float, float]],
    start: float,
    memory: float,
    index: str,
    cli: float,
) -> str:
    lines = [
        f"### Console pages for {args.snapshots:,} snapshots and {args.studies:,} studies",
        "",
        f"`python scripts/bench_console.py --snapshots {args.snapshots} --studies {args.studies} "
        f"--runs {args.runs}`, {datetime.now(UTC):%Y-%m-%d}. Server start (opening the "
        f"repository, Argon2id included) to listening: {start:.1f} s; resident memory after "
        f"the run: {memory:.0f} MiB. The study index, built in the background from start "
        f"(every snapshot's catalog read once): {index}. Then, with the index built, each "
        "page: the whole HTTPS request from a client on the same machine, one page after "
        "another; cold is its first request, warm the median of the next "
        f"{args.runs}. For comparison, `vault studies --patient ID` (a new process, which "
        f"reads all {args.snapshots:,} catalogs for each search): {cli:.1f} s.",
        "",
        "| page | cold | warm |",
        "|---|---|---|",
    ]
    lines += [f"| {label} | {cold:.3f} s | {warm:.3f} s |" for label, cold, warm in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
