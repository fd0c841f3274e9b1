"""The command line: parse arguments, run a job, print results, map errors to exit codes.

`main(argv) -> int` is the only place an exception becomes an exit code (vault.errors). JSON
goes to stdout as one document; messages, warnings and progress go to stderr.
"""

from __future__ import annotations

import argparse
import os
import stat
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from vault import __version__, ids, keys, lock, secrets_input
from vault.backup import BackupOptions, BackupResult, backup
from vault.check import check
from vault.cli_drill import add_drill_parsers
from vault.cli_keys import add_key_parsers
from vault.cli_maintenance import add_maintenance_parsers
from vault.cli_studies import add_study_parsers
from vault.cli_support import (
    ENVIRONMENT,
    EXIT_CODES,
    common_options,
    iso_utc,
    local_time,
    open_repo,
    open_storage_for,
    opt,
    percent_arg,
    progress_for,
    record_audit,
    request_stats,
    secret_sources,
    usage,
)
from vault.errors import PartialBackup, UsageError, VaultError
from vault.objectlock import extend_retention
from vault.output import emit_json, human_bytes, table
from vault.paths import display, inside_include, normalize
from vault.policy import load_drill_policy, load_key_policy, policy_dir
from vault.repository import ObjectLockPolicy, Repository
from vault.restore import RestoreOptions, restore, walk
from vault.snapshot import Snapshot
from vault.status import status
from vault.studies import StudyFilter, parse_date, select_studies
from vault.tree import DIR, FILE, SYMLINK


def build_parser() -> argparse.ArgumentParser:
    common = common_options()
    parser = argparse.ArgumentParser(
        prog="vault",
        parents=[common],
        description="Encrypted, deduplicating backups of dental imaging archives.",
        epilog=ENVIRONMENT + "\n\n" + EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"vault {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, help_text: str, func: Callable[..., int]) -> argparse.ArgumentParser:
        p = sub.add_parser(
            name,
            parents=[common],
            help=help_text,
            description=help_text,
            epilog=EXIT_CODES,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.set_defaults(func=func)
        return p

    p = command(
        "init", "create a new encrypted repository (prints the recovery key once)", cmd_init
    )
    p.add_argument(
        "--object-lock-days",
        type=int,
        default=0,
        metavar="N",
        help="S3 only: keep every object immutable for N days (bucket needs Object Lock)",
    )
    p.add_argument(
        "--object-lock-mode",
        choices=["governance", "compliance"],
        default="governance",
        help="governance: privileged users may shorten it; compliance: nobody can (default: "
        "governance)",
    )

    p = command(
        "object-lock",
        "keep the objects that snapshots need under Object Lock retention",
        lambda a: usage("object-lock"),
    )
    lock_sub = p.add_subparsers(dest="lock_command", metavar="ACTION", required=True)
    lp = lock_sub.add_parser(
        "extend",
        parents=[common],
        help="move retention forward to now + N days where less than half is left",
        description="move retention forward to now + N days where less than half is left",
    )
    lp.set_defaults(func=cmd_object_lock_extend)
    lp.add_argument("--dry-run", action="store_true", help="only report what would change")

    p = command("backup", "back up files and directories into a new snapshot", cmd_backup)
    p.add_argument("paths", nargs="+", metavar="PATH", help="files or directories to back up")
    p.add_argument("--tag", action="append", default=[], help="tag the snapshot (repeatable)")
    p.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="GLOB",
        help="skip paths or names matching GLOB (repeatable)",
    )
    p.add_argument(
        "--time",
        metavar="'YYYY-MM-DD HH:MM:SS'",
        help="record this local time as the snapshot time",
    )
    p.add_argument("--host", help="record this host name instead of this machine's")

    command("snapshots", "list snapshots", cmd_snapshots)

    p = command("ls", "list the files in a snapshot", cmd_ls)
    p.add_argument("snapshot", metavar="SNAPSHOT", help="snapshot id, id prefix, or 'latest'")
    p.add_argument("path", nargs="?", metavar="PATH", help="only this path and what is under it")

    p = command("restore", "restore a snapshot (or part of it) into a directory", cmd_restore)
    p.add_argument("snapshot", metavar="SNAPSHOT", help="snapshot id, id prefix, or 'latest'")
    p.add_argument("--target", required=True, metavar="DIR", help="directory to restore into")
    p.add_argument(
        "--include",
        action="append",
        default=[],
        metavar="PATH",
        help="restore only this snapshot path (repeatable)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace files that already exist")
    p.add_argument(
        "--verify", action="store_true", help="re-read every restored file and compare its SHA-256"
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

    add_study_parsers(command)
    add_drill_parsers(common, command)
    add_maintenance_parsers(command)

    p = command("check", "verify the repository's structure (and optionally its data)", cmd_check)
    group = p.add_mutually_exclusive_group()
    group.add_argument("--read-data", action="store_true", help="read and verify every pack")
    group.add_argument(
        "--read-data-subset",
        metavar="PCT",
        type=percent_arg,
        help="read and verify a random PCT%% of the packs",
    )

    p = command(
        "status", "last backup, key rotation due, slots and locks (exit 1 when overdue)", cmd_status
    )
    p.add_argument(
        "--policy-dir",
        metavar="DIR",
        help="directory with keys.toml (default: $VAULT_POLICY_DIR, else built-in defaults)",
    )

    p = command("unlock", "remove stale locks left by processes that are gone", cmd_unlock)
    p.add_argument("--remove-all", action="store_true", help="also remove locks that look live")

    add_key_parsers(common, command)
    return parser


# -- commands -------------------------------------------------------------------------------------


def cmd_init(args: argparse.Namespace) -> int:
    storage = open_storage_for(args)
    lock = None
    if args.object_lock_days:
        if args.object_lock_days < 1:
            raise UsageError("--object-lock-days must be at least 1")
        lock = ObjectLockPolicy(args.object_lock_mode.upper(), args.object_lock_days)
        if not storage.supports_object_lock():
            raise UsageError(
                f"{storage.location()} has no Object Lock: create the bucket with Object Lock "
                "enabled (it cannot be added to most existing buckets), or omit "
                "--object-lock-days"
            )
    passphrase = secrets_input.new_passphrase(None, secret_sources(args))
    repo, recovery = Repository.init(
        storage, keys.Secret.from_passphrase(passphrase), object_lock=lock
    )
    if opt(args, "json"):
        emit_json(
            {
                "repository_id": repo.config.repository_id,
                "location": storage.location(),
                "recovery_key": recovery,
                "object_lock": {"mode": lock.mode, "days": lock.days} if lock else None,
            }
        )
        return 0
    print(
        f"created vault repository {ids.short(repo.config.repository_id)} at {storage.location()}"
    )
    if lock:
        print(f"every object is kept immutable for {lock.days} days ({lock.mode.lower()} mode);")
        print("run `vault object-lock extend` regularly (e.g. weekly) to keep history locked")
    print()
    print("RECOVERY KEY (shown only this once; print it and store it off-site, e.g. in a safe):")
    print()
    print(f"    {recovery}")
    print()
    print("It opens the repository if the passphrase is lost. Anyone holding it can read the")
    print("backups, so keep it away from the backup server and the storage credentials.")
    return 0


def _parse_time(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        return datetime.strptime(text, "%Y-%m-%d %H:%M:%S").astimezone(UTC)
    except ValueError:
        raise UsageError(f"--time {text!r} is not in the form 'YYYY-MM-DD HH:MM:SS'") from None


def cmd_backup(args: argparse.Namespace) -> int:
    when = _parse_time(args.time)
    repo = open_repo(args)
    options = BackupOptions(
        tuple(args.paths), tuple(args.tag), tuple(args.exclude), when, args.host
    )
    started = datetime.now(UTC)
    result = backup(repo, options, progress_for(args))
    seconds = max((datetime.now(UTC) - started).total_seconds(), 1e-9)
    _report_backup(args, result, seconds, request_stats(repo))
    if result.errors:
        raise PartialBackup(
            f"snapshot {ids.short(result.snapshot.id)} saved, but {len(result.errors)} "
            "file(s) could not be read (listed above)"
        )
    return 0


def _report_backup(
    args: argparse.Namespace, result: BackupResult, seconds: float, requests: dict[str, Any]
) -> None:
    snap, st = result.snapshot, result.snapshot.stats
    for problem in result.errors:
        print(f"vault: error: cannot read {problem.path}: {problem.reason}", file=sys.stderr)
    for problem in result.unstable:
        print(
            f"vault: warning: {problem.path} {problem.reason}; saved as read, "
            "and it will be read again next time",
            file=sys.stderr,
        )
    for path in result.skipped_special:
        print(
            f"vault: warning: skipped {path}: not a regular file, directory or symlink",
            file=sys.stderr,
        )
    catalog = result.catalog
    for path in catalog.unparseable if catalog else []:
        print(
            f"vault: warning: {path} looks like DICOM but its header cannot be read; "
            "saved byte for byte, but it is in no study",
            file=sys.stderr,
        )
    if opt(args, "json"):
        emit_json(
            {
                "snapshot_id": snap.id,
                "time": iso_utc(snap.time),
                "host": snap.host,
                "paths": list(snap.paths),
                "tags": list(snap.tags),
                "parent": snap.parent,
                "duration_seconds": round(seconds, 3),
                "stats": asdict(st),
                "packs_written": result.packs_written,
                "throughput_bytes_per_second": round(st.bytes_read / seconds),
                "errors": [asdict(p) for p in result.errors],
                "changed_during_read": [asdict(p) for p in result.unstable],
                "studies": len(catalog.studies) if catalog else 0,
                "unparseable_dicom": list(catalog.unparseable) if catalog else [],
                "requests": requests,
                "outcome": "FAIL" if result.errors else "PASS",
            }
        )
        return
    print(f"snapshot {ids.short(snap.id)} saved")
    if catalog and catalog.studies:
        print(f"  DICOM studies: {len(catalog.studies)} (vault studies lists them)")
    print(
        f"  files: {st.files} ({st.files_new} new, {st.files_changed} changed, "
        f"{st.files_unchanged} unchanged), {st.dirs} directories, {human_bytes(st.bytes)}"
    )
    print(
        f"  read {human_bytes(st.bytes_read)}, added {human_bytes(st.bytes_added)} "
        f"({human_bytes(st.bytes_stored)} stored) in {seconds:.1f}s "
        f"({human_bytes(st.bytes_read / seconds)}/s)"
    )


def cmd_snapshots(args: argparse.Namespace) -> int:
    snapshots = open_repo(args).snapshots()
    if opt(args, "json"):
        emit_json([_snapshot_json(s) for s in snapshots])
        return 0
    rows = [
        [
            ids.short(s.id),
            local_time(s.time),
            s.host,
            ",".join(s.tags),
            ", ".join(s.paths),
            str(s.stats.files),
            human_bytes(s.stats.bytes),
        ]
        for s in snapshots
    ]
    print(table(["ID", "TIME", "HOST", "TAGS", "PATHS", "FILES", "SIZE"], rows))
    print(f"{len(snapshots)} snapshot(s)")
    return 0


def _snapshot_json(s: Snapshot) -> dict[str, Any]:
    return {
        "id": s.id,
        "short_id": ids.short(s.id),
        "time": iso_utc(s.time),
        "host": s.host,
        "username": s.username,
        "paths": list(s.paths),
        "tags": list(s.tags),
        "parent": s.parent,
        "tree": s.tree,
        "stats": asdict(s.stats),
        "errors": len(s.errors),
        "program_version": s.program_version,
    }


def cmd_ls(args: argparse.Namespace) -> int:
    repo = open_repo(args)
    snapshot = repo.find_snapshot(args.snapshot)
    repo.load_index()
    problems: list[tuple[str, str]] = []
    includes = [normalize(args.path)] if args.path else []
    items = sorted(
        (i for i in walk(repo, snapshot, problems) if inside_include(i.path, includes)),
        key=lambda i: i.path,
    )
    if args.path and not items:
        raise UsageError(f"{args.path} is not in snapshot {ids.short(snapshot.id)}")
    if opt(args, "json"):
        emit_json(
            [
                {
                    "path": display(i.path),
                    "type": i.node.type,
                    "mode": i.node.mode,
                    "uid": i.node.uid,
                    "gid": i.node.gid,
                    "size": i.node.size,
                    "mtime": iso_utc(datetime.fromtimestamp(i.node.mtime_ns / 1e9, UTC)),
                    **({"sha256": i.node.sha256} if i.node.type == FILE else {}),
                    **(
                        {"link_target": display(i.node.link_target)}
                        if i.node.type == SYMLINK
                        else {}
                    ),
                }
                for i in items
            ]
        )
    else:
        kind = {DIR: stat.S_IFDIR, FILE: stat.S_IFREG, SYMLINK: stat.S_IFLNK}
        for i in items:
            mode = stat.filemode(kind.get(i.node.type, 0) | i.node.mode)
            when = datetime.fromtimestamp(i.node.mtime_ns / 1e9).strftime("%Y-%m-%d %H:%M:%S")
            link = f" -> {display(i.node.link_target)}" if i.node.type == SYMLINK else ""
            print(
                f"{mode} {i.node.uid:>5} {i.node.gid:>5} {i.node.size:>12} {when} "
                f"{display(i.path)}{link}"
            )
    for path, reason in problems:
        print(f"vault: warning: {path}: {reason}", file=sys.stderr)
    return 1 if problems else 0


def cmd_restore(args: argparse.Namespace) -> int:
    if args.since and not args.patient:
        raise UsageError("--since goes with --patient")
    query = (
        StudyFilter(patient_id=args.patient, since=parse_date(args.since, "--since"))
        if args.patient
        else None
    )
    repo = open_repo(args)
    snapshot = repo.find_snapshot(args.snapshot)
    studies = select_studies(repo, snapshot, args.study, query) if args.study or query else []
    includes = tuple(args.include) + tuple(path for s in studies for path in s.files)
    verify = args.verify or bool(studies)
    options = RestoreOptions(Path(args.target), includes, args.overwrite, verify)
    started = datetime.now(UTC)
    with lock.Lock(repo.storage, repo.keyring, exclusive=False, operation="restore"):
        try:
            result = restore(repo, snapshot, options, progress_for(args))
        except VaultError:
            record_audit(
                repo,
                "restore",
                result="FAIL",
                snapshot=snapshot.id,
                catalog_ids=[s.catalog_id for s in studies],
                target=str(Path(args.target).absolute()),
            )
            raise
        record_audit(
            repo,
            "restore",
            result="FAIL" if result.problems else "PASS",
            snapshot=snapshot.id,
            catalog_ids=[s.catalog_id for s in studies],
            target=str(Path(args.target).absolute()),
            details={"files": result.files, "bytes": result.bytes, "whole": not includes},
        )
    seconds = max((datetime.now(UTC) - started).total_seconds(), 1e-9)
    for path, reason in result.problems:
        print(f"vault: error: {path}: {reason}", file=sys.stderr)
    if opt(args, "json"):
        emit_json(
            {
                "snapshot_id": snapshot.id,
                "target": str(Path(args.target).absolute()),
                "files": result.files,
                "dirs": result.dirs,
                "symlinks": result.symlinks,
                "bytes": result.bytes,
                "bytes_downloaded": result.bytes_downloaded,
                "requests": result.requests,
                "studies": [s.catalog_id for s in studies],
                "verified_files": result.verified if verify else None,
                "duration_seconds": round(seconds, 3),
                "problems": [{"path": p, "reason": r} for p, r in result.problems],
                "storage_requests": request_stats(repo),
                "outcome": "FAIL" if result.problems else "PASS",
            }
        )
    else:
        verified = f", {result.verified} verified against SHA-256" if verify else ""
        print(
            f"restored {result.files} files, {result.dirs} directories, {result.symlinks} "
            f"symlinks ({human_bytes(result.bytes)}) from snapshot {ids.short(snapshot.id)} "
            f"to {args.target} in {seconds:.1f}s{verified}"
        )
    if result.problems:
        raise VaultError(f"{len(result.problems)} file(s) could not be restored correctly")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    repo = open_repo(args)
    percent = 100.0 if args.read_data else (args.read_data_subset or 0.0)
    with lock.Lock(repo.storage, repo.keyring, exclusive=False, operation="check"):
        result = check(repo, read_data_percent=percent, progress=progress_for(args))
    if opt(args, "json"):
        emit_json(
            {
                "requests": request_stats(repo),
                "outcome": "PASS" if result.ok else "FAIL",
                "snapshots": result.snapshots,
                "trees": result.trees,
                "packs": result.packs,
                "packs_read": result.packs_read,
                "bytes_read": result.bytes_read,
                "blobs_read": result.blobs_read,
                "unreferenced_packs": result.unreferenced_packs,
                "torn_objects": result.torn_objects,
                "findings": [
                    {"object": f.object, "problem": f.problem, "snapshots": list(f.snapshots)}
                    for f in result.findings
                ],
            }
        )
    else:
        for finding in result.findings:
            print(f"vault: error: {finding.describe()}", file=sys.stderr)
        read = (
            f", read {result.packs_read} packs ({human_bytes(result.bytes_read)})"
            if percent
            else ""
        )
        print(
            f"checked {result.snapshots} snapshots, {result.trees} trees, "
            f"{result.packs} packs{read}"
        )
        if result.torn_objects:
            print(
                f"{len(result.torn_objects)} empty object(s) left by interrupted uploads "
                "(harmless; prune removes them)"
            )
        if result.unreferenced_packs:
            print(
                f"{result.unreferenced_packs} pack(s) are not referenced by any index "
                "(left by an interrupted backup; harmless)"
            )
        print("no errors were found" if result.ok else f"{len(result.findings)} problem(s) found")
    if not result.ok:
        raise VaultError(f"check found {len(result.findings)} problem(s)")
    return 0


def cmd_object_lock_extend(args: argparse.Namespace) -> int:
    repo = open_repo(args)
    with lock.Lock(repo.storage, repo.keyring, exclusive=False, operation="object-lock"):
        result = extend_retention(
            repo, now=datetime.now(UTC), dry_run=args.dry_run, progress=progress_for(args)
        )
    if opt(args, "json"):
        emit_json(
            {
                "dry_run": args.dry_run,
                "checked": result.checked,
                "extended": result.extended,
                "retain_until": result.retain_until,
                "unneeded_packs_left_to_expire": result.unneeded_packs_left,
                "requests": request_stats(repo),
            }
        )
        return 0
    verb = "would extend" if args.dry_run else "extended"
    print(
        f"{verb} retention of {result.extended} of {result.checked} needed objects to "
        f"{result.retain_until}"
    )
    if result.unneeded_packs_left:
        print(f"{result.unneeded_packs_left} pack(s) no snapshot needs were left to expire")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    directory = policy_dir(args.policy_dir)
    policy = load_key_policy(directory)
    repo = open_repo(args)
    now = datetime.now(UTC)
    st = status(repo, policy, now, load_drill_policy(directory))
    drill = st.last_drill
    k = st.keys
    if opt(args, "json"):
        emit_json(
            {
                "repository": st.location,
                "repository_id": st.repository_id,
                "snapshots": st.snapshots,
                "last_backup": {
                    "snapshot_id": st.latest.id,
                    "time": iso_utc(st.latest.time),
                    "age_seconds": st.latest_age_seconds,
                    "files_not_saved": st.latest.stats.errors,
                }
                if st.latest
                else None,
                "keys": {
                    "current_epoch": k.current_epoch,
                    "epoch_created": k.epoch_created,
                    "epoch_age_seconds": k.epoch_age_seconds,
                    "epoch_objects": k.epoch_objects,
                    "rotation": k.rotation,
                    "reasons": k.reasons,
                    "destroyed_epochs": k.destroyed_epochs,
                    "slots": k.slots,
                    "policy": asdict(policy),
                },
                "last_drill": {
                    "drill_id": drill["drill_id"],
                    "started": drill["started"],
                    "result": drill["result"],
                    "age_seconds": st.drill_age_seconds,
                }
                if drill
                else None,
                "drill_overdue": st.drill_overdue,
                "locks": [
                    {"description": lk.describe(now), "stale": stale} for lk, stale in st.locks
                ],
                "outcome": "PASS" if st.ok else "FAIL",
            }
        )
    else:
        print(f"repository  {st.location} ({ids.short(st.repository_id)})")
        if st.latest and st.latest_age_seconds is not None:
            hours = st.latest_age_seconds / 3600
            print(
                f"last backup {local_time(st.latest.time)} ({hours:.1f} h ago), snapshot "
                f"{ids.short(st.latest.id)}; {st.snapshots} snapshot(s) in all"
            )
        else:
            print("last backup none yet")
        print(
            f"data key    epoch {k.current_epoch}, {k.epoch_age_seconds // 86400} days old, "
            f"{k.epoch_objects} objects: rotation {k.rotation}"
        )
        for reason in k.reasons:
            print(f"            {reason}; run `vault key rotate`")
        if drill and st.drill_age_seconds is not None:
            print(
                f"last drill  {drill['started'][:19]} UTC ({st.drill_age_seconds // 86400} days "
                f"ago): {drill['result']}" + ("; a new drill is due" if st.drill_overdue else "")
            )
        else:
            print("last drill  none yet: run `vault drill`")
        slots = ", ".join(f"{n} {kind}" for kind, n in sorted(k.slots.items()))
        print(f"key slots   {slots}")
        for lk, stale in st.locks:
            print(f"lock        {'stale ' if stale else ''}{lk.describe(now)}")
    return 0 if st.ok else 1


def cmd_unlock(args: argparse.Namespace) -> int:
    repo = open_repo(args)
    now = datetime.now(UTC)
    removed, kept = lock.remove_stale_locks(
        repo.storage, repo.keyring, force=args.remove_all, now=now
    )
    if opt(args, "json"):
        emit_json(
            {
                "removed": [lk.describe(now) for lk in removed],
                "kept": [lk.describe(now) for lk in kept],
            }
        )
        return 0
    for lk in removed:
        print(f"removed {lk.describe(now)}")
    for lk in kept:
        print(f"kept live {lk.describe(now)} (use --remove-all if you are sure it is gone)")
    if not removed and not kept:
        print("no locks")
    return 0


# -- entry points -------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return int(exc.code or 0)
    debug = bool(opt(args, "debug"))
    try:
        return int(args.func(args))
    except VaultError as exc:
        if debug:
            traceback.print_exc()
        print(f"vault: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("vault: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `vault ls … | head`: the reader left; not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:
        if debug:
            traceback.print_exc()
        where = f" {os.fsdecode(exc.filename)}" if exc.filename else ""
        print(f"vault: error:{where}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        if debug:
            traceback.print_exc()
        print(
            f"vault: internal error: {exc.__class__.__name__} (run with --debug for details)",
            file=sys.stderr,
        )
        return 1


def main_entry() -> None:
    sys.exit(main())
