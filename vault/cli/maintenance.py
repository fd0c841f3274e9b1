"""Repository maintenance commands: `vault forget` (retention) and `vault prune`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from vault import ids
from vault.cli.output import emit_json, table
from vault.cli.support import (
    audit_forget,
    local_time,
    open_repo,
    opt,
    progress_for,
    record_audit,
    request_stats,
)
from vault.jobs.forget import forget
from vault.jobs.prune import PruneResult, prune
from vault.policy.files import load_retention_policy, policy_dir
from vault.repo import lock
from vault.units import human_bytes


def add_maintenance_parsers(command: Callable[..., argparse.ArgumentParser]) -> None:
    p = command("forget", "remove the snapshots the retention policy does not keep", cmd_forget)
    p.add_argument("--policy", metavar="FILE", help="a retention.toml (default: in --policy-dir)")
    p.add_argument("--policy-dir", metavar="DIR", help="directory with retention.toml")
    p.add_argument(
        "--dry-run", action="store_true", help="show keep/remove and why, change nothing"
    )
    p.add_argument("--prune", action="store_true", help="then reclaim the space (vault prune)")

    p = command("prune", "delete and repack data that no snapshot needs", cmd_prune)
    p.add_argument("--dry-run", action="store_true", help="report what would be freed")


def cmd_forget(args: argparse.Namespace) -> int:
    policy = load_retention_policy(
        Path(args.policy) if args.policy else None, policy_dir(args.policy_dir)
    )
    repo = open_repo(args)
    now = datetime.now(UTC)
    with lock.Lock(repo.storage, repo.keyring, exclusive=True, operation="forget"):
        result = forget(repo, policy, now, dry_run=args.dry_run, announce=audit_forget(repo))
        pruned = (
            prune(repo, now, progress=progress_for(args))
            if args.prune and not args.dry_run
            else None
        )
    if pruned is not None:
        record_audit(repo, "prune", result="PASS", details={"bytes_freed": pruned.bytes_freed})
    kept = sum(1 for d in result.decisions if d.keep) + len(result.locked)
    if opt(args, "json"):
        emit_json(
            {
                "dry_run": args.dry_run,
                "snapshots": [
                    {
                        "id": d.snapshot.id,
                        "time": d.snapshot.time.isoformat(),
                        "host": d.snapshot.host,
                        "paths": list(d.snapshot.paths),
                        "tags": list(d.snapshot.tags),
                        "keep": d.keep or d.snapshot.id in result.locked,
                        "reasons": list(d.reasons)
                        + (
                            [f"object lock until {result.locked[d.snapshot.id]}"]
                            if d.snapshot.id in result.locked
                            else []
                        ),
                    }
                    for d in result.decisions
                ],
                "removed": result.removed,
                "kept": kept,
                "prune": _prune_doc(pruned) if pruned else None,
            }
        )
        return 0
    rows = []
    for d in result.decisions:
        locked = result.locked.get(d.snapshot.id)
        action = "keep" if d.keep or locked else ("would remove" if args.dry_run else "removed")
        why = (
            ", ".join(d.reasons)
            if d.reasons
            else ("object lock until " + locked if locked else "no rule keeps it")
        )
        rows.append(
            [
                ids.short(d.snapshot.id),
                local_time(d.snapshot.time),
                d.snapshot.host,
                ",".join(d.snapshot.tags),
                action,
                why,
            ]
        )
    print(table(["ID", "TIME", "HOST", "TAGS", "ACTION", "WHY"], rows))
    removing = sum(1 for d in result.decisions if not d.keep) - len(result.locked)
    verb = "would remove" if args.dry_run else "removed"
    print(f"{verb} {removing} snapshot(s), keeping {kept}")
    if pruned is not None:
        _print_prune(pruned)
    elif not args.dry_run:
        print("run `vault prune` to reclaim their space")
    return 0


def _prune_doc(result: PruneResult) -> dict[str, Any]:
    return {
        "dry_run": result.dry_run,
        "packs_before": result.packs_before,
        "packs_deleted": result.packs_deleted,
        "packs_repacked": result.packs_repacked,
        "unindexed_packs_deleted": result.unindexed_deleted,
        "unindexed_packs_reindexed": result.unindexed_reindexed,
        "unreadable_packs_kept": [
            {"object": key, "problem": problem} for key, problem in result.unreadable_kept
        ],
        "bytes_freed": result.bytes_freed,
        "bytes_rewritten": result.bytes_rewritten,
        "locked_packs_left": result.locked_packs,
        "locked_bytes_left": result.locked_bytes,
    }


def _print_prune(result: PruneResult) -> None:
    verb = "would free" if result.dry_run else "freed"
    print(
        f"prune: {verb} {human_bytes(result.bytes_freed)}: {result.packs_deleted} unused and "
        f"{result.unindexed_deleted} orphaned pack(s) deleted, {result.packs_repacked} repacked "
        f"({human_bytes(result.bytes_rewritten)} rewritten)"
    )
    if result.locked_packs:
        print(
            f"prune: left {result.locked_packs} pack(s) ({human_bytes(result.locked_bytes)}) "
            "under Object Lock retention; they go once it ends"
        )
    if result.unindexed_reindexed:
        verb = "would index" if result.dry_run else "indexed"
        print(
            f"prune: {verb} {result.unindexed_reindexed} pack(s) again that no index named but "
            "snapshots need (an index object was lost or cut short); `vault check` confirms"
        )
    if result.unreadable_kept:
        key, problem = result.unreadable_kept[0]
        print(
            f"vault: warning: kept {len(result.unreadable_kept)} pack(s) that no index names "
            f"and whose trailer cannot be read (first: {key}: {problem}); `vault repair index` "
            "and `vault check` say more",
            file=sys.stderr,
        )


def cmd_prune(args: argparse.Namespace) -> int:
    repo = open_repo(args)
    now = datetime.now(UTC)
    with lock.Lock(repo.storage, repo.keyring, exclusive=True, operation="prune"):
        result = prune(repo, now, dry_run=args.dry_run, progress=progress_for(args))
    if not args.dry_run:
        record_audit(repo, "prune", result="PASS", details={"bytes_freed": result.bytes_freed})
    if opt(args, "json"):
        emit_json({**_prune_doc(result), "requests": request_stats(repo)})
    else:
        _print_prune(result)
    return 0
