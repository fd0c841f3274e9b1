"""`vault restore`: a snapshot, a part of it, studies, or the whole archive in priority order."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from vault import ids
from vault.cli.output import emit_json, table
from vault.cli.pacs import add_endpoint_options, restore_to_pacs
from vault.cli.restore_progress import JsonLines, RestoreReport, TierLines, tier_document
from vault.cli.support import open_repo, opt, progress_for, record_audit, request_stats
from vault.errors import UsageError, VaultError
from vault.evidence.status import drills, restore_projection
from vault.format.snapshot import Snapshot
from vault.jobs.database_restore import restore_database
from vault.jobs.restore.dry_run import dry_run
from vault.jobs.restore.restorer import RestoreOptions, RestoreResult, restore
from vault.jobs.studies import StudyFilter, file_sets_of, parse_date, select_studies
from vault.policy.databases import parse_url
from vault.policy.restore_priority import load_restore_priority
from vault.repo import audit, lock
from vault.repo.repository import Repository
from vault.units import human_bytes, human_seconds


def add_restore_parser(command: Callable[..., argparse.ArgumentParser]) -> None:
    p = command(
        "restore",
        "restore a snapshot (or part of it) into a directory, studies into a PACS, or a "
        "database dump into a database server",
        cmd_restore,
    )
    p.add_argument("snapshot", metavar="SNAPSHOT", help="snapshot id, id prefix, or 'latest'")
    p.add_argument(
        "--target",
        metavar="DIR",
        help="directory to restore into (required, except with --to-pacs)",
    )
    p.add_argument(
        "--include",
        action="append",
        default=[],
        metavar="PATH",
        help="restore only this snapshot path (repeatable)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace files that already exist")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted restore into the same target: files already there are "
        "checked chunk by chunk against the snapshot and only what is missing or wrong is "
        "fetched (anything else in the way is replaced)",
    )
    p.add_argument(
        "--verify", action="store_true", help="re-read every restored file and compare its SHA-256"
    )
    p.add_argument(
        "--priority",
        metavar="FILE",
        help="restore in the tiers of this file (policies/restore.toml), each complete and "
        "verified before the next starts, a line as each is done",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="list what would be restored, per tier, with sizes and the time the last drill's "
        "measured throughput projects; writes nothing",
    )
    # A flag and a separate interval, not an optional number: `--json-progress latest` read
    # `latest` as the seconds.
    p.add_argument(
        "--json-progress",
        action="store_true",
        help="JSON lines on stdout as the restore goes: tiers, bytes, measured throughput and "
        "time left, then the result (or the error)",
    )
    p.add_argument(
        "--progress-interval",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="with --json-progress: a progress line every SECONDS (default 5)",
    )
    p.add_argument(
        "--study",
        action="append",
        default=[],
        metavar="UID|CATALOG_ID",
        help="restore this DICOM study (repeatable); always verified",
    )
    p.add_argument("--patient", metavar="ID", help="restore every study of this PatientID")
    p.add_argument("--since", metavar="DATE", help="with --patient: studies on or after DATE")
    p.add_argument(
        "--to-pacs",
        metavar="NAME|AET@HOST:PORT",
        help="with --study/--patient: send the studies into this PACS with C-STORE, as they "
        "were backed up (verified, staged privately, then removed), instead of into --target",
    )
    p.add_argument(
        "--staging",
        metavar="DIR",
        help="with --to-pacs: where the studies are staged while they are sent (default: the "
        "system's temporary directory)",
    )
    p.add_argument(
        "--database",
        metavar="DB|SOURCE/DB",
        help="load this database's dump from the snapshot into a database server (--into), "
        "streamed, never written to disk; a plain restore of the dump file works too",
    )
    p.add_argument(
        "--into",
        metavar="URL",
        help="with --database: a new database on a server, as "
        "mariadb://USER@HOST:PORT/NEWDB?password_file=FILE or postgresql://... (created; one "
        "that exists is refused)",
    )
    add_endpoint_options(p)


def cmd_restore(args: argparse.Namespace) -> int:
    if args.database or args.into:
        return _restore_database(args)
    if args.since and not args.patient:
        raise UsageError("--since goes with --patient")
    if not args.progress_interval > 0:
        raise UsageError("--progress-interval takes a number of seconds above 0")
    _check_destination(args)
    priority = load_restore_priority(Path(args.priority)) if args.priority else None
    if priority and (args.study or args.patient):
        raise UsageError("--priority orders a whole restore; it does not go with --study/--patient")
    query = (
        StudyFilter(patient_id=args.patient, since=parse_date(args.since, "--since"))
        if args.patient
        else None
    )
    repo = open_repo(args)
    snapshot = repo.find_snapshot(args.snapshot)
    catalog = repo.load_catalog(snapshot) if args.study or query else None
    studies = (
        select_studies(repo, snapshot, args.study, query, catalog) if args.study or query else []
    )
    if args.to_pacs:
        return restore_to_pacs(args, repo, snapshot, studies)
    with_sets, left_out = file_sets_of(catalog, studies) if catalog else ([], [])
    left_out = [p for p in left_out if p not in args.include]
    includes = (
        tuple(args.include) + tuple(path for s in studies for path in s.files) + tuple(with_sets)
    )
    verify = args.verify or bool(studies)
    options = RestoreOptions(
        Path(args.target), includes, args.overwrite, verify, args.resume, priority
    )
    if args.dry_run:
        return _dry_run(args, repo, snapshot, options)
    report: RestoreReport
    if args.json_progress:
        report = JsonLines(args.progress_interval, verifies=options.verifies)
    elif priority and not opt(args, "json"):
        report = TierLines(progress_for(args), verifies=options.verifies)
    else:
        report = RestoreReport(progress_for(args), verifies=options.verifies)
    started = datetime.now(UTC)
    with lock.Lock(repo.storage, repo.keyring, exclusive=False, operation="restore"):
        try:
            result = restore(repo, snapshot, options, report, report)
        except VaultError as exc:
            if isinstance(report, JsonLines):
                report.close()
                report.emit("error", message=str(exc), exit_code=exc.exit_code)
            record_audit(
                repo,
                "restore",
                result="FAIL",
                snapshot=snapshot.id,
                catalog_ids=[s.catalog_id for s in studies],
                target=audit.target_token(repo, args.target),
            )
            raise
        finally:
            if isinstance(report, JsonLines):
                report.close()
        record_audit(
            repo,
            "restore",
            result="FAIL" if result.problems else "PASS",
            snapshot=snapshot.id,
            catalog_ids=[s.catalog_id for s in studies],
            target=audit.target_token(repo, args.target),
            details={
                "files": result.files,
                "bytes": result.bytes,
                "whole": not includes,
                "tiers": len(result.tiers) if priority else None,
            },
        )
    seconds = max((datetime.now(UTC) - started).total_seconds(), 1e-9)
    for path, reason in result.problems:
        print(f"vault: error: {path}: {reason}", file=sys.stderr)
    machine = opt(args, "json") or args.json_progress
    if left_out and not machine:
        print(
            f"vault: note: left out {len(left_out)} DICOMDIR file(s) ({left_out[0]}"
            + (", …" if len(left_out) > 1 else "")
            + "): it lists studies not restored, so it would name missing files; "
            "`--include PATH` restores it anyway",
            file=sys.stderr,
        )
    if machine:
        doc = _result_document(args, repo, snapshot, result, options, seconds)
        doc.update(
            studies=[s.catalog_id for s in studies],
            file_sets_left_out=left_out,
        )
        if args.json_progress:
            sys.stdout.write(json.dumps({"type": "result", **doc}) + "\n")
        else:
            emit_json(doc)
    else:
        _print_result(args, snapshot, result, options, seconds)
    if result.problems:
        raise VaultError(f"{len(result.problems)} file(s) could not be restored correctly")
    return 0


def _restore_database(args: argparse.Namespace) -> int:
    if not (args.database and args.into):
        raise UsageError("--database DB and --into URL go together")
    clashing = [flag for flag, given in (("--target", args.target), ("--include", args.include),
                ("--study", args.study), ("--patient", args.patient), ("--to-pacs", args.to_pacs),
                ("--priority", args.priority), ("--resume", args.resume),
                ("--dry-run", args.dry_run)) if given]  # fmt: skip
    if clashing:
        raise UsageError(f"{clashing[0]} does not go with --database (the dump goes --into)")
    into = parse_url(args.into, what="--into")
    repo = open_repo(args)
    snapshot = repo.find_snapshot(args.snapshot)
    started = datetime.now(UTC)
    with lock.Lock(repo.storage, repo.keyring, exclusive=False, operation="restore"):
        try:
            done = restore_database(repo, snapshot, args.database, into, progress_for(args))
        except VaultError as exc:
            record_audit(
                repo,
                "restore-database",
                result="FAIL",
                snapshot=snapshot.id,
                details={"error": type(exc).__name__, "server": into.where()},
            )
            raise
    seconds = (datetime.now(UTC) - started).total_seconds()
    record_audit(
        repo,
        "restore-database",
        result="PASS",
        snapshot=snapshot.id,
        details={"database": done.record["database"], "server": into.where(),
                 "bytes": done.bytes, "duration_seconds": round(seconds, 3)},
    )  # fmt: skip
    if opt(args, "json"):
        emit_json(
            {
                "snapshot_id": snapshot.id,
                "dump": done.record,
                "into": {"server": into.where(), "database": done.database},
                "bytes": done.bytes,
                "duration_seconds": round(seconds, 3),
                "outcome": "PASS",
            }
        )
    else:
        print(
            f"loaded {done.record['source']}/{done.record['database']} of snapshot "
            f"{snapshot.id[:8]} (dumped {done.record['started'][:19]}) into {done.database} on "
            f"{into.where()}: {human_bytes(done.bytes)} in {human_seconds(seconds)}"
        )
    return 0


def _check_destination(args: argparse.Namespace) -> None:
    """Files go into --target, or studies into a PACS: one of them, and nothing that does not
    go with a PACS."""
    if not args.to_pacs:
        if not args.target:
            raise UsageError("say where to restore to: --target DIR (or --to-pacs for studies)")
        if args.staging:
            raise UsageError("--staging goes with --to-pacs")
        return
    if not (args.study or args.patient):
        raise UsageError("--to-pacs sends DICOM studies: name them with --study or --patient")
    clashing = [flag for flag, given in (("--target", args.target), ("--include", args.include),
                ("--priority", args.priority), ("--resume", args.resume), ("--dry-run",
                args.dry_run), ("--overwrite", args.overwrite), ("--json-progress",
                args.json_progress)) if given]  # fmt: skip
    if clashing:
        raise UsageError(f"{clashing[0]} does not go with --to-pacs (studies go into the PACS)")


def _result_document(
    args: argparse.Namespace,
    repo: Repository,
    snapshot: Snapshot,
    result: RestoreResult,
    options: RestoreOptions,
    seconds: float,
) -> dict[str, Any]:
    return {
        "snapshot_id": snapshot.id,
        "target": str(Path(args.target).absolute()),
        "files": result.files,
        "dirs": result.dirs,
        "symlinks": result.symlinks,
        "bytes": result.bytes,
        "bytes_downloaded": result.bytes_downloaded,
        "resumed": args.resume,
        "bytes_kept": result.bytes_kept,
        "files_kept": result.files_kept,
        "requests": result.requests,
        "verified_files": result.verified if options.verifies else None,
        "duration_seconds": round(seconds, 3),
        "priority": options.priority.source if options.priority else None,
        "tiers": [tier_document(t) for t in result.tiers] if options.priority else [],
        "problems": [{"path": p, "reason": r} for p, r in result.problems],
        "storage_requests": request_stats(repo),
        "outcome": "FAIL" if result.problems else "PASS",
    }


def _print_result(
    args: argparse.Namespace,
    snapshot: Snapshot,
    result: RestoreResult,
    options: RestoreOptions,
    seconds: float,
) -> None:
    verified = f", {result.verified} verified against SHA-256" if options.verifies else ""
    if args.resume:
        print(
            f"resumed: {human_bytes(result.bytes_kept)} already in the target were checked "
            f"and kept ({result.files_kept} files complete); "
            f"{human_bytes(result.bytes_downloaded)} fetched"
        )
    if options.priority:
        rows = [
            [str(t.number), t.name, str(t.files), human_bytes(t.bytes), human_seconds(t.seconds),
             t.outcome]
            for t in result.tiers
        ]  # fmt: skip
        print(table(["tier", "name", "files", "size", "time", "result"], rows))
    print(
        f"restored {result.files} files, {result.dirs} directories, {result.symlinks} "
        f"symlinks ({human_bytes(result.bytes)}) from snapshot {ids.short(snapshot.id)} "
        f"to {args.target} in {seconds:.1f}s{verified}"
    )


def _dry_run(
    args: argparse.Namespace, repo: Repository, snapshot: Snapshot, options: RestoreOptions
) -> int:
    estimates = dry_run(repo, snapshot, options)
    projection = restore_projection(drills(repo), snapshot)
    rate = projection.throughput_bytes_per_second if projection else None

    def eta(size: int) -> float | None:
        return size / rate if rate else None

    def eta_json(size: int) -> float | None:
        seconds = eta(size)
        return None if seconds is None else round(seconds, 1)

    existing = sum(e.existing for e in estimates)
    if opt(args, "json"):
        emit_json(
            {
                "snapshot_id": snapshot.id,
                "target": str(Path(args.target).absolute()),
                "priority": options.priority.source if options.priority else None,
                "throughput_bytes_per_second": round(rate) if rate else None,
                "throughput_from_drill": projection.drill_id if projection else None,
                "tiers": [
                    {
                        "tier": e.number,
                        "name": e.name,
                        "files": e.files,
                        "symlinks": e.symlinks,
                        "bytes": e.bytes,
                        "fetch_bytes": e.fetch_bytes,
                        "existing_in_target": e.existing,
                        "estimated_seconds": eta_json(e.bytes),
                        "note": e.note,
                    }
                    for e in estimates
                ],
                "bytes": sum(e.bytes for e in estimates),
                "fetch_bytes": sum(e.fetch_bytes for e in estimates),
                "estimated_seconds": eta_json(sum(e.bytes for e in estimates)),
                "existing_in_target": existing,
            }
        )
        return 0
    rows = []
    elapsed = 0.0
    for e in estimates:
        tier_eta = eta(e.bytes)
        elapsed += tier_eta or 0.0
        rows.append(
            [str(e.number), e.name + (f" ({e.note})" if e.note else ""), str(e.files),
             human_bytes(e.bytes), human_bytes(e.fetch_bytes), human_seconds(tier_eta),
             human_seconds(elapsed) if rate else "-"]
        )  # fmt: skip
    print(f"dry run: restore of snapshot {ids.short(snapshot.id)} into {args.target}")
    print(table(["tier", "name", "files", "size", "to fetch", "time", "done after"], rows))
    total = sum(e.bytes for e in estimates)
    if projection and rate:
        print(
            f"{human_bytes(total)} in about {human_seconds(total / rate)}"
            f" at the {rate / 1e6:.1f} MB/s drill "
            f"{projection.drill_id[:8]} measured"
        )
    else:
        print(f"{human_bytes(total)}; no time estimate: no drill has measured restore throughput "
              "yet (`vault drill`)")  # fmt: skip
    if existing:
        print(
            f"{existing} of these names already exist in {args.target}: the restore needs "
            "--resume (keep what is right) or --overwrite"
        )
    return 0
