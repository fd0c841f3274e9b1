"""Status as a Prometheus textfile-collector file (node_exporter --collector.textfile.directory),
the form managed-service providers already scrape and alert on.

Written atomically (temporary file, then rename in the same directory) so the collector never
reads half a file. Labels carry the repository id only: no location, no secrets, no PHI.
"""

from __future__ import annotations

import os
import tempfile
from datetime import datetime
from pathlib import Path

from vault.evidence.status import LEVEL_FAIL, LEVEL_WARN, OK, OVERDUE, Status

_LEVEL_VALUE = {LEVEL_WARN: 1, LEVEL_FAIL: 2}


def _timestamp(iso: object) -> float | None:
    try:
        return datetime.fromisoformat(str(iso)).timestamp()
    except ValueError:
        return None


def render(st: Status) -> str:
    label = f'{{repository="{st.repository_id[:16]}"}}'
    lines: list[str] = []

    def metric(name: str, help_text: str, value: float | None) -> None:
        if value is None:
            return  # absent rather than a made-up zero: alert rules use absent() for "never"
        lines.append(f"# HELP vault_{name} {help_text}")
        lines.append(f"# TYPE vault_{name} gauge")
        lines.append(f"vault_{name}{label} {value:g}")

    check = st.last_check or {}
    drill = st.last_drill or {}
    metric("status", "overall status: 0 OK, 1 WARN, 2 FAIL", _LEVEL_VALUE.get(st.level, 0))
    metric("snapshots", "snapshots in the repository", st.snapshots)
    metric(
        "last_backup_timestamp_seconds",
        "time of the newest snapshot",
        st.latest.time.timestamp() if st.latest else None,
    )
    metric("last_backup_age_seconds", "age of the newest snapshot", st.latest_age_seconds)
    metric("rpo_seconds", "recovery-point objective from the policy", st.rpo_hours * 3600)
    metric(
        "last_backup_files_not_saved",
        "files the newest snapshot could not read",
        st.latest.stats.errors if st.latest else None,
    )
    metric("last_check_timestamp_seconds", "time of the last check", _timestamp(check.get("time")))
    metric(
        "last_check_success",
        "1 when the last check passed",
        (1 if check.get("outcome") == "PASS" else 0) if check else None,
    )
    metric(
        "all_packs_read_timestamp_seconds",
        "when every pack had last been read back and verified",
        _timestamp(check.get("all_packs_read")),
    )
    metric(
        "last_drill_timestamp_seconds", "start of the last drill", _timestamp(drill.get("started"))
    )
    metric(
        "last_drill_success",
        "1 when the last drill passed",
        (1 if drill.get("result") == "PASS" else 0) if drill else None,
    )
    metric("repository_bytes", "bytes stored in packs", st.space.stored_bytes)
    metric("dedup_ratio", "bytes in all snapshots / distinct bytes", round(st.space.dedup_ratio, 4))
    metric(
        "compression_ratio",
        "distinct bytes / stored bytes",
        round(st.space.compression_ratio, 4),
    )
    metric("key_epoch_age_seconds", "age of the current data-key epoch", st.keys.epoch_age_seconds)
    metric(
        "key_rotation_due",
        "0 ok, 1 due soon, 2 overdue",
        0 if st.keys.rotation == OK else 2 if st.keys.rotation == OVERDUE else 1,
    )
    return "\n".join(lines) + "\n"


def write(path: Path, text: str) -> None:
    directory = path.parent
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(temp, 0o644)  # node_exporter runs as another user; metrics hold no secrets
        os.replace(temp, path)
    except BaseException:
        os.unlink(temp)
        raise
