"""Key rotation: new data-key epochs, re-encryption with cryptographic erase, new master keys.

- `rotate_epoch`: a new current epoch; nothing is rewritten.
- `reencrypt`: rewrite every object sealed under the epochs being retired, then destroy their
  keys. Steps, each idempotent so an interrupted run (even SIGKILL) resumes where it stopped:
    0. prove that the index names every blob a snapshot needs, re-indexing the packs of a lost
       index object (vault.repo.coverage), or stop before anything is rewritten;
    1. mark the epochs `retiring` (rotating first if the current epoch is among them);
    2. copy the blobs of every retiring pack into new packs under the current epoch (new packs
       are durable and indexed before anything is deleted);
    3. write one index of all non-retiring packs, then delete the other index objects;
    4. reseal every other sealed object (snapshots, drill records, …) still under a retiring
       epoch, in place;
    5. delete the retiring packs (every blob now lives in a current pack) and stray packs of
       those epochs that no index named;
    6. destroy the keys: the keyring keeps only a record (id, dates, state `destroyed`).
- `rotate_master`: a new master key; the caller's slot is rewrapped, a new recovery key is made,
  every other slot is removed (it wraps the old master key) and listed for re-adding.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from vault.errors import DAMAGE, IntegrityError, ObjectNotFound, UsageError
from vault.format import crypto, layout, sealing
from vault.format.index import PackInfo
from vault.format.pack import PackEntry, parse_header
from vault.progress import NoProgress, Progress
from vault.repo import index_store, unlock
from vault.repo.coverage import incomplete, prove_indexed
from vault.repo.key_history import KeyHistory, purge_key_history
from vault.repo.keyring import COMPROMISED, CURRENT, DEACTIVATED, DESTROYED, RETIRING, Epoch
from vault.repo.keys import Secret, new_recovery_key
from vault.repo.keyusage import sealed_objects
from vault.repo.lock import Lock
from vault.repo.repository import Repository
from vault.repo.seen import LastSlots
from vault.repo.writer import BlobWriter


def rotate_epoch(repo: Repository) -> Epoch:
    """Callers hold an exclusive lock."""
    repo.refresh_keyring()
    new = repo.keyring.rotate()
    repo.save_keyring()
    return new


@dataclass
class ReencryptResult:
    retired: list[int] = field(default_factory=list)
    current: int = 0
    resumed: bool = False
    packs_rewritten: int = 0
    blobs_rewritten: int = 0
    bytes_read: int = 0
    bytes_written: int = 0
    objects_resealed: int = 0
    index_objects_replaced: int = 0
    packs_deleted: int = 0
    destroyed: list[Epoch] = field(default_factory=list)  # their records, keys gone
    key_history: KeyHistory | None = None  # old versions that held the keys, and what remains


def _choose_targets(repo: Repository, epochs: set[int] | None) -> tuple[set[int], bool]:
    """The epochs to retire and whether this resumes an interrupted run."""
    keyring = repo.keyring
    retiring = {e.id for e in keyring.epochs if e.state == RETIRING}
    if retiring and epochs is None:
        return retiring, True
    if epochs is not None:
        for epoch in epochs:
            try:
                chosen = keyring.epoch(epoch)
            except KeyError:
                raise UsageError(f"there is no key epoch {epoch}") from None
            if chosen.state == DESTROYED:
                raise UsageError(f"key epoch {epoch} was already destroyed on {chosen.retired}")
        return retiring | epochs, bool(retiring)
    old = {e.id for e in keyring.epochs if e.state in (DEACTIVATED, COMPROMISED, CURRENT)}
    return old, False


def reencrypt(
    repo: Repository,
    *,
    epoch: int | None = None,
    epochs: set[int] | None = None,
    progress: Progress | None = None,
    held_lock: Lock | None = None,
) -> ReencryptResult:
    """Retire `epoch` or `epochs` (default: every epoch, after rotating to a fresh one).
    Callers hold an exclusive lock, passed as `held_lock` so it is resealed under the new
    epoch too."""
    progress = progress or NoProgress()
    repo.refresh_keyring()
    chosen = epochs if epochs is not None else ({epoch} if epoch is not None else None)
    targets, resumed = _choose_targets(repo, chosen)
    _prove_indexed(repo)
    result = ReencryptResult(resumed=resumed)
    # Step 1: a fresh current epoch outside the targets, and the targets marked retiring.
    if repo.keyring.current_epoch in targets:
        repo.keyring.rotate()
    repo.keyring.set_state(targets, RETIRING)
    repo.save_keyring()
    if held_lock is not None:
        held_lock.reseal(repo.keyring)
    result.retired = sorted(targets)
    result.current = repo.keyring.current_epoch

    _rewrite_packs(repo, targets, result, progress)
    _consolidate_index(repo, targets, result)
    _reseal_objects(repo, targets, result)
    _delete_retired_packs(repo, targets, result)
    repo.keyring.destroy(targets)
    repo.save_keyring()
    # The keyring just saved is the only one without the keys: older versions of it (and of
    # the slots) that the storage keeps must go too, or the erase is not one.
    result.key_history = purge_key_history(repo)
    result.destroyed = [e for e in repo.keyring.epochs if e.id in targets]
    return result


def _prove_indexed(repo: Repository) -> None:
    """Every blob a snapshot needs must be indexed before packs are rewritten and keys
    destroyed: a pack that a lost index object named would otherwise be deleted as a stray,
    its key erased, and its data gone (vault.repo.coverage)."""
    try:
        raw = index_store.load_raw(repo)
    except DAMAGE as exc:
        raise incomplete(f"an index object cannot be read ({exc})") from None
    sizes = {layout.id_of(i.key): i.size for i in repo.storage.list(layout.DATA)}
    prove_indexed(repo, {pack.id for _, pack, _ in raw}, sizes, write=True)
    repo.forget_index()  # reloaded with the rescued packs by the steps that follow


def _rewrite_packs(
    repo: Repository, targets: set[int], result: ReencryptResult, progress: Progress
) -> None:
    raw = index_store.load_raw(repo)
    keep = index_store.index_of(raw, lambda pack: pack.epoch not in targets)
    retiring: dict[str, tuple[PackInfo, list[PackEntry]]] = {}
    for _, pack, entries in raw:
        if pack.epoch in targets:
            retiring.setdefault(pack.id, (pack, []))[1].extend(entries)
    # A pack all of whose blobs already sit in kept packs was copied by an earlier, interrupted
    # run: it is not read again.
    todo = [pack for pack, entries in retiring.values() if any(e.id not in keep for e in entries)]
    sizes = {layout.id_of(i.key): i.size for i in repo.storage.list(layout.DATA)}
    progress.start("re-encrypt", sum(sizes.get(p.id, 0) for p in todo))
    writer = BlobWriter(repo, index=keep)
    try:
        for pack in todo:
            read, copied = writer.copy_pack(pack, lambda entry: True)
            result.bytes_read += read
            result.blobs_rewritten += copied
            result.packs_rewritten += 1
            progress.advance(read)
        writer.flush()
    finally:
        writer.close()
        progress.finish()
    result.bytes_written += writer.stats.bytes_stored


def _consolidate_index(repo: Repository, targets: set[int], result: ReencryptResult) -> None:
    result.index_objects_replaced += index_store.consolidate(
        repo, lambda pack: pack.epoch not in targets
    )


def _reseal_objects(repo: Repository, targets: set[int], result: ReencryptResult) -> None:
    for key, kind, epoch in list(sealed_objects(repo)):
        if epoch not in targets:
            continue
        if key.startswith(layout.LOCKS):
            _reseal_or_drop_lock(repo, key)
            continue
        payload = repo.open_object(sealing.Kind(kind), key)
        level = repo.config.zstd_level if kind == sealing.Kind.SNAPSHOT else 0
        repo.put(key, repo.seal(sealing.Kind(kind), layout.id_of(key), payload, level))
        result.objects_resealed += 1


def _reseal_or_drop_lock(repo: Repository, key: str) -> None:
    """A lock under a retiring epoch: we hold the exclusive lock, so any repository lock is
    stale and goes. An append lock (vault.repo.append_guard) is not excluded by ours and may be
    live: it is resealed under the current epoch, so other appenders can still read it."""
    try:
        payload = repo.open_object(sealing.Kind.LOCK, key)
        scoped = bool(json.loads(payload).get("scope"))
    except (IntegrityError, ObjectNotFound, ValueError, AttributeError):
        scoped = False
    if scoped:
        repo.storage.put(key, repo.seal(sealing.Kind.LOCK, layout.id_of(key), payload))
    else:
        repo.storage.delete(key)


def _delete_retired_packs(repo: Repository, targets: set[int], result: ReencryptResult) -> None:
    indexed = {p.id for p in repo.load_index().packs()}
    for info in repo.storage.list(layout.DATA):
        pack_id = layout.id_of(info.key)
        if pack_id in indexed:
            continue
        header = repo.storage.get(info.key, offset=0, length=24)
        try:
            epoch, _ = parse_header(header, pack_name=info.key)
        except IntegrityError:
            continue  # not ours to judge here; check reports it
        if epoch in targets:
            repo.storage.delete(info.key)
            result.packs_deleted += 1


@dataclass
class MasterRotation:
    recovery_key: str
    new_slot: str
    replaced_slot: str  # the caller's old slot
    removed_slots: list[tuple[str, str]]  # (slot id, kind) of everyone else: to be re-added


def rotate_master(repo: Repository, secret: Secret, *, compromised: bool = False) -> MasterRotation:
    """Callers hold an exclusive lock. The order keeps the repository openable at every step:
    new slots first, then config and keyring under the new master, then old slots removed.
    `compromised` records why the old master key ended (vault.jobs.compromise)."""
    repo.refresh_keyring()
    old_slots = repo.slots()
    caller_name = repo.slot_info(repo.slot_id).get("name", "")  # the new slot keeps it
    unusable = [slot_id for slot_id, _ in unlock.unusable_slots(repo.storage)]  # they go too
    repo.keyring.replace_master(crypto.random_key(), compromised=compromised)
    caller = repo.add_slot(secret, name=caller_name)
    recovery_text, recovery_material = new_recovery_key()
    repo.add_slot(Secret("recovery", recovery_material))
    repo.save_config()
    repo.save_keyring()
    removed = []
    replaced = repo.slot_id
    for slot in old_slots:
        repo.remove_slot(slot.id)
        if slot.id != replaced:
            removed.append((slot.id, slot.kind))
    for slot_id in unusable:
        repo.remove_slot(slot_id)
    repo.use_new_slot(caller.id)
    LastSlots().remember(repo.storage.location(), caller.id)
    return MasterRotation(recovery_text, caller.id, replaced, removed)
