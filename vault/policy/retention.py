"""Retention: which snapshots a policy keeps, and why. A pure function; no storage, no clock.

Snapshots are grouped by host and source paths; each group is judged on its own, newest first:
- `keep_last` N: the N newest;
- `keep_daily/weekly/monthly/yearly` N: the newest snapshot of each of the N newest days /
  ISO weeks / months / years (UTC) that have snapshots;
- `minimum_days` D: every snapshot younger than D days, whatever the rules above say (state
  rules for dental records set such minimums);
- `hold_tags`: every snapshot carrying one of these tags (legal hold).
A snapshot is kept when any rule keeps it; every kept snapshot lists all the rules that did.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class RetentionPolicy:
    keep_last: int = 0
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0
    keep_yearly: int = 0
    minimum_days: int = 0
    hold_tags: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not (
            self.keep_last
            or self.keep_daily
            or self.keep_weekly
            or self.keep_monthly
            or self.keep_yearly
            or self.minimum_days
            or self.hold_tags
        )


@dataclass(frozen=True)
class SnapshotRef:
    id: str
    time: datetime  # timezone-aware
    host: str
    paths: tuple[str, ...]
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class Decision:
    snapshot: SnapshotRef
    keep: bool
    reasons: tuple[str, ...]


_BUCKETS: list[tuple[str, str, Callable[[datetime], object]]] = [
    ("keep_daily", "daily", lambda t: t.date()),
    ("keep_weekly", "weekly", lambda t: t.isocalendar()[:2]),
    ("keep_monthly", "monthly", lambda t: (t.year, t.month)),
    ("keep_yearly", "yearly", lambda t: t.year),
]


def _decide_group(
    group: list[SnapshotRef], policy: RetentionPolicy, now: datetime
) -> list[Decision]:
    newest_first = sorted(group, key=lambda s: (s.time, s.id), reverse=True)
    reasons: dict[str, list[str]] = {s.id: [] for s in newest_first}
    for s in newest_first[: policy.keep_last]:
        reasons[s.id].append(f"last {policy.keep_last}")
    for field_name, label, bucket_of in _BUCKETS:
        limit = getattr(policy, field_name)
        seen: list[object] = []
        for s in newest_first:
            bucket = bucket_of(s.time.astimezone(now.tzinfo))
            if bucket in seen:
                continue
            if len(seen) >= limit:
                break
            seen.append(bucket)
            reasons[s.id].append(f"{label} {limit}")
    if policy.minimum_days:
        cutoff = now - timedelta(days=policy.minimum_days)
        for s in newest_first:
            if s.time > cutoff:
                reasons[s.id].append(f"younger than {policy.minimum_days} days")
    for s in newest_first:
        held = sorted(set(s.tags) & set(policy.hold_tags))
        if held:
            reasons[s.id].append("hold tag " + ", ".join(held))
    return [Decision(s, bool(reasons[s.id]), tuple(reasons[s.id])) for s in newest_first]


def apply(
    snapshots: Iterable[SnapshotRef], policy: RetentionPolicy, now: datetime
) -> list[Decision]:
    """Decisions for every snapshot, groups in a stable order, newest first in each."""
    groups: dict[tuple[str, tuple[str, ...]], list[SnapshotRef]] = {}
    for s in snapshots:
        groups.setdefault((s.host, tuple(sorted(s.paths))), []).append(s)
    decisions: list[Decision] = []
    for key in sorted(groups):
        decisions.extend(_decide_group(groups[key], policy, now))
    return decisions
