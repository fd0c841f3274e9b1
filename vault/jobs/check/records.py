"""`vault check` beyond snapshots, trees and packs: every other kind of object a repository holds.

* study catalogs: each snapshot's catalog authenticates and parses (a damaged one names the
  snapshot; its files still restore, but studies cannot be found in it);
* the audit log and the drill records: each event authenticates and the hash chain is
  unbroken, so an edited, substituted or deleted record in the middle is named;
* snapshots the audit log says vault made and never forgot, but which are gone: a snapshot
  deleted behind vault's back is otherwise invisible to a check (a listing cannot show what
  it no longer holds);
* key slots: each parses, and its digest matches the one recorded, sealed, when it was made
  (a slot cannot be opened without its own secret, so this is how a damaged one is found
  before the day it is needed);
* the small sealed state objects (`slotinfo/`, `state/`) authenticate, and the `version`
  object says what it must.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import asdict

from vault.dicom.catalog import parse_catalog
from vault.errors import DAMAGE, ObjectNotFound
from vault.format import layout, sealing
from vault.format.snapshot import Snapshot
from vault.repo import audit, chain, signing
from vault.repo.keys import KeySlot
from vault.repo.repository import Repository

Problem = tuple[str, str, set[str]]  # (object, what is wrong, snapshots affected)


def check_records(repo: Repository, snapshots: list[Snapshot]) -> list[Problem]:
    problems = _version(repo)
    problems += _keyring_generation(repo, snapshots)
    problems += _catalogs(repo, snapshots)
    report = audit.read_log(repo, verify=True)
    problems += [(layout.AUDIT, p, set()) for p in report.problems]
    problems += _vanished_snapshots(report.events, {s.id for s in snapshots}, repo)
    drills = chain.read(repo, layout.DRILLS, sealing.Kind.DRILL, "drill record", verify=True)
    problems += [(layout.DRILLS, p, set()) for p in drills.problems]
    events = [asdict(e) for e in report.events]
    keys = signing.known_keys(repo, events)
    legacy = signing.legacy_slots(repo, events) | signing.legacy_slots(repo, drills.records)
    problems += [
        (layout.DRILLS, p, set())
        for p in signing.problems("drill record", drills.records, keys, legacy)
    ]
    problems += _slots(repo) + _deleted_slots(repo)
    for prefix, kind in (
        (layout.SLOT_INFO, sealing.Kind.SLOT_INFO),
        (layout.STATE, sealing.Kind.STATE),
    ):
        problems += _sealed_objects(repo, prefix, kind)
    return problems


def _version(repo: Repository) -> list[Problem]:
    try:
        text = repo.storage.get(layout.VERSION)
    except DAMAGE as exc:
        return [(layout.VERSION, f"cannot be read: {exc}", set())]
    if text != layout.VERSION_TEXT:
        return [(layout.VERSION, "does not say this is a format 1 vault repository", set())]
    return []


def _keyring_generation(repo: Repository, snapshots: Iterable[Snapshot]) -> list[Problem]:
    """Every snapshot records the keyring generation it was written under; a keyring older
    than any of them was put back from an old copy (undoing rotations), even when this machine
    has never seen the repository before."""
    problems: list[Problem] = []
    newer = [s for s in snapshots if s.keyring_generation > repo.keyring.generation]
    if newer:
        latest = max(newer, key=lambda s: s.keyring_generation)
        problems.append(
            (
                layout.KEYRING,
                f"is generation {repo.keyring.generation}, older than generation "
                f"{latest.keyring_generation} that snapshot {latest.id[:8]} was written under: "
                "the keyring was rolled back to an old copy (key rotations undone); put the "
                "newest keyring back from a copy, or rotate again",
                {s.id for s in newer},
            )
        )
    # Backups record the generation they ran under: going down over time means a rolled-back
    # keyring was used in between (snapshots before generations existed record 0).
    highest: Snapshot | None = None
    for snapshot in sorted((s for s in snapshots if s.keyring_generation), key=lambda s: s.time):
        if highest is not None and snapshot.keyring_generation < highest.keyring_generation:
            problems.append(
                (
                    layout.snapshot(snapshot.id),
                    f"was written under keyring generation {snapshot.keyring_generation}, after "
                    f"snapshot {highest.id[:8]} under generation {highest.keyring_generation}: a "
                    "rolled-back keyring was in use (its data may be sealed under a retired "
                    "epoch; `vault key rotate --reencrypt` rewrites it)",
                    {snapshot.id},
                )
            )
        elif highest is None or snapshot.keyring_generation > highest.keyring_generation:
            highest = snapshot
    return problems


def _catalogs(repo: Repository, snapshots: Iterable[Snapshot]) -> list[Problem]:
    """Every catalog opens and parses. Each is authenticated; one whose bytes equal a catalog
    already parsed is not parsed again (nightly runs that changed no study store their
    parent's bytes, and parsing cost 0.1 s per snapshot of a 12,000-file archive)."""
    problems: list[Problem] = []
    parsed: set[bytes] = set()
    for snapshot in snapshots:
        if not snapshot.catalog:
            continue  # made before catalogs existed
        key = layout.catalog(snapshot.catalog)
        try:
            payload = repo.open_object(sealing.Kind.CATALOG, key)
            digest = hashlib.sha256(payload).digest()
            if digest not in parsed:
                parse_catalog(key, payload)
                parsed.add(digest)
        except DAMAGE as exc:
            problems.append(
                (
                    layout.catalog(snapshot.catalog),
                    f"study catalog unreadable ({exc}): the files restore, but studies cannot "
                    "be found in this snapshot",
                    {snapshot.id},
                )
            )
    return problems


def _vanished_snapshots(
    events: list[audit.AuditEvent], present: set[str], repo: Repository
) -> list[Problem]:
    """Snapshots a backup event names that no forget event removed and that are not there.
    A forget event without ids (written by an older vault) ends what can be known about the
    snapshots before it."""
    made: dict[str, str] = {}
    for event in events:
        if event.action == "backup" and event.snapshot:
            made[event.snapshot] = event.time
        elif event.action == "copy" and event.result == "PASS":
            for snapshot_id in event.details.get("snapshots") or []:
                made[str(snapshot_id)] = event.time
        elif event.action == "forget":
            removed = event.details.get("snapshots")
            if isinstance(removed, list):
                for snapshot_id in removed:
                    made.pop(str(snapshot_id), None)
            else:
                made.clear()
    return [
        (
            layout.snapshot(snapshot_id),
            f"is missing: the audit log records it as made by a backup or copy at {when} and never "
            "forgotten (deleted outside vault?)",
            {snapshot_id},
        )
        for snapshot_id, when in sorted(made.items())
        # An empty (torn) object counts as missing too: the event is written only after the
        # snapshot was read back whole.
        if snapshot_id not in present
    ]


def _slots(repo: Repository) -> list[Problem]:
    problems: list[Problem] = []
    for info in repo.storage.list(layout.KEYS):
        slot_id = layout.id_of(info.key)
        try:
            data = repo.storage.get(info.key)
            KeySlot.from_bytes(slot_id, data)
        except DAMAGE as exc:
            problems.append((info.key, f"unusable key slot: {exc}", set()))
            continue
        try:
            payload = repo.open_object(sealing.Kind.SLOT_INFO, layout.slot_info(slot_id))
            recorded = json.loads(payload).get("slot_sha256")
        except ObjectNotFound:
            recorded = None
        except DAMAGE:
            continue  # a damaged record is reported with the other sealed objects
        except (ValueError, AttributeError):
            continue  # a record that is not a JSON object: likewise
        if not recorded:
            # Every slot vault makes gets a sealed record of its digest at once: a slot
            # without one was put there by someone else (or by a vault before records).
            problems.append(
                (
                    info.key,
                    "has no sealed slot record: the record was deleted (the slot's next backup "
                    "writes it again), or the slot was not made by `vault key add` here "
                    "(planted?): remove it with `vault key remove` unless you know it",
                    set(),
                )
            )
        elif recorded != hashlib.sha256(data).hexdigest():
            problems.append(
                (info.key, "differs from the slot that was made (damaged or replaced)", set())
            )
    return problems


def _deleted_slots(repo: Repository) -> list[Problem]:
    """`vault key remove` deletes a slot with its usage record; a usage record left without its
    slot means the slot was deleted some other way."""
    slots = {layout.id_of(i.key) for i in repo.storage.list(layout.KEYS)}
    return [
        (
            layout.key_slot(layout.id_of(info.key)),
            "is missing: its sealed usage record is still there, so `vault key remove` did not "
            "remove it (deleted outside vault?)",
            set(),
        )
        for info in repo.storage.list(layout.SLOT_INFO)
        if layout.id_of(info.key) not in slots
    ]


def _sealed_objects(repo: Repository, prefix: str, kind: sealing.Kind) -> list[Problem]:
    problems: list[Problem] = []
    for info in repo.storage.list(prefix):
        try:
            repo.open_object(kind, info.key)
        except DAMAGE as exc:
            problems.append((info.key, f"cannot be read: {exc}", set()))
    return problems
