"""The drill log: drill records and their later review annotations, sealed and hash-chained in
`drills/` (never rewritten: a review is a record of its own), and the operator's local copy.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from vault.errors import UsageError
from vault.format import layout, sealing
from vault.repo import chain, signing
from vault.repo.repository import Repository
from vault.whoami import os_user

REVIEW_FIELDS = ("lessons_learned", "corrective_actions", "reviewer", "approved", "witness")


def store_record(repo: Repository, record: dict[str, Any]) -> dict[str, Any]:
    def build(seq: int, prev: str) -> dict[str, Any]:
        return signing.sign(repo, {**record, "slot": repo.slot_id, "seq": seq, "prev": prev})

    return chain.append(repo, layout.DRILLS, sealing.Kind.DRILL, build)


def annotate(repo: Repository, drill_id: str, fields: dict[str, Any]) -> dict[str, Any]:
    """Append review fields for a drill (records are never rewritten)."""
    history = chain.read(repo, layout.DRILLS, sealing.Kind.DRILL, "drill record")
    full_id = next(
        (
            r["drill_id"]
            for r in history.records
            if r.get("type") == "drill" and r.get("drill_id", "").startswith(drill_id)
        ),
        None,
    )
    if full_id is None:
        raise UsageError(f"no drill record matches {drill_id!r}")

    def build(seq: int, prev: str) -> dict[str, Any]:
        return signing.sign(
            repo,
            {
                "type": "annotation",
                "drill_id": full_id,
                "time": datetime.now(UTC).isoformat(),
                "os_user": os_user(),
                **fields,
                "slot": repo.slot_id,
                "seq": seq,
                "prev": prev,
            },
        )

    return chain.append(repo, layout.DRILLS, sealing.Kind.DRILL, build)


def history(repo: Repository, *, verify: bool = False) -> chain.ChainReport:
    report = chain.read(repo, layout.DRILLS, sealing.Kind.DRILL, "drill record", verify=verify)
    if verify:
        events = chain.read(repo, layout.AUDIT, sealing.Kind.AUDIT, "audit event").records
        keys = signing.known_keys(repo, events)
        legacy = signing.legacy_slots(repo, events) | signing.legacy_slots(repo, report.records)
        report.problems += signing.problems("drill record", report.records, keys, legacy)
    return report


def merged(report: chain.ChainReport) -> list[dict[str, Any]]:
    """Drill records with their later annotations applied (newest annotation wins)."""
    drills = {r["drill_id"]: dict(r) for r in report.records if r.get("type") == "drill"}
    for note in report.records:
        if note.get("type") == "annotation" and note.get("drill_id") in drills:
            for key in REVIEW_FIELDS:
                if note.get(key) not in (None, ""):
                    drills[note["drill_id"]][key] = note[key]
                    # When each review field was given: an auditor asks when, not only who.
                    drills[note["drill_id"]][f"{key}_at"] = note.get("time", "")
    return sorted(drills.values(), key=lambda r: r["seq"])


def local_copy_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "vault" / "drills"


def write_local_copy(record: dict[str, Any], directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = directory / f"{record['started'][:10]}-{record['drill_id']}.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(record, handle, indent=2, sort_keys=True)
        handle.write("\n")
    return path
