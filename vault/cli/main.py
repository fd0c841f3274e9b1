"""The command line: parse arguments, run a job, print results, map errors to exit codes.

`main(argv) -> int` is the only place an exception becomes an exit code (vault.errors). JSON
goes to stdout as one document; messages, warnings and progress go to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import resource
import sys
import traceback
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from vault import __version__, ids
from vault.cli import recovery_key
from vault.cli.drill import add_drill_parsers
from vault.cli.init import cmd_init
from vault.cli.keys import add_key_parsers
from vault.cli.maintenance import add_maintenance_parsers
from vault.cli.output import emit_json
from vault.cli.pacs import add_pacs_parsers
from vault.cli.repair import add_repair_parsers
from vault.cli.replicas import add_other_repo_options, add_replica_parsers
from vault.cli.restore import add_restore_parser
from vault.cli.schedule import add_schedule_parsers
from vault.cli.snapshots import add_snapshot_parsers
from vault.cli.status import add_status_parsers
from vault.cli.studies import add_study_parsers
from vault.cli.support import (
    ENVIRONMENT,
    EXIT_CODES,
    common_options,
    iso_utc,
    open_repo,
    opt,
    percent_arg,
    progress_for,
    record_audit,
    request_stats,
    sigterm_interrupts,
    usage,
)
from vault.errors import VaultError
from vault.jobs.check.checker import CheckResult, check
from vault.jobs.objectlock import extend_retention
from vault.repo import jobstate, lock
from vault.repo.repository import Repository
from vault.units import human_bytes


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
    p.add_argument("--recovery-key-file", metavar="FILE", help=recovery_key.OPTION_HELP)
    p.add_argument(
        "--baa-acknowledged",
        action="store_true",
        help="the storage provider has signed a Business Associate Agreement with the practice "
        "(HIPAA 164.308(b)); recorded and shown in the evidence pack (asked on a terminal)",
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
    p.add_argument(
        "--replica-of",
        metavar="SRC",
        help="make this repository a replica of SRC for `vault copy`: the same chunking and "
        "data keys (packs copy as stored), its own passphrase, recovery key, locks and Object "
        "Lock; SRC is opened with --from-* (default: the same secret)",
    )
    add_other_repo_options(p, "from", "source")

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

    add_snapshot_parsers(command)
    add_restore_parser(command)

    add_study_parsers(command)
    add_drill_parsers(common, command)
    add_maintenance_parsers(command)
    add_status_parsers(command)
    add_schedule_parsers(common, command)
    add_repair_parsers(common, command)
    add_pacs_parsers(common, command)

    p = command("check", "verify the repository's structure (and optionally its data)", cmd_check)
    p.description = (
        "Verify that every snapshot can be restored from what is stored — snapshots, trees,\n"
        "index and packs — and every other object: study catalogs, the audit and drill\n"
        "chains, key slots, and snapshots the audit log says should exist. With --read-data\n"
        "every byte is read and authenticated. Each problem names the object and the\n"
        "snapshots it affects, and each damaged snapshot the files it can no longer restore\n"
        "(`vault repair snapshots` saves the rest). A storage outage stops the check with\n"
        "its cause; it is never reported as damage."
    )
    group = p.add_mutually_exclusive_group()
    group.add_argument("--read-data", action="store_true", help="read and verify every pack")
    group.add_argument(
        "--read-data-subset",
        metavar="PCT",
        type=percent_arg,
        help="read and verify the next PCT%% of the packs, continuing where the last partial "
        "check stopped (so every pack is read in turn)",
    )

    p = command("unlock", "remove stale locks left by processes that are gone", cmd_unlock)
    p.add_argument("--remove-all", action="store_true", help="also remove locks that look live")

    add_key_parsers(common, command)
    add_replica_parsers(command)
    return parser


# -- commands -------------------------------------------------------------------------------------


LOST_SHOWN = 10  # paths named per damaged snapshot on a terminal (--json lists every one)


def cmd_check(args: argparse.Namespace) -> int:
    repo = open_repo(args)
    percent = 100.0 if args.read_data else (args.read_data_subset or 0.0)
    started = datetime.now(UTC)
    with lock.Lock(repo.storage, repo.keyring, exclusive=False, operation="check"):
        previous = jobstate.load(repo, jobstate.CHECK) or {}
        result = check(
            repo,
            read_data_percent=percent,
            progress=progress_for(args),
            start_after=str(previous.get("position", "")),
        )
        _remember_check(repo, previous, result, percent, started)
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
                "lost": {
                    snapshot_id: {"paths": lost.lost, "files": lost.lost_files}
                    for snapshot_id, lost in result.lost.items()
                },
            }
        )
    else:
        for finding in result.findings:
            print(f"vault: error: {finding.describe()}", file=sys.stderr)
        for snapshot_id, lost in result.lost.items():
            shown = ", ".join(lost.lost[:LOST_SHOWN])
            more = f" and {len(lost.lost) - LOST_SHOWN} more" if len(lost.lost) > LOST_SHOWN else ""
            print(
                f"snapshot {ids.short(snapshot_id)} can no longer restore: {shown}{more}",
                file=sys.stderr,
            )
        if any(not lost.everything for lost in result.lost.values()):
            print(
                "`vault repair snapshots` writes copies of these snapshots holding everything "
                "still readable",
                file=sys.stderr,
            )
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
            # An empty index object may be a lost one: harmless only when nothing a snapshot
            # needs went missing with it (the findings say).
            why = (
                "harmless: nothing a snapshot needs is missing; prune removes them"
                if result.ok
                else "if the problems above name missing index entries, `vault repair index` "
                "indexes their packs again"
            )
            print(
                f"{len(result.torn_objects)} empty object(s) (interrupted uploads or lost "
                f"writes: {', '.join(result.torn_objects[:3])}); {why}"
            )
        if result.unreferenced_packs and result.ok:
            print(
                f"{result.unreferenced_packs} pack(s) are not referenced by any index "
                "(left by an interrupted backup; harmless)"
            )
        elif result.unreferenced_packs:
            print(
                f"{result.unreferenced_packs} pack(s) are not referenced by any index: if the "
                "problems above name missing index entries, `vault repair index` rebuilds the "
                "index from the packs themselves"
            )
        print("no errors were found" if result.ok else f"{len(result.findings)} problem(s) found")
    if not result.ok:
        raise VaultError(f"check found {len(result.findings)} problem(s)")
    return 0


def _remember_check(
    repo: Repository, previous: dict[str, Any], result: CheckResult, percent: float, when: datetime
) -> None:
    """Keep the outcome for `status` and the read position for the next partial check; log it."""
    outcome = "PASS" if result.ok else "FAIL"
    state = {
        "time": iso_utc(when),
        "outcome": outcome,
        "findings": len(result.findings),
        "read_percent": percent,
        "packs_read": result.packs_read,
        "position": result.last_pack_read if 0 < percent < 100 else previous.get("position", ""),
        # When every pack was last read: a full read, or a rotation that came round again.
        "all_packs_read": iso_utc(when)
        if percent >= 100 or result.wrapped
        else previous.get("all_packs_read", ""),
    }
    try:
        jobstate.save(repo, jobstate.CHECK, state)
    except VaultError as exc:
        print(f"vault: warning: could not record the check's position: {exc}", file=sys.stderr)
    details = {k: state[k] for k in ("findings", "read_percent", "packs_read")}
    record_audit(repo, "check", result=outcome, details=details)


def cmd_object_lock_extend(args: argparse.Namespace) -> int:
    repo = open_repo(args)
    with lock.Lock(repo.storage, repo.keyring, exclusive=False, operation="object-lock"):
        result = extend_retention(
            repo, now=datetime.now(UTC), dry_run=args.dry_run, progress=progress_for(args)
        )
    if not args.dry_run:
        record_audit(
            repo,
            "object-lock-extend",
            result="PASS",
            details={"extended": result.extended, "retain_until": str(result.retain_until)},
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


def cmd_unlock(args: argparse.Namespace) -> int:
    repo = open_repo(args)
    now = datetime.now(UTC)
    removed, kept = lock.remove_stale_locks(
        repo.storage, repo.keyring, force=args.remove_all, now=now
    )
    if removed:
        record_audit(
            repo,
            "unlock",
            result="PASS",
            details={"removed": [lk.describe(now) for lk in removed], "forced": args.remove_all},
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
        with sigterm_interrupts():
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
        where = f"{os.fsdecode(exc.filename)}: " if exc.filename else ""
        print(f"vault: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        if debug:
            traceback.print_exc()
        print(
            f"vault: internal error: {exc.__class__.__name__} (run with --debug for details)",
            file=sys.stderr,
        )
        return 1


_M_ARENA_MAX = -8  # glibc mallopt parameter


def _one_malloc_arena() -> None:
    """glibc gives every thread its own heap arena; with the backup's compression, upload and
    walk threads each keeping freed pages, peak memory grew by ~25 MiB (docs/benchmarks.md).
    One arena costs no measurable speed here: the threads spend their time in zstd and I/O."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).mallopt(_M_ARENA_MAX, 1)


_PR_SET_DUMPABLE = 4


def no_core_dumps() -> None:
    """A crash must never write keys to disk: no core file (RLIMIT_CORE 0), and on Linux not
    dumpable at all (no core through a pipe handler, no ptrace by other processes of the same
    user, /proc/<pid>/mem closed to them)."""
    with contextlib.suppress(OSError, ValueError):
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)


def main_entry() -> None:
    no_core_dumps()
    _one_malloc_arena()
    sys.exit(main())
