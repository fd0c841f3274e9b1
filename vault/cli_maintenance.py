"""Repository maintenance commands: `vault forget` (retention)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from vault import ids, lock
from vault.cli_support import local_time, open_repo, opt, record_audit
from vault.forget import forget
from vault.output import emit_json, table
from vault.policy import load_retention_policy, policy_dir


def add_maintenance_parsers(command: Callable[..., argparse.ArgumentParser]) -> None:
    p = command("forget", "remove the snapshots the retention policy does not keep", cmd_forget)
    p.add_argument("--policy", metavar="FILE", help="a retention.toml (default: in --policy-dir)")
    p.add_argument("--policy-dir", metavar="DIR", help="directory with retention.toml")
    p.add_argument(
        "--dry-run", action="store_true", help="show keep/remove and why, change nothing"
    )


def cmd_forget(args: argparse.Namespace) -> int:
    policy = load_retention_policy(
        Path(args.policy) if args.policy else None, policy_dir(args.policy_dir)
    )
    repo = open_repo(args)
    now = datetime.now(UTC)
    with lock.Lock(repo.storage, repo.keyring, exclusive=True, operation="forget"):
        result = forget(repo, policy, now, dry_run=args.dry_run)
    if not args.dry_run:
        record_audit(repo, "forget", result="PASS", details={"removed": len(result.removed)})
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
    print(
        f"{verb} {removing} snapshot(s), keeping {kept}; run `vault prune` (coming) to "
        "reclaim their space"
    )
    return 0
