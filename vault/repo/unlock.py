"""Opening a repository's secrets: which key slot a secret opens, one KDF at a time, and the
master-key objects (keyring, config) it unseals."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass

from vault.errors import IntegrityError, ObjectNotFound, WrongKey
from vault.format import layout, sealing
from vault.parallel import in_order
from vault.repo.keyring import MasterKeyOnly
from vault.repo.keys import KeySlot, Secret, kdf_cost, unlock_slot
from vault.storage import Storage


def open_master_object(master: bytes, kind: sealing.Kind, blob: bytes) -> bytes:
    name = layout.KEYRING if kind == sealing.Kind.KEYRING else layout.CONFIG
    return sealing.open_sealed(MasterKeyOnly(master), kind, name, blob, name=name)


def open_config(
    masters: list[tuple[bytes, str]],
    first: bytes,
    blob: bytes,
    more: Iterator[tuple[bytes, str]],
) -> bytes:
    """The config payload: under the keyring's master normally; after a master-key rotation
    killed between config and keyring, under another slot's master (unlocked only then)."""
    ordered = [first] + [m for m, _ in masters if m != first]
    failure: IntegrityError | None = None
    for master in itertools.chain(ordered, (m for m, _ in more)):
        try:
            return open_master_object(master, sealing.Kind.CONFIG, blob)
        except IntegrityError as exc:
            failure = exc
    assert failure is not None
    raise failure


@dataclass(frozen=True)
class OpeningObjects:
    """What opening a repository reads before its first key derivation."""

    keyring: bytes
    config: bytes
    slots: list[tuple[str, bytes | None]]  # (slot id, its object; None if it vanished)


# On a remote store each object is a round trip: read one after another, the keyring, config,
# listing and slots were five of the 28 sequential requests of a one-study restore.
OPENING_THREADS = 8


def read_opening_objects(storage: Storage) -> OpeningObjects:
    """The keyring, the config and every key slot object, read at once."""

    def read(key: str) -> bytes | None:
        if not key.startswith(layout.KEYS):
            return storage.get(key)  # a missing keyring or config is an error of its own
        try:
            return storage.get(key)
        except ObjectNotFound:
            return None

    def slot_keys() -> Iterator[str]:
        yield layout.KEYRING
        yield layout.CONFIG
        yield from (info.key for info in storage.list(layout.KEYS))

    # The keyring and config are being read while the slots are listed.
    read_all = in_order(slot_keys(), read, OPENING_THREADS)
    (_, keyring), (_, config), *slots = list(read_all)
    assert keyring is not None and config is not None
    return OpeningObjects(keyring, config, [(layout.id_of(k), blob) for k, blob in slots])


def unlock_slots(
    storage: Storage,
    secret: Secret,
    preferred: str,
    signers: dict[str, bytes],
    objects: list[tuple[str, bytes | None]],
) -> Iterator[tuple[bytes, str]]:
    """(master key, slot id) of each slot `secret` opens, one KDF at a time, as the caller
    asks for more: `preferred` first, then the cheapest derivations first, so slots an
    attacker planted with costly parameters are reached only after the real ones. WrongKey
    when none opens."""
    # A damaged or unknown slot (KDF parameters beyond the cap included) must not lock out the
    # holders of the other slots.
    damaged = 0
    slots = []
    for slot_id, blob in objects:
        if blob is None:
            damaged += 1  # listed, then removed before it was read
            continue
        try:
            slot = KeySlot.from_bytes(slot_id, blob)
        except (IntegrityError, KeyError, ValueError, TypeError):
            damaged += 1
            continue
        if slot.kind == secret.kind:
            slots.append(slot)
    slots.sort(key=lambda s: (s.id != preferred, kdf_cost(s.kdf)))
    opened = False
    for slot in slots:
        try:
            unlocked = unlock_slot(slot, secret)
        except (IntegrityError, KeyError, ValueError, TypeError):
            damaged += 1
            continue
        if unlocked is not None:
            master, signers[slot.id] = unlocked
            opened = True
            yield master, slot.id
    if opened:
        return
    what = {
        "passphrase": "passphrase",
        "recovery": "recovery key",
        "keyfile": "key file",
        "two-factor": "key file and passphrase",
    }.get(secret.kind, secret.kind)
    note = f" ({damaged} key slot(s) could not be read)" if damaged else ""
    raise WrongKey(f"the {what} given does not open the repository at {storage.location()}{note}")


def unusable_slots(storage: Storage) -> list[tuple[str, str]]:
    """(slot id, why) of each object under keys/ that is not a usable slot: damaged, or
    planted with a derivation beyond the cap. Opening never tries them."""
    bad = []
    for info in storage.list(layout.KEYS):
        slot_id = layout.id_of(info.key)
        try:
            KeySlot.from_bytes(slot_id, storage.get(info.key))
        except IntegrityError as exc:
            bad.append((slot_id, str(exc)))
        except ObjectNotFound:
            continue
    return bad
