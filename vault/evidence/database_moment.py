"""When a snapshot's database dumps and its file walk ran, and how far apart: for `status`
and the evidence pack."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from vault.format.snapshot import Snapshot


def database_moment(snapshot: Snapshot | None) -> dict[str, Any] | None:
    """When a snapshot's database dumps and its file walk ran, and their skew: for each dump,
    the longest time between the database's moment (its dump's start: one transaction) and a
    file being read. None for a snapshot without dumps."""
    if snapshot is None or not snapshot.databases:
        return None
    walk = snapshot.walk
    dumps: list[dict[str, Any]] = []
    skews: list[float] = []
    for record in snapshot.databases:
        entry: dict[str, Any] = {
            k: record.get(k)
            for k in ("source", "database", "result", "started", "finished", "bytes")
        }
        if walk and record.get("started"):
            moment = datetime.fromisoformat(record["started"])
            skew = max(
                abs((datetime.fromisoformat(walk["started"]) - moment).total_seconds()),
                abs((datetime.fromisoformat(walk["finished"]) - moment).total_seconds()),
            )
            entry["skew_seconds"] = round(skew, 3)
            skews.append(skew)
        dumps.append(entry)
    return {
        "snapshot_id": snapshot.id,
        "dumps": dumps,
        "files_walked": walk,
        "skew_seconds": round(max(skews), 3) if skews else None,
    }
