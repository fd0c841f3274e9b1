"""A key reported compromised (NIST SP 800-57 Part 1 §5.3.4 and §8.3.2; HIPAA 164.308(a)(6)).

The workflow (`vault key compromised`): gather the facts a breach assessment needs while
everything is still sealed as it was (`assess`), mark the keys compromised so nothing new is
sealed under them (`mark_compromised`, rotating a current epoch away first), then re-encrypt
what they sealed and destroy them (vault.jobs.rotate.reencrypt). A compromised master key
exposes every epoch key, because the keyring it seals holds them all; its workflow also
replaces the master key and every slot (vault.jobs.rotate.rotate_master).

The facts name snapshots, catalog ids, counts and key custody; never a patient, a path inside
a study, or a secret.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from vault.errors import DAMAGE, IntegrityError, ObjectNotFound, UsageError
from vault.format import layout, sealing
from vault.format.tree import DIR, FILE
from vault.repo.keyring import DESTROYED
from vault.repo.keyusage import sealed_objects
from vault.repo.repository import Repository

_KIND_WORDS = {
    sealing.Kind.SNAPSHOT: "snapshot records",
    sealing.Kind.INDEX: "index objects",
    sealing.Kind.DRILL: "drill records",
    sealing.Kind.AUDIT: "audit events",
    sealing.Kind.LOCK: "locks",
    sealing.Kind.CATALOG: "study catalogs",
    sealing.Kind.SLOT_INFO: "key-slot names",
    sealing.Kind.STATE: "job state",
}


@dataclass
class ExposureFacts:
    """What the keys sealed, who could reach them and when: facts, no conclusions."""

    reported: str  # when vault was told (UTC, ISO)
    scope: str  # "epoch" or "master"
    epochs: list[dict[str, Any]] = field(default_factory=list)  # id, created, state before
    master: dict[str, Any] | None = None  # the master key's record, for a master compromise
    packs: int = 0
    pack_bytes: int = 0
    objects: dict[str, int] = field(default_factory=dict)  # other sealed objects, by kind
    snapshots: list[dict[str, Any]] = field(default_factory=list)  # id, time, host, paths, why
    study_catalog_ids: list[str] = field(default_factory=list)
    # Every slot that could open the keyring (and so the keys) when they were reported.
    slots: list[dict[str, str]] = field(default_factory=list)
    first_snapshot: str = ""
    last_snapshot: str = ""
    unreadable_catalogs: list[str] = field(default_factory=list)  # snapshots: studies unknown

    def to_json(self) -> dict[str, Any]:
        return {
            "reported": self.reported,
            "scope": self.scope,
            "epochs": self.epochs,
            "master": self.master,
            "packs": self.packs,
            "pack_bytes": self.pack_bytes,
            "objects": self.objects,
            "snapshots": self.snapshots,
            "study_catalog_ids": self.study_catalog_ids,
            "slots": self.slots,
            "first_snapshot": self.first_snapshot,
            "last_snapshot": self.last_snapshot,
            "unreadable_catalogs": self.unreadable_catalogs,
        }


def epochs_to_report(repo: Repository, epoch: int | None, *, master: bool) -> set[int]:
    """The epochs a report covers: EPOCH, or for the master key every epoch still held."""
    if master:
        return {e.id for e in repo.keyring.live_epochs()}
    assert epoch is not None
    try:
        found = repo.keyring.epoch(epoch)
    except KeyError:
        raise UsageError(f"there is no key epoch {epoch}") from None
    if found.state == DESTROYED:
        raise UsageError(
            f"key epoch {epoch} was already destroyed on {found.retired[:10]}: nothing it sealed "
            "is left to re-encrypt"
        )
    return {epoch}


def assess(repo: Repository, epoch_ids: set[int], *, master: bool) -> ExposureFacts:
    """Read what `epoch_ids` seal now (call before re-encryption rewrites it)."""
    repo.refresh_keyring()
    facts = ExposureFacts(
        reported=datetime.now(UTC).isoformat(timespec="seconds"),
        scope="master" if master else "epoch",
    )
    for e in repo.keyring.epochs:
        if e.id in epoch_ids:
            facts.epochs.append({"id": e.id, "created": e.created, "state": e.state})
    if master:
        m = repo.keyring.current_master
        facts.master = {"id": m.id, "created": m.created, "inferred": m.inferred}
    index = repo.load_index()
    sizes = {layout.id_of(i.key): i.size for i in repo.storage.list(layout.DATA)}
    exposed_packs = {p.id for p in index.packs() if p.epoch in epoch_ids}
    facts.packs = len(exposed_packs)
    facts.pack_bytes = sum(sizes.get(p, 0) for p in exposed_packs)
    kinds: Counter[str] = Counter()
    sealed_snapshots = set()
    for key, kind, epoch in sealed_objects(repo):
        if epoch in epoch_ids:
            kinds[_KIND_WORDS.get(sealing.Kind(kind), "other objects")] += 1
            if key.startswith(layout.SNAPSHOTS):
                sealed_snapshots.add(layout.id_of(key))
    facts.objects = dict(sorted(kinds.items()))
    studies: set[str] = set()
    memo: dict[str, bool] = {}  # tree id -> holds exposed data (trees are shared by snapshots)
    for snapshot in repo.snapshots():
        reasons = []
        if snapshot.id in sealed_snapshots:
            reasons.append("snapshot record")
        try:
            if _holds_data_in(repo, snapshot.tree, exposed_packs, memo):
                reasons.append("file data or directory listings")
        except (
            IntegrityError,
            ObjectNotFound,
            RecursionError,
        ):  # RecursionError: a hostile tree nested past the stack
            # A damaged repository is where a compromise is reported: a fact, not a stop.
            reasons.append("unknown: its trees cannot be read (damaged), so it may hold data")
        if not reasons:
            continue
        facts.snapshots.append(
            {
                "id": snapshot.id,
                "time": snapshot.time.isoformat(timespec="seconds"),
                "host": snapshot.host,
                "paths": list(snapshot.paths),
                "sealed": reasons,
            }
        )
        try:
            catalog = repo.load_catalog(snapshot)
        except DAMAGE:
            facts.unreadable_catalogs.append(snapshot.id)
            continue
        if catalog is not None:
            studies.update(s.catalog_id for s in catalog.studies.values())
    facts.study_catalog_ids = sorted(studies)
    times = sorted(s["time"] for s in facts.snapshots)
    facts.first_snapshot, facts.last_snapshot = (times[0], times[-1]) if times else ("", "")
    for slot in sorted(repo.slots(), key=lambda s: s.created):
        facts.slots.append(
            {
                "id": slot.id,
                "kind": slot.kind,
                "name": repo.slot_info(slot.id).get("name", ""),
                "created": slot.created,
            }
        )
    return facts


def _holds_data_in(repo: Repository, tree_id: str, packs: set[str], memo: dict[str, bool]) -> bool:
    """Whether the tree or anything reachable from it lives in one of `packs`; each tree is
    judged once however many snapshots share it (`memo`)."""
    if not packs:
        return False
    known = memo.get(tree_id)
    if known is not None:
        return known
    location = repo.index.lookup(bytes.fromhex(tree_id))
    found = location is not None and location.pack.id in packs
    nodes = [] if found else repo.load_tree(tree_id).nodes
    for node in nodes:
        if node.type == DIR and node.subtree:
            found = _holds_data_in(repo, node.subtree, packs, memo)
        elif node.type == FILE:
            found = any(
                (hit := repo.index.lookup(bytes.fromhex(c))) is not None and hit.pack.id in packs
                for c in node.chunks
            )
        if found:
            break
    memo[tree_id] = found
    return found


def mark_compromised(repo: Repository, epoch_ids: set[int], when: str) -> None:
    """Nothing is sealed under these keys from now on. Callers hold an exclusive lock."""
    repo.refresh_keyring()
    repo.keyring.mark_compromised(epoch_ids, when)
    repo.save_keyring()
