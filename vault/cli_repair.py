"""`vault repair index`: rebuild the index from the packs' own trailers."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from vault import lock
from vault.cli_support import open_repo, opt, progress_for, record_audit, request_stats, usage
from vault.output import emit_json
from vault.repair import repair_index


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
