"""What a replica takes from its source besides snapshots, before each copy: the source's key
rotations, its cryptographic erases, and the tags (legal holds) put on snapshots both hold.

- Keys: epochs the replica lacks are added, states only move forward (vault.repo.keyring).
- Erase: an epoch whose key the source destroyed (`vault key rotate --reencrypt`) is still
  live in the replica, which has packs of its own sealed under it. The replica re-encrypts
  them under the current epoch and destroys the key itself (vault.jobs.rotate.reencrypt), so
  the erase the source began is complete only once every replica's copy has run.
- Tags: a tag the source added to a snapshot the replica holds is added there too, so the
  replica's own retention keeps a snapshot under legal hold. A tag removed on the source is
  never removed on the replica by a copy (a hold comes off deliberately, on each side); it is
  reported instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vault.format.snapshot import Snapshot
from vault.repo.keyring import DESTROYED
from vault.repo.repository import Repository


def follow_keys(source: Repository, replica: Repository) -> bool:
    """Bring the source's key rotations into the replica's keyring (saved when changed);
    callers hold the replica's exclusive lock."""
    replica.refresh_keyring()
    if not replica.keyring.take_epochs_from(source.keyring):
        return False
    replica.save_keyring()
    return True


def destroyed_epochs(repo: Repository) -> set[int]:
    return {e.id for e in repo.keyring.epochs if e.state == DESTROYED}


def erase_to_follow(source: Repository, replica: Repository) -> set[int]:
    """The epochs the replica must re-encrypt away and destroy: those the source destroyed
    that the replica still holds (an erase of its own interrupted halfway included). Only ever
    epochs the source destroyed, so no pack still to be copied from the source is sealed under
    one (the source deleted its packs of an epoch before destroying its key). After
    `follow_keys`, the replica holds no other `retiring` epoch for the re-encryption to take
    along (vault.repo.keyring.take_epochs_from)."""
    gone = destroyed_epochs(source)
    return {e.id for e in replica.keyring.epochs if e.id in gone and e.state != DESTROYED}


@dataclass
class TagsCarried:
    retagged: list[str] = field(default_factory=list)  # replica snapshots given new tags
    # Per snapshot, tags the source took off since the last copy that the replica keeps.
    kept: dict[str, list[str]] = field(default_factory=dict)
    # What the replica now holds of the source's tags, for the next copy to compare against.
    record: dict[str, list[str]] = field(default_factory=dict)


def carry_tags(
    source_snapshots: list[Snapshot],
    replica: Repository,
    last_copied: dict[str, list[str]] | None,
) -> TagsCarried:
    """Add to each snapshot the replica holds the tags the source's copy of it has. Only the
    snapshots whose tags changed on the source since the last copy (`last_copied`, the
    record that copy left; None: every one) are read from the replica. Callers hold the
    replica's exclusive lock."""
    held = set(replica.snapshot_ids())
    result = TagsCarried()
    for snapshot in source_snapshots:
        if snapshot.id not in held:
            continue
        result.record[snapshot.id] = list(snapshot.tags)
        before = None if last_copied is None else last_copied.get(snapshot.id)
        if before is not None and tuple(before) == snapshot.tags:
            continue
        theirs = replica.load_snapshot(snapshot.id)
        added = tuple(t for t in snapshot.tags if t not in theirs.tags)
        if added:
            replica.retag_snapshot(theirs, theirs.tags + added)
            result.retagged.append(snapshot.id)
        removed = [t for t in before or () if t not in snapshot.tags and t in theirs.tags]
        if removed:
            result.kept[snapshot.id] = removed
    return result
