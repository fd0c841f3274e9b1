"""The tiers of a prioritised restore: which files and links each holds, in which order.

A file belongs to the first tier that claims it (restore.toml, vault.policy.restore_priority);
what no tier claims forms a last tier, so the tiers always cover the whole restore. Within a
studies tier the newest study (by the catalog's study date) comes first; within a paths tier
the snapshot's own order is kept. "Within N days" counts back from the snapshot's date, not
from today: the studies of the 90 days before the server died are the ones the practice needs,
however long after that the restore runs.
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from vault.dicom.catalog import Catalog, Study
from vault.format.tree import FILE, SYMLINK
from vault.jobs.restore.entries import Entry
from vault.policy.restore_priority import REST_NAME, RestorePriority, RestoreTier


@dataclass
class TierPlan:
    number: int  # from 1
    name: str
    entries: list[Entry]  # files and symlinks, in restore order
    note: str = ""  # why a tier claims less than it might (no catalog, nothing matched)

    @property
    def files(self) -> list[Entry]:
        return [e for e in self.entries if e.node.type == FILE]

    @property
    def bytes(self) -> int:
        return sum(e.node.size for e in self.files)


def single_tier(entries: list[Entry]) -> list[TierPlan]:
    """An unprioritised restore: one tier, everything, in the snapshot's order."""
    return [TierPlan(1, "everything", [e for e in entries if e.node.type in (FILE, SYMLINK)])]


def plan_tiers(
    entries: list[Entry],
    priority: RestorePriority,
    catalog: Catalog | None,
    snapshot_time: datetime,
) -> list[TierPlan]:
    # Keyed by the raw path: names that are not UTF-8 are distinct bytes, whatever they print as.
    leaves = {e.path: e for e in entries if e.node.type in (FILE, SYMLINK)}
    claimed: set[bytes] = set()
    plans: list[TierPlan] = []
    for number, tier in enumerate(priority.tiers, start=1):
        order: list[bytes] = []
        note = ""
        if tier.studies:
            if catalog is None:
                note = "the snapshot has no study catalog"
            else:
                studies = _studies(catalog, tier, snapshot_time)
                # The catalog names files as backup decoded them (os.fsdecode); only names that
                # are files of this restore count, so a catalog can reorder, never add.
                order += [
                    os.fsencode(path)
                    for study in studies
                    for path in study.files
                    if isinstance(path, str)
                ]
        if tier.paths:
            order += [path for path in leaves if _claims(tier.paths, os.fsdecode(path))]
        chosen = []
        for path in order:
            if path in leaves and path not in claimed:
                claimed.add(path)
                chosen.append(leaves[path])
        if not chosen and not note:
            note = "nothing in this restore matches it"
        plans.append(TierPlan(number, tier.name, chosen, note))
    rest = [e for path, e in leaves.items() if path not in claimed]
    if rest:
        plans.append(TierPlan(len(plans) + 1, REST_NAME, rest))
    if sum(len(p.entries) for p in plans) != len(leaves):  # every file once: never lose one
        raise AssertionError("restore tiers do not cover every file exactly once")
    return plans


def _studies(catalog: Catalog, tier: RestoreTier, snapshot_time: datetime) -> list[Study]:
    cutoff = None
    if tier.within_days is not None:
        cutoff = snapshot_time.date() - timedelta(days=tier.within_days)
    dated = [(_study_date(s), s) for s in catalog.studies.values()]
    if cutoff is not None:
        dated = [(d, s) for d, s in dated if d is not None and d >= cutoff]
    # Newest first; undated studies (only in an unlimited tier) last; ties by catalog id.
    dated.sort(key=lambda ds: (ds[0] is None, -(ds[0] or date.min).toordinal(), ds[1].catalog_id))
    return [s for _, s in dated]


def _study_date(study: Study) -> date | None:
    text = str(study.study_date).strip().replace("-", "").replace(".", "")
    try:
        return datetime.strptime(text[:8], "%Y%m%d").date() if len(text) >= 8 else None
    except ValueError:
        return None


def _claims(patterns: tuple[str, ...], path: str) -> bool:
    """A pattern claims a path when it matches the whole path, its name, or any folder above
    it (by its path or its name), as backup's excludes do."""
    parts = path.split("/")
    for end in range(len(parts), 1, -1):
        prefix, name = "/".join(parts[:end]), parts[end - 1]
        if any(fnmatch.fnmatchcase(prefix, g) or fnmatch.fnmatchcase(name, g) for g in patterns):
            return True
    return False
