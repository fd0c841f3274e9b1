"""Opening a repository's secrets: which key slot a secret opens, one KDF at a time, and the
master-key objects (keyring, config) it unseals."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

from vault.errors import IntegrityError, ObjectNotFound, WrongKey
from vault.format import layout, sealing
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


def unlock_slots(
    storage: Storage, secret: Secret, preferred: str, signers: dict[str, bytes]
) -> Iterator[tuple[bytes, str]]:
    """(master key, slot id) of each slot `secret` opens, one KDF at a time, as the caller
    asks for more: `preferred` first, then the cheapest derivations first, so slots an
    attacker planted with costly parameters are reached only after the real ones. WrongKey
    when none opens."""
    # A damaged or unknown slot (KDF parameters beyond the cap included) must not lock out the
    # holders of the other slots.
    damaged = 0
    slots = []
    for info in storage.list(layout.KEYS):
        try:
            slot = KeySlot.from_bytes(layout.id_of(info.key), storage.get(info.key))
        except (IntegrityError, ObjectNotFound, KeyError, ValueError, TypeError):
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
