"""The replicas this repository copies into, as its own record of each copy says
(vault.repo.jobstate REPLICAS, written by `vault copy`): one small object, not the audit log."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from vault.format.snapshot import Snapshot
from vault.jobs.copy.sync import destroyed_epochs
from vault.repo import jobstate
from vault.repo.repository import Repository


def replicas(repo: Repository, snapshots: list[Snapshot], now: datetime) -> list[dict[str, Any]]:
    """Each replica: its place and id, the last copy that passed and the first failure since,
    the epochs destroyed here whose erase had not reached it at its last copy, and its lag:
    the time from the newest snapshot it held after that copy to the newest snapshot here
    (0 when it has that one)."""
    known = (jobstate.load(repo, jobstate.REPLICAS) or {}).get("replicas", {})
    latest = snapshots[-1] if snapshots else None
    destroyed = destroyed_epochs(repo)
    found = []
    for place, entry in sorted(known.items()):
        holds = entry.get("holds_up_to")
        if latest is None:
            lag = 0
        elif not holds:  # never copied into: as far behind as the newest snapshot here is old
            lag = max(0, int((now - latest.time).total_seconds()))
        else:
            lag = max(0, int((latest.time - datetime.fromisoformat(holds)).total_seconds()))
        found.append(
            {
                "replica_id": entry.get("replica_id", ""),
                "location": place,
                "last_copy": entry.get("last_copy"),
                "failed_since": entry.get("failed_since"),
                "lag_seconds": lag,
                # Epochs erased here whose keys the replica still held at its last copy.
                # Only for a replica a copy passed for: an independent repository has keys of
                # its own, and a place no copy reached is no replica of this one's keys.
                "erase_pending": sorted(destroyed - set(entry.get("destroyed_epochs", [])))
                if entry.get("mode") == "replica"
                else [],
            }
        )
    return found


def replica_warnings(found: list[dict[str, Any]], rpo_hours: int) -> list[str]:
    """What `status` warns of for each replica `replicas` found: an erase it has not caught up
    with, a lag past the RPO, or copies failing since."""
    warnings = []
    for replica in found:
        name = replica["location"] or replica["replica_id"][:8]
        if replica["erase_pending"]:
            warnings.append(
                f"replica {name} still holds the keys of epoch(s) "
                f"{', '.join(map(str, replica['erase_pending']))} erased here: the erase is "
                f"not complete until `vault copy --to {name}` runs"
            )
        if replica["lag_seconds"] > rpo_hours * 3600:
            warnings.append(
                f"replica {name} is {replica['lag_seconds'] / 3600:.1f} h behind, more than its "
                f"RPO of {rpo_hours} h: run `vault copy --to` (see the scheduler's log)"
            )
        elif replica["failed_since"]:
            warnings.append(
                f"the copy into replica {name} has failed since {replica['failed_since'][:19]} "
                "UTC: see the scheduler's log, then run `vault copy --to`"
            )
    return warnings
