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
from vault.errors import PartialBackup, UsageError, VaultError
from vault.objectlock import extend_retention
from vault.output import TqdmProgress, emit_json, human_bytes, table
from vault.paths import display, inside_include, normalize
from vault.progress import NoProgress, Progress
from vault.repository import ObjectLockPolicy, Repository, ensure_exists
from vault.restore import RestoreOptions, restore, walk
from vault.snapshot import Snapshot
from vault.storage import CountingStorage, open_storage
from vault.tree import DIR, FILE, SYMLINK

ENVIRONMENT = """environment:
  VAULT_REPO           the repository, when --repo is not given
  VAULT_PASSWORD_FILE  file whose first line is the passphrase
  VAULT_PASSWORD       the passphrase itself (prefer a file or --password-command)"""

EXIT_CODES = """exit codes:
  0  success                     10  repository does not exist
  1  failure (check/restore)     11  repository is locked
  2  usage or configuration      12  wrong passphrase or key
  3  backup saved, but some source files could not be read"""


def _common() -> argparse.ArgumentParser:
    """Options accepted before or after the command (SUPPRESS keeps either from clobbering)."""
    p = argparse.ArgumentParser(add_help=False)
    s = argparse.SUPPRESS
    p.add_argument(
        "-r",
        "--repo",
        default=s,
        help="repository: a directory, file://PATH (default: $VAULT_REPO)",
    )
    p.add_argument(
        "--password-file",
        default=s,
        metavar="FILE",
        help="read the passphrase from the first line of FILE",
    )
    p.add_argument(
        "--password-command",
        default=s,
        metavar="CMD",
        help="run CMD and use the first line it prints as the passphrase",
    )
    p.add_argument("--key-file", default=s, metavar="FILE", help="open with a key file")
    p.add_argument("--json", action="store_true", default=s, help="print one JSON document")
    p.add_argument("-q", "--quiet", action="store_true", default=s, help="no progress bars")
    p.add_argument("--debug", action="store_true", default=s, help="show tracebacks")
    p.add_argument(
        "--allow-insecure-http",
        action="store_true",
        default=s,
        help="allow a plain-http S3 endpoint that is not on loopback (not for patient data)",
    )
    return p


def build_parser() -> argparse.ArgumentParser:
    common = _common()
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
        lambda a: _usage("object-lock"),
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

    p = command("check", "verify the repository's structure (and optionally its data)", cmd_check)
    group = p.add_mutually_exclusive_group()
    group.add_argument("--read-data", action="store_true", help="read and verify every pack")
    group.add_argument(
        "--read-data-subset",
        metavar="PCT",
        type=_percent,
        help="read and verify a random PCT%% of the packs",
    )

    p = command("unlock", "remove stale locks left by processes that are gone", cmd_unlock)
    p.add_argument("--remove-all", action="store_true", help="also remove locks that look live")

    p = command("key", "manage who can open the repository", lambda a: _usage("key"))
    key_sub = p.add_subparsers(dest="key_command", metavar="ACTION", required=True)

    def key_command(name: str, help_text: str, func: Callable[..., int]) -> argparse.ArgumentParser:
        kp = key_sub.add_parser(name, parents=[common], help=help_text, description=help_text)
        kp.set_defaults(func=func)
        return kp

    key_command("list", "list key slots and data-key epochs", cmd_key_list)
    kp = key_command("add", "add a passphrase slot, or a key-file slot for machines", cmd_key_add)
    what = kp.add_mutually_exclusive_group()
    what.add_argument("--new-password-file", metavar="FILE", help="the new passphrase's file")
    what.add_argument(
        "--new-key-file",
        metavar="FILE",
        help="create FILE (mode 0600) holding a new random key and add a slot for it",
    )
    kp = key_command("remove", "remove a key slot", cmd_key_remove)
    kp.add_argument("slot", metavar="ID", help="slot id or unique prefix")
    kp.add_argument("--force", action="store_true", help="allow removing the slot in use")
    kp = key_command("passwd", "change the passphrase of the slot in use", cmd_key_passwd)
    kp.add_argument("--new-password-file", metavar="FILE", help="the new passphrase's file")
    return parser


def _percent(text: str) -> float:
    try:
        value = float(text.rstrip("%"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a percentage") from None
    if not 0 < value <= 100:
        raise argparse.ArgumentTypeError("the percentage must be in (0, 100]")
    return value


def _usage(what: str) -> int:
    raise UsageError(f"`vault {what}` needs an action; see `vault {what} --help`")


# -- shared plumbing ------------------------------------------------------------------------------


def _opt(args: argparse.Namespace, name: str, default: Any = None) -> Any:
    return getattr(args, name, default)


def _repo_url(args: argparse.Namespace) -> str:
    url = _opt(args, "repo") or os.environ.get("VAULT_REPO")
    if not url:
        raise UsageError("no repository given: pass --repo or set VAULT_REPO")
    return str(url)


def _sources(args: argparse.Namespace) -> secrets_input.SecretSources:
    return secrets_input.SecretSources(
        _opt(args, "password_file"), _opt(args, "password_command"), _opt(args, "key_file")
    )


def _storage(args: argparse.Namespace) -> CountingStorage:
    url = _repo_url(args)
    return CountingStorage(
        open_storage(url, allow_insecure_http=bool(_opt(args, "allow_insecure_http")))
    )


def _requests(repo: Repository) -> dict[str, Any]:
    storage = repo.storage
    return storage.stats() if isinstance(storage, CountingStorage) else {}


def _open(args: argparse.Namespace) -> Repository:
    storage = _storage(args)
    # Fail on a missing repository before asking for a passphrase nobody can use.
    ensure_exists(storage)
    return Repository.open(storage, secrets_input.existing_secret(_sources(args)))


def _progress(args: argparse.Namespace) -> Progress:
    if _opt(args, "json") or _opt(args, "quiet") or not sys.stderr.isatty():
        return NoProgress()
    return TqdmProgress()


def _say(args: argparse.Namespace, text: str) -> None:
    """Human output: stdout normally, stderr when stdout carries JSON."""
    print(text, file=sys.stderr if _opt(args, "json") else sys.stdout)


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _local(t: datetime) -> str:
    return t.astimezone().strftime("%Y-%m-%d %H:%M:%S")


# -- commands -------------------------------------------------------------------------------------


def cmd_init(args: argparse.Namespace) -> int:
    storage = _storage(args)
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
    passphrase = secrets_input.new_passphrase(None, _sources(args))
    repo, recovery = Repository.init(
        storage, keys.Secret.from_passphrase(passphrase), object_lock=lock
    )
    if _opt(args, "json"):
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
    repo = _open(args)
    options = BackupOptions(
        tuple(args.paths), tuple(args.tag), tuple(args.exclude), when, args.host
    )
    started = datetime.now(UTC)
    result = backup(repo, options, _progress(args))
    seconds = max((datetime.now(UTC) - started).total_seconds(), 1e-9)
    _report_backup(args, result, seconds, _requests(repo))
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
    if _opt(args, "json"):
        emit_json(
            {
                "snapshot_id": snap.id,
                "time": _iso(snap.time),
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
                "requests": requests,
                "outcome": "FAIL" if result.errors else "PASS",
            }
        )
        return
    print(f"snapshot {ids.short(snap.id)} saved")
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
    snapshots = _open(args).snapshots()
    if _opt(args, "json"):
        emit_json([_snapshot_json(s) for s in snapshots])
        return 0
    rows = [
        [
            ids.short(s.id),
            _local(s.time),
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
        "time": _iso(s.time),
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
    repo = _open(args)
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
    if _opt(args, "json"):
        emit_json(
            [
                {
                    "path": display(i.path),
                    "type": i.node.type,
                    "mode": i.node.mode,
                    "uid": i.node.uid,
                    "gid": i.node.gid,
                    "size": i.node.size,
                    "mtime": _iso(datetime.fromtimestamp(i.node.mtime_ns / 1e9, UTC)),
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
    repo = _open(args)
    snapshot = repo.find_snapshot(args.snapshot)
    options = RestoreOptions(Path(args.target), tuple(args.include), args.overwrite, args.verify)
    started = datetime.now(UTC)
    with lock.Lock(repo.storage, repo.keyring, exclusive=False, operation="restore"):
        result = restore(repo, snapshot, options, _progress(args))
    seconds = max((datetime.now(UTC) - started).total_seconds(), 1e-9)
    for path, reason in result.problems:
        print(f"vault: error: {path}: {reason}", file=sys.stderr)
    if _opt(args, "json"):
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
                "verified_files": result.verified if args.verify else None,
                "duration_seconds": round(seconds, 3),
                "problems": [{"path": p, "reason": r} for p, r in result.problems],
                "storage_requests": _requests(repo),
                "outcome": "FAIL" if result.problems else "PASS",
            }
        )
    else:
        verified = f", {result.verified} verified against SHA-256" if args.verify else ""
        print(
            f"restored {result.files} files, {result.dirs} directories, {result.symlinks} "
            f"symlinks ({human_bytes(result.bytes)}) from snapshot {ids.short(snapshot.id)} "
            f"to {args.target} in {seconds:.1f}s{verified}"
        )
    if result.problems:
        raise VaultError(f"{len(result.problems)} file(s) could not be restored correctly")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    repo = _open(args)
    percent = 100.0 if args.read_data else (args.read_data_subset or 0.0)
    with lock.Lock(repo.storage, repo.keyring, exclusive=False, operation="check"):
        result = check(repo, read_data_percent=percent, progress=_progress(args))
    if _opt(args, "json"):
        emit_json(
            {
                "requests": _requests(repo),
                "outcome": "PASS" if result.ok else "FAIL",
                "snapshots": result.snapshots,
                "trees": result.trees,
                "packs": result.packs,
                "packs_read": result.packs_read,
                "bytes_read": result.bytes_read,
                "blobs_read": result.blobs_read,
                "unreferenced_packs": result.unreferenced_packs,
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
    repo = _open(args)
    with lock.Lock(repo.storage, repo.keyring, exclusive=False, operation="object-lock"):
        result = extend_retention(
            repo, now=datetime.now(UTC), dry_run=args.dry_run, progress=_progress(args)
        )
    if _opt(args, "json"):
        emit_json(
            {
                "dry_run": args.dry_run,
                "checked": result.checked,
                "extended": result.extended,
                "retain_until": result.retain_until,
                "unneeded_packs_left_to_expire": result.unneeded_packs_left,
                "requests": _requests(repo),
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


def cmd_unlock(args: argparse.Namespace) -> int:
    repo = _open(args)
    now = datetime.now(UTC)
    removed, kept = lock.remove_stale_locks(
        repo.storage, repo.keyring, force=args.remove_all, now=now
    )
    if _opt(args, "json"):
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


def cmd_key_list(args: argparse.Namespace) -> int:
    repo = _open(args)
    slots = sorted(repo.slots(), key=lambda s: s.created)
    epochs = repo.keyring.epochs
    if _opt(args, "json"):
        emit_json(
            {
                "slots": [
                    {
                        "id": s.id,
                        "kind": s.kind,
                        "created": s.created,
                        "kdf": {k: v for k, v in s.kdf.items() if k != "salt"},
                        "in_use": s.id == repo.slot_id,
                    }
                    for s in slots
                ],
                "epochs": [{"id": e.id, "created": e.created, "state": e.state} for e in epochs],
            }
        )
        return 0
    rows = [
        [("*" if s.id == repo.slot_id else " ") + ids.short(s.id), s.kind, s.created, s.kdf["name"]]
        for s in slots
    ]
    print(table(["SLOT", "KIND", "CREATED", "KDF"], rows))
    print("(* = the slot that opened the repository)")
    print()
    print(table(["EPOCH", "STATE", "CREATED"], [[str(e.id), e.state, e.created] for e in epochs]))
    return 0


def cmd_key_add(args: argparse.Namespace) -> int:
    repo = _open(args)
    if args.new_key_file:
        text = keys.new_key_file_text()
        try:
            fd = os.open(args.new_key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise UsageError(f"{args.new_key_file} already exists; choose a new file") from None
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        secret = keys.Secret(keys.KEYFILE, keys.parse_key_file(text, name=args.new_key_file))
    else:
        secret = keys.Secret.from_passphrase(secrets_input.new_passphrase(args.new_password_file))
    slot = repo.add_slot(secret)
    if _opt(args, "json"):
        emit_json({"id": slot.id, "kind": slot.kind, "created": slot.created})
    else:
        print(f"added key slot {ids.short(slot.id)} ({slot.kind})")
    return 0


def _resolve_slot(repo: Repository, prefix: str) -> keys.KeySlot:
    matches = [s for s in repo.slots() if s.id.startswith(prefix.lower())] if prefix else []
    if not matches:
        raise UsageError(f"no key slot matches {prefix!r}")
    if len(matches) > 1:
        raise UsageError(f"key slot prefix {prefix!r} is ambiguous")
    return matches[0]


def cmd_key_remove(args: argparse.Namespace) -> int:
    repo = _open(args)
    slot = _resolve_slot(repo, args.slot)
    if len(repo.slots()) <= 1:
        raise UsageError("refusing to remove the last key slot: the repository would be lost")
    if slot.id == repo.slot_id and not args.force:
        raise UsageError(f"slot {ids.short(slot.id)} is the one in use; pass --force to remove it")
    repo.remove_slot(slot.id)
    if _opt(args, "json"):
        emit_json({"removed": slot.id})
    else:
        print(f"removed key slot {ids.short(slot.id)} ({slot.kind})")
    return 0


def cmd_key_passwd(args: argparse.Namespace) -> int:
    repo = _open(args)
    current = next(s for s in repo.slots() if s.id == repo.slot_id)
    if current.kind != keys.PASSPHRASE:
        raise UsageError(
            "the repository was opened with a recovery key or key file; "
            "use `vault key add` to add a passphrase instead"
        )
    passphrase = secrets_input.new_passphrase(args.new_password_file)
    new_slot = repo.add_slot(keys.Secret.from_passphrase(passphrase))
    repo.remove_slot(current.id)  # only after the new slot is durable
    if _opt(args, "json"):
        emit_json({"id": new_slot.id, "replaced": current.id})
    else:
        print(
            f"passphrase changed: slot {ids.short(current.id)} replaced by {ids.short(new_slot.id)}"
        )
    return 0


# -- entry points -------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return int(exc.code or 0)
    debug = bool(_opt(args, "debug"))
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
