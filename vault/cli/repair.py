"""`vault repair index` (rebuild the index from the packs' own trailers) and `vault repair
snapshots` (copies of damaged snapshots holding everything still readable)."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from vault import ids
from vault.cli.output import emit_json
from vault.cli.support import (
    audit_forget,
    open_repo,
    opt,
    progress_for,
    record_audit,
    request_stats,
    usage,
)
from vault.errors import UsageError
from vault.jobs.check.checker import check
from vault.jobs.forget import remove_snapshots
from vault.jobs.repair import repair_index
from vault.jobs.salvage import Repaired, repair_snapshots
from vault.repo import lock
from vault.units import human_bytes


def add_repair_parsers(
    common: argparse.ArgumentParser, command: Callable[..., argparse.ArgumentParser]
) -> None:
    p = command("repair", "rebuild damaged or lost repository metadata", lambda a: usage("repair"))
    sub = p.add_subparsers(dest="repair_command", metavar="WHAT", required=True)
    r = sub.add_parser(
        "index",
        parents=[common],
        help="rebuild the index from every pack's sealed trailer",
        description="Read every pack's authenticated trailer, write one new index naming every "
        "readable pack, then remove the old index objects. Use it when check or any command "
        "reports an index object missing, unreadable or failing authentication, or packs that "
        "no index names. Packs whose trailers cannot be read are listed; run `vault check` "
        "afterwards to see which snapshots need them.",
    )
    r.set_defaults(func=cmd_repair_index)
    r.add_argument("--dry-run", action="store_true", help="read the packs, change nothing")
    s = sub.add_parser(
        "snapshots",
        parents=[common],
        help="write copies of damaged snapshots without the files that can no longer be read",
        description="Check the repository (with --read-data, every pack is read and every "
        "blob authenticated, finding damage inside intact packs too), then for each damaged "
        "snapshot write a new one holding everything still readable: files with an unreadable "
        "chunk and directories whose listing is unreadable are left out and every one of them "
        "is named. The new snapshot keeps the original's time, host, paths and tags, adds the "
        "tag 'repaired', and lists the lost paths among its errors. The originals stay unless "
        "--forget is given. Run `vault repair index` first if check reports index damage.",
    )
    s.set_defaults(func=cmd_repair_snapshots)
    s.add_argument(
        "snapshots", nargs="*", metavar="SNAPSHOT", help="only these (default: every damaged one)"
    )
    s.add_argument(
        "--read-data", action="store_true", help="read every pack to find damaged blobs too"
    )
    s.add_argument(
        "--forget", action="store_true", help="remove each original once its copy is written"
    )
    s.add_argument(
        "--dry-run", action="store_true", help="report what would be lost, write nothing"
    )


def cmd_repair_index(args: argparse.Namespace) -> int:
    repo = open_repo(args)
    with lock.Lock(repo.storage, repo.keyring, exclusive=True, operation="repair index"):
        result = repair_index(repo, dry_run=args.dry_run, progress=progress_for(args))
    if not args.dry_run:
        record_audit(
            repo,
            "repair-index",
            result="PASS" if not result.unreadable else "FAIL",
            details={"packs": result.packs, "unreadable_packs": len(result.unreadable)},
        )
    if opt(args, "json"):
        emit_json(
            {
                "dry_run": result.dry_run,
                "packs": result.packs,
                "blobs": result.blobs,
                "previously_unindexed_packs": result.previously_unindexed,
                "unreadable_packs": [{"object": o, "problem": p} for o, p in result.unreadable],
                "index_objects_replaced": result.index_objects_replaced,
                "index_objects_kept_under_object_lock": result.kept_locked,
                "requests": request_stats(repo),
                "outcome": "PASS" if not result.unreadable else "FAIL",
            }
        )
    else:
        verb = "would write" if result.dry_run else "wrote"
        print(
            f"{verb} a new index of {result.packs} packs ({result.blobs} blobs), replacing "
            f"{result.index_objects_replaced} index object(s)"
        )
        if result.previously_unindexed:
            print(f"{len(result.previously_unindexed)} pack(s) were named by no index before")
        for name in result.kept_locked:
            print(f"kept {name}: still under Object Lock retention")
        for name, problem in result.unreadable:
            print(f"vault: error: {name}: {problem}")
        if result.unreadable:
            print("run `vault check` to see which snapshots need the unreadable packs")
    return 1 if result.unreadable else 0


def cmd_repair_snapshots(args: argparse.Namespace) -> int:
    repo = open_repo(args)
    with lock.Lock(repo.storage, repo.keyring, exclusive=True, operation="repair snapshots"):
        checked = check(
            repo, read_data_percent=100.0 if args.read_data else 0.0, progress=progress_for(args)
        )
        wanted = {repo.find_snapshot(ref).id for ref in args.snapshots}
        damaged = {s for s in checked.lost if not wanted or s in wanted}
        if damaged and checked.unreferenced_packs:
            # Files whose packs are only unindexed (a lost index object) are not lost: copying
            # the snapshots without them, and forgetting the originals, would lose them.
            raise UsageError(
                f"{checked.unreferenced_packs} pack(s) are named by no index, so files they hold "
                "would count as lost; run `vault repair index` first, then repair snapshots "
                "again (nothing was changed)"
            )
        repaired = repair_snapshots(
            repo, repo.snapshots(), damaged, checked.usable(repo.index), dry_run=args.dry_run
        )
        forgotten: list[str] = []
        if args.forget and not args.dry_run:
            copied = [r.original.id for r in repaired if r.new_id]
            forgotten = remove_snapshots(repo, copied, audit_forget(repo))
    unsaved = [r for r in repaired if r.salvage.everything]
    if not args.dry_run:
        record_audit(
            repo,
            "repair-snapshots",
            result="FAIL" if unsaved else "PASS",
            details={
                "repaired": {r.original.id: r.new_id for r in repaired},
                "files_lost": sum(r.salvage.lost_files for r in repaired),
            },
        )
    if opt(args, "json"):
        emit_json(
            {
                "dry_run": args.dry_run,
                "snapshots": [_repaired_json(r) for r in repaired],
                "forgotten": forgotten,
                "requests": request_stats(repo),
                "outcome": "FAIL" if unsaved else "PASS",
            }
        )
    else:
        _print_repaired(repaired, args.dry_run, forgotten)
    return 1 if unsaved else 0


def _repaired_json(r: Repaired) -> dict[str, object]:
    return {
        "original": r.original.id,
        "new": r.new_id or None,
        "made_earlier": r.earlier,
        "lost_paths": r.salvage.lost,
        "lost_files": r.salvage.lost_files,
        "lost_bytes": r.salvage.lost_bytes,
    }


def _print_repaired(repaired: list[Repaired], dry_run: bool, forgotten: list[str]) -> None:
    if not repaired:
        print("no snapshot has lost anything: nothing to repair")
        return
    for r in repaired:
        lost = f"{r.salvage.lost_files} file(s), {human_bytes(r.salvage.lost_bytes)}"
        if r.salvage.everything:
            print(f"vault: error: snapshot {ids.short(r.original.id)}: nothing can be saved")
        elif r.earlier:
            print(
                f"snapshot {ids.short(r.original.id)} was repaired before: its copy is "
                f"{ids.short(r.new_id)}; it lost {lost}:"
            )
        elif dry_run:
            print(f"snapshot {ids.short(r.original.id)}: a copy would lose {lost}:")
        else:
            print(
                f"snapshot {ids.short(r.original.id)} -> {ids.short(r.new_id)} "
                f"(tagged repaired), lost {lost}:"
            )
        for path in r.salvage.lost:
            print(f"  {path}")
    if forgotten:
        print(f"forgot {len(forgotten)} original snapshot(s); `vault prune` frees their space")
