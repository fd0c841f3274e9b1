"""`vault check`, `vault unlock` and `vault object-lock extend`: keeping a repository sound,
unlocked and under retention."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from vault import ids
from vault.cli.output import emit_json
from vault.cli.support import (
    iso_utc,
    open_repo,
    opt,
    percent_arg,
    progress_for,
    record_audit,
    request_stats,
    usage,
)
from vault.errors import VaultError
from vault.jobs.check.checker import CheckResult, check
from vault.jobs.objectlock import extend_retention
from vault.repo import jobstate, lock
from vault.repo.repository import Repository
from vault.units import human_bytes


def add_object_lock_parser(
    common: argparse.ArgumentParser, command: Callable[..., argparse.ArgumentParser]
) -> None:
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


def add_check_parsers(command: Callable[..., argparse.ArgumentParser]) -> None:
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
