"""The snapshot commands: `vault backup`, `snapshots`, `tag` and `ls` (restore: cli/restore.py)."""

from __future__ import annotations

import argparse
import stat
import sys
import threading
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from vault import ids
from vault.cli.output import emit_json, table
from vault.cli.pacs import endpoint_of, pacs_document, pacs_line
from vault.cli.support import (
    iso_utc,
    local_time,
    open_repo,
    opt,
    progress_for,
    record_audit,
    request_stats,
    sigterm_sets,
)
from vault.errors import PartialBackup, StorageError, UsageError, VaultError
from vault.format.paths import display, inside_include, normalize
from vault.format.snapshot import Snapshot
from vault.format.tree import DIR, FILE, SYMLINK
from vault.jobs.backup import BackupOptions, BackupResult, backup
from vault.jobs.restore.restorer import walk
from vault.jobs.studies import parse_date
from vault.policy.databases import DatabaseSource, load_database_sources, parse_url
from vault.policy.files import KeyPolicy, load_key_policy, policy_dir
from vault.repo import lock
from vault.repo.repository import Repository
from vault.units import human_bytes


def add_snapshot_parsers(command: Callable[..., argparse.ArgumentParser]) -> None:
    p = command(
        "backup",
        "back up files and directories, and database dumps (or a PACS), into a new snapshot",
        cmd_backup,
    )
    p.add_argument("paths", nargs="*", metavar="PATH", help="files or directories to back up")
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
    p.add_argument(
        "--policy-dir",
        metavar="DIR",
        help="directory with keys.toml (and pacs.toml) ($VAULT_POLICY_DIR)",
    )
    p.add_argument(
        "--from-pacs",
        metavar="NAME|AET@HOST:PORT",
        help="instead of paths: the studies this PACS holds (C-FIND), fetching (C-GET, or "
        'C-MOVE with retrieve = "move" in pacs.toml) only the instances the last PACS '
        "snapshot does not hold",
    )
    p.add_argument(
        "--since", metavar="DATE", help="with --from-pacs: only studies on or after DATE"
    )
    p.add_argument(
        "--staging",
        metavar="DIR",
        help="with --from-pacs: where fetched studies wait to be backed up, in a folder "
        "vault-pacs-NAME of their own that is emptied after (default ~/.cache/vault/pacs); "
        "keep it the same from night to night",
    )
    p.add_argument(
        "--allow-plain-dicom",
        action="store_true",
        help="with --from-pacs AET@HOST:PORT off this machine: allow plain DICOM",
    )
    p.add_argument(
        "--database",
        action="append",
        default=[],
        metavar="URL",
        help="also stream this database's dump into the snapshot (repeatable): "
        "mariadb://USER@HOST:PORT/DB?password_file=FILE, mysql://..., postgresql://..., or "
        "?socket=PATH instead of HOST:PORT; never a password in the URL (docs/databases.md)",
    )
    p.add_argument(
        "--policy-databases",
        action="store_true",
        help="also dump the [[database]] sources of backup.toml in --policy-dir",
    )
    p.add_argument(
        "--dumps-after-files",
        action="store_true",
        help="take the database dumps after the file walk (default: before it, so the "
        "images the database names are in the snapshot)",
    )

    command("snapshots", "list snapshots", cmd_snapshots)

    p = command(
        "tag",
        "add or remove tags of a snapshot, e.g. a legal hold (retention never forgets what "
        "retention.toml's hold_tags name)",
        cmd_tag,
    )
    p.add_argument("snapshot", metavar="SNAPSHOT", help="snapshot id, id prefix, or 'latest'")
    p.add_argument("--add", action="append", default=[], metavar="TAG", help="repeatable")
    p.add_argument("--remove", action="append", default=[], metavar="TAG", help="repeatable")

    p = command("ls", "list the files in a snapshot", cmd_ls)
    p.add_argument("snapshot", metavar="SNAPSHOT", help="snapshot id, id prefix, or 'latest'")
    p.add_argument("path", nargs="?", metavar="PATH", help="only this path and what is under it")


def _parse_time(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        return datetime.strptime(text, "%Y-%m-%d %H:%M:%S").astimezone(UTC)
    except ValueError:
        raise UsageError(f"--time {text!r} is not in the form 'YYYY-MM-DD HH:MM:SS'") from None


def _refuse_overdue_epoch(repo: Repository, policy: KeyPolicy) -> None:
    if not policy.refuse_overdue_epoch:
        return
    current = repo.keyring.epoch(repo.keyring.current_epoch)
    age = (datetime.now(UTC) - datetime.fromisoformat(current.created)).days
    if age >= policy.max_epoch_age_days:
        raise UsageError(
            f"the current data-key epoch {current.id} is {age} days old, past its usage period "
            f"of {policy.max_epoch_age_days} days (keys.toml): nothing is sealed under it any "
            "more; run `vault key rotate`, then the backup again"
        )


def cmd_backup(args: argparse.Namespace) -> int:
    when = _parse_time(args.time)
    databases = _database_sources(args)
    if args.from_pacs and (args.paths or databases):
        raise UsageError("--from-pacs backs up a PACS on its own: no PATH or --database with it")
    if not args.paths and not args.from_pacs and not databases:
        raise UsageError("say what to back up: PATH(s), --database URL, or --from-pacs NAME")
    if not args.from_pacs and (args.since or args.staging):
        raise UsageError("--since and --staging go with --from-pacs")
    if args.from_pacs and args.exclude:
        raise UsageError("--exclude goes with PATH(s): a PACS backup takes every instance")
    endpoint = endpoint_of(args, args.from_pacs) if args.from_pacs else None
    since = parse_date(args.since, "--since") if args.since else None
    repo = open_repo(args)
    _refuse_overdue_epoch(repo, load_key_policy(policy_dir(opt(args, "policy_dir"))))
    options = BackupOptions(
        tuple(args.paths),
        tuple(args.tag),
        tuple(args.exclude),
        when,
        args.host,
        databases=tuple(databases),
        dumps_after_files=args.dumps_after_files,
    )
    started = datetime.now(UTC)
    stop = threading.Event()
    pacs = None
    try:
        with sigterm_sets(stop):
            if endpoint is not None:
                # Imported here: pynetdicom and pydicom are for the backups that need them.
                from vault.jobs.pacs_backup import backup_from_pacs, default_staging, staging_dir

                staging = (
                    staging_dir(Path(args.staging), endpoint)
                    if args.staging
                    else default_staging(endpoint)
                )
                pacs = backup_from_pacs(repo, endpoint, staging=staging, since=since,
                                        tags=tuple(args.tag), time=when, host=args.host,
                                        progress=progress_for(args), stop=stop)  # fmt: skip
                assert pacs.backup is not None
                result = pacs.backup
            else:
                result = backup(repo, options, progress_for(args), stop=stop)
    except VaultError as exc:
        # A storage that just failed would fail the audit write too (after retries): skip it.
        # Otherwise the class only: a message can name a source path, and paths name patients.
        if not isinstance(exc, StorageError):
            record_audit(repo, "backup", result="FAIL", details={"error": type(exc).__name__})
        raise
    seconds = max((datetime.now(UTC) - started).total_seconds(), 1e-9)
    st = result.snapshot.stats
    partial = bool(result.errors) or bool(pacs is not None and pacs.problems)
    record_audit(
        repo,
        "backup",
        result="FAIL" if partial else "PASS",
        snapshot=result.snapshot.id,
        details={
            "files": st.files,
            "bytes": st.bytes,
            "bytes_added": st.bytes_added,
            "files_not_saved": st.errors,
            **(
                {"database_dumps": len(result.snapshot.databases)}
                if result.snapshot.databases
                else {}
            ),
            "duration_seconds": round(seconds, 3),
            **({"pacs_problems": len(pacs.problems)} if pacs is not None else {}),
        },
    )
    extra = {}
    if pacs is not None and endpoint is not None:
        extra = {"pacs": pacs_document(endpoint, pacs)}
        for problem in pacs.problems:
            print(f"vault: warning: PACS {endpoint.name}: {problem}", file=sys.stderr)
        if not opt(args, "json"):
            print(pacs_line(endpoint, pacs))
    _report_backup(args, result, seconds, request_stats(repo), extra)
    if pacs is not None and pacs.problems:
        raise PartialBackup(
            f"snapshot {ids.short(result.snapshot.id)} saved, but not everything the PACS "
            f"holds was fetched ({len(pacs.problems)} problem(s), listed above); the next "
            "run fetches what is missing"
        )
    dumps_failed = sum(1 for p in result.errors if not p.path.startswith("/"))
    if dumps_failed:
        raise PartialBackup(
            f"snapshot {ids.short(result.snapshot.id)} saved, but incomplete: "
            f"{dumps_failed} database dump(s) failed"
            + (
                f" and {len(result.errors) - dumps_failed} file(s) could not be read"
                if len(result.errors) > dumps_failed
                else ""
            )
            + " (listed above)"
        )
    if result.errors:
        raise PartialBackup(
            f"snapshot {ids.short(result.snapshot.id)} saved, but {len(result.errors)} "
            "file(s) could not be read (listed above)"
        )
    return 0


def _report_backup(
    args: argparse.Namespace,
    result: BackupResult,
    seconds: float,
    requests: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> None:
    snap, st = result.snapshot, result.snapshot.stats
    for problem in result.errors:
        if problem.path.startswith("/"):
            print(f"vault: error: cannot read {problem.path}: {problem.reason}", file=sys.stderr)
        else:  # a database dump: its reason names the source, the tool and the cause
            print(f"vault: error: {problem.reason}", file=sys.stderr)
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
        assert catalog is not None
        why = catalog.unparseable_reasons.get(path, "its header cannot be parsed")
        print(
            f"vault: warning: {path} is DICOM but {why}: saved byte for byte, in no study",
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
                "packs_adopted": result.packs_adopted,
                "throughput_bytes_per_second": round(st.bytes_read / seconds),
                "errors": [asdict(p) for p in result.errors],
                "changed_during_read": [asdict(p) for p in result.unstable],
                "studies": len(catalog.studies) if catalog else 0,
                "databases": list(snap.databases),
                "walk": snap.walk,
                "unparseable_dicom": [
                    {"path": p, "reason": catalog.unparseable_reasons.get(p, "")}
                    for p in catalog.unparseable
                ]
                if catalog
                else [],
                "requests": requests,
                "outcome": "FAIL"
                if result.errors or (extra or {}).get("pacs", {}).get("problems")
                else "PASS",
                **(extra or {}),
            }
        )
        return
    print(f"snapshot {ids.short(snap.id)} saved")
    if result.packs_adopted:
        print(
            f"  resumed: {result.packs_adopted} pack(s) uploaded by an interrupted run were "
            "indexed instead of sent again"
        )
    if catalog and (catalog.studies or catalog.unparseable):
        unread = (
            f"; {len(catalog.unparseable)} DICOM file(s) in no study (warnings above)"
            if catalog.unparseable
            else ""
        )
        print(f"  DICOM studies: {len(catalog.studies)} (vault studies lists them){unread}")
    for line in _dump_lines(snap):
        print(line)
    print(
        f"  files: {st.files} ({st.files_new} new, {st.files_changed} changed, "
        f"{st.files_unchanged} unchanged), {st.dirs} directories, {human_bytes(st.bytes)}"
    )
    print(
        f"  read {human_bytes(st.bytes_read)}, added {human_bytes(st.bytes_added)} "
        f"({human_bytes(st.bytes_stored)} stored) in {seconds:.1f}s "
        f"({human_bytes(st.bytes_read / seconds)}/s)"
    )


def _database_sources(args: argparse.Namespace) -> list[DatabaseSource]:
    sources = [parse_url(url) for url in args.database]
    if args.policy_databases:
        directory = policy_dir(opt(args, "policy_dir"))
        if directory is None:
            raise UsageError("--policy-databases needs --policy-dir (or $VAULT_POLICY_DIR)")
        sources += load_database_sources(directory)
    names = [s.name for s in sources]
    for name in names:
        if names.count(name) > 1:
            raise UsageError(
                f"two database sources are named {name!r}: give one ?name=... in its URL"
            )
    return sources


def _dump_lines(snapshot: Snapshot) -> list[str]:
    lines = []
    for record in snapshot.databases:
        if record.get("result") == "PASS":
            lines.append(
                f"  database {record['source']}/{record['database']}: "
                f"{human_bytes(record.get('bytes', 0))} dumped into {record['path']} "
                f"in {record.get('seconds', 0):.1f}s"
            )
    return lines


def cmd_tag(args: argparse.Namespace) -> int:
    if not args.add and not args.remove:
        raise UsageError("nothing to change: give --add TAG or --remove TAG")
    bad = [t for t in [*args.add, *args.remove] if not t or "," in t or t != t.strip()]
    if bad:
        raise UsageError(f"{bad[0]!r} is not a tag (no commas, no surrounding spaces)")
    repo = open_repo(args)
    with lock.Lock(repo.storage, repo.keyring, exclusive=True, operation="tag"):
        snapshot = repo.find_snapshot(args.snapshot)
        missing = [t for t in args.remove if t not in snapshot.tags]
        if missing:
            raise UsageError(f"snapshot {ids.short(snapshot.id)} has no tag {missing[0]!r}")
        tags = tuple(t for t in snapshot.tags if t not in args.remove)
        tags += tuple(t for t in dict.fromkeys(args.add) if t not in tags)
        changed = repo.retag_snapshot(snapshot, tags)
    record_audit(
        repo,
        "tag",
        result="PASS",
        snapshot=snapshot.id,
        details={"added": args.add, "removed": args.remove, "tags": list(changed.tags)},
    )
    if opt(args, "json"):
        emit_json(_snapshot_json(changed))
    else:
        print(f"snapshot {ids.short(changed.id)} tags: {', '.join(changed.tags) or '(none)'}")
    return 0


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
