"""The keyring: the keys the repository seals with, and the life of each (NIST SP 800-57).

Sealed under the master key, it holds the chunk-id MAC key, the chunker seed, the data-key
epochs and the record of master keys. Each epoch and each master key has a state:

- current      seals everything written now (SP 800-57 "active");
- deactivated  opens what it sealed, seals nothing new (a rotation made another current);
- retiring     re-encryption under way: what it sealed is being rewritten;
- compromised  believed known to someone else: opens what it sealed only so that re-encryption
               can rewrite it, seals nothing (`vault key compromised`);
- destroyed    the key is erased; the record stays as evidence, with its dates.

An epoch keeps the time it was reported compromised through retiring and destruction, so the
record always says why it was destroyed. Master keys are never stored here (each slot wraps the
one in use); their records (number, created, deactivated, compromised) give the master key an
age that the key policy and `status` can hold against the usage period.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from vault.errors import IntegrityError, UsageError
from vault.format import crypto

CURRENT = "current"
DEACTIVATED = "deactivated"
RETIRING = "retiring"
COMPROMISED = "compromised"
DESTROYED = "destroyed"
# "deactivated" is stored under the name vault used before the SP 800-57 names, "active": a
# reader that predates them then still counts those epochs in a re-encryption.
_STORED_STATES = {DEACTIVATED: "active"}
_LEGACY_STATES = {"active": DEACTIVATED}
EPOCH_STATES = (CURRENT, DEACTIVATED, RETIRING, COMPROMISED, DESTROYED)
# How far along its life an epoch is: a replica's copy of an epoch never goes back.
_STATE_ORDER = {CURRENT: 0, DEACTIVATED: 1, RETIRING: 2, COMPROMISED: 3, DESTROYED: 4}
REPLICA_OF = "replica_of"  # in `extra`: the source repository's id


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise IntegrityError("keyring holds a malformed key", key="keyring") from None


@dataclass(frozen=True)
class Epoch:
    id: int
    key: bytes  # empty once destroyed
    created: str
    state: str
    retired: str = ""  # when the key was destroyed
    compromised: str = ""  # when it was reported compromised ("" if never)


@dataclass(frozen=True)
class MasterRecord:
    """One master key's life; the key itself is only ever wrapped in the slots."""

    id: int
    created: str
    state: str  # CURRENT, DEACTIVATED or COMPROMISED
    deactivated: str = ""
    compromised: str = ""
    # True when the keyring predates master records: `created` is then the first epoch's
    # creation, which init made together with the first master key.
    inferred: bool = False
    # For a compromised master key: the epochs its keyring held then, every one exposed.
    exposed_epochs: tuple[int, ...] = ()


@dataclass
class Keyring:
    master_key: bytes
    mac_key: bytes
    chunker_seed: int
    epochs: list[Epoch] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # fields a newer writer added: kept
    # Incremented by every save: a keyring put back from an older copy has a lower one, which
    # clients (vault.repo.seen) and snapshots (keyring_generation) remember.
    generation: int = 0
    masters: list[MasterRecord] = field(default_factory=list)

    @classmethod
    def create(cls, master_key: bytes) -> Keyring:
        now = _now()
        return cls(
            master_key=master_key,
            mac_key=crypto.random_key(),
            chunker_seed=int.from_bytes(crypto.random_bytes(8), "big") or 1,
            epochs=[Epoch(1, crypto.random_key(), now, CURRENT)],
            masters=[MasterRecord(1, now, CURRENT)],
        )

    @classmethod
    def replica_of(cls, source: Keyring, master_key: bytes, source_id: str) -> Keyring:
        """A replica's keyring: the source's chunk-id key, chunker seed and data-key epochs (so
        chunks deduplicate across both and packs copy as they are), under its own master key,
        with a master-key record of its own. Its generation starts at the source's: snapshots
        copied over name the source's generation, and must not read as from the future."""
        now = _now()
        return cls(
            master_key=master_key,
            mac_key=source.mac_key,
            chunker_seed=source.chunker_seed,
            # A source's erase under way is not the replica's (vault.jobs.copy.sync).
            epochs=[
                replace(e, state=DEACTIVATED) if e.state == RETIRING else e for e in source.epochs
            ],
            masters=[MasterRecord(1, now, CURRENT)],
            generation=source.generation,
            extra={REPLICA_OF: source_id},
        )

    @property
    def replica_of_id(self) -> str:
        """The source repository's id for a replica, else ""."""
        return str(self.extra.get(REPLICA_OF, ""))

    def shares_keys_with(self, other: Keyring) -> bool:
        """Whether two keyrings are a source and its replica (chunk ids and chunking agree)."""
        return self.mac_key == other.mac_key and self.chunker_seed == other.chunker_seed

    def take_epochs_from(self, source: Keyring) -> bool:
        """A replica follows its source's key rotations: epochs it lacks are added, and an epoch
        both hold takes whichever state is further along (current, deactivated, retiring or
        compromised), never back. An epoch is never destroyed here, and the source's `retiring`
        is taken as `deactivated`: a replica's packs are its own, so the replica re-encrypts
        them itself before it destroys a key (vault.jobs.copy.sync), and `retiring` here
        means only that its own erase is under way. True when anything changed; an epoch
        whose key differs between the two is refused."""
        mine = {e.id: e for e in self.epochs}
        merged: dict[int, Epoch] = dict(mine)
        for theirs in source.epochs:
            if theirs.state == RETIRING:
                theirs = replace(theirs, state=DEACTIVATED)
            have = mine.get(theirs.id)
            if have is None:
                if theirs.state != DESTROYED:
                    merged[theirs.id] = theirs
                continue
            if have.key and theirs.key and have.key != theirs.key:
                raise IntegrityError(
                    f"data-key epoch {theirs.id} differs between the source and this replica: "
                    "keys were rotated on the replica itself, so it no longer follows its "
                    "source; make a new replica",
                    key="keyring",
                )
            state = max(have.state, theirs.state, key=_STATE_ORDER.__getitem__)
            if state == DESTROYED:
                state = have.state
            elif state == RETIRING:
                # Only an erase the source finished may run here: a `retiring` the replica
                # holds for a key the source still uses (taken from it by an older vault, or
                # at `init --replica-of` during an interrupted erase) goes back.
                state = DEACTIVATED
            merged[theirs.id] = replace(
                have, state=state, compromised=have.compromised or theirs.compromised
            )
        epochs = [merged[i] for i in sorted(merged)]
        newest_current = max((e.id for e in epochs if e.state == CURRENT), default=None)
        epochs = [
            replace(e, state=DEACTIVATED) if e.state == CURRENT and e.id != newest_current else e
            for e in epochs
        ]
        changed = epochs != self.epochs or self.generation < source.generation
        self.epochs = epochs
        self.generation = max(self.generation, source.generation)
        return changed

    def refuse_on_replica(self, what: str) -> None:
        if self.replica_of_id:
            raise UsageError(
                f"this repository is a replica: its data keys are its source's, so {what} on "
                "the source; the next `vault copy` brings the new keys here"
            )

    @property
    def current_epoch(self) -> int:
        return max(e.id for e in self.epochs if e.state == CURRENT)

    @property
    def current_master(self) -> MasterRecord:
        return max((m for m in self.masters if m.state == CURRENT), key=lambda m: m.id)

    def epoch(self, epoch_id: int) -> Epoch:
        for e in self.epochs:
            if e.id == epoch_id:
                return e
        raise KeyError(epoch_id)

    def epoch_key(self, epoch: int) -> bytes:
        if epoch == 0:
            return self.master_key
        found = self.epoch(epoch)
        if found.state == DESTROYED:
            raise KeyError(epoch)
        return found.key

    def missing_epoch(self, epoch: int) -> str:
        newest = max(e.id for e in self.epochs)
        if epoch > newest:
            return (
                f"newer than every epoch this keyring holds (up to {newest}): the keyring was "
                "rolled back to an old copy"
            )
        return "which this keyring no longer holds (destroyed by re-encryption)"

    def exposed_epochs(self) -> list[Epoch]:
        """Keys reported compromised that still exist: marked compromised (or already retiring
        for it), or held in a keyring sealed under a compromised master key, which exposed
        every epoch it held. An interrupted compromise workflow leaves these."""
        exposed = {i for m in self.masters for i in m.exposed_epochs}
        return [e for e in self.live_epochs() if e.compromised or e.id in exposed]

    def live_epochs(self) -> list[Epoch]:
        return [e for e in self.epochs if e.state != DESTROYED]

    def rotate(self) -> Epoch:
        """A new current epoch; the previous current one is deactivated (still opens)."""
        self.refuse_on_replica("rotate keys")
        new = Epoch(max(e.id for e in self.epochs) + 1, crypto.random_key(), _now(), CURRENT)
        self.epochs = [
            replace(e, state=DEACTIVATED) if e.state == CURRENT else e for e in self.epochs
        ] + [new]
        return new

    def set_state(self, epoch_ids: set[int], state: str) -> None:
        self.epochs = [replace(e, state=state) if e.id in epoch_ids else e for e in self.epochs]

    def mark_compromised(self, epoch_ids: set[int], when: str) -> None:
        """Report keys as known to someone else: a current one is rotated away first, so
        nothing new is ever sealed under a compromised key."""
        self.refuse_on_replica("report data keys compromised")
        if self.current_epoch in epoch_ids:
            self.rotate()
        self.epochs = [
            replace(e, state=COMPROMISED, compromised=e.compromised or when)
            if e.id in epoch_ids and e.state != DESTROYED
            else e
            for e in self.epochs
        ]

    def destroy(self, epoch_ids: set[int]) -> None:
        """Cryptographic erase: forget the keys, keep the record."""
        now = _now()
        self.epochs = [
            replace(e, key=b"", state=DESTROYED, retired=now) if e.id in epoch_ids else e
            for e in self.epochs
        ]

    def replace_master(self, master_key: bytes, *, compromised: bool = False) -> MasterRecord:
        """A new current master key; the one it replaces is deactivated (or compromised)."""
        now = _now()
        old = self.current_master
        ended = (
            replace(
                old,
                state=COMPROMISED,
                deactivated=now,
                compromised=now,
                exposed_epochs=tuple(e.id for e in self.live_epochs()),
            )
            if compromised
            else replace(old, state=DEACTIVATED, deactivated=now)
        )
        new = MasterRecord(max(m.id for m in self.masters) + 1, now, CURRENT)
        self.masters = [ended if m.id == old.id else m for m in self.masters] + [new]
        self.master_key = master_key
        return new

    def blob_id_key(self, blob_type: int) -> bytes:
        """MAC key for blob ids: the keyring's MAC key for data chunks (type 0), a subkey
        derived from it for every other blob type."""
        if blob_type == 0:
            return self.mac_key
        return crypto.subkey(self.mac_key, b"", b"vault/v1/blob-id/%d" % blob_type)

    def epoch_keys(self) -> dict[int, bytes]:
        return {e.id: e.key for e in self.live_epochs()}

    def to_bytes(self) -> bytes:
        doc = dict(self.extra)
        doc.update(
            {
                "version": 1,
                "mac_key": _b64(self.mac_key),
                "chunker_seed": self.chunker_seed,
                "epochs": [_epoch_json(e) for e in self.epochs],
                "generation": self.generation,
                "masters": [_master_json(m) for m in self.masters],
            }
        )
        return json.dumps(doc, sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, master_key: bytes, data: bytes) -> Keyring:
        try:
            doc = json.loads(data)
            if doc.get("version") != 1:
                raise IntegrityError("keyring has an unsupported version", key="keyring")
            known = {"version", "mac_key", "chunker_seed", "epochs", "generation", "masters"}
            epochs = [_epoch_from(e) for e in doc["epochs"]]
            masters = [_master_from(m) for m in doc.get("masters", [])] or [
                MasterRecord(1, min(e.created for e in epochs), CURRENT, inferred=True)
            ]
            if sum(m.state == CURRENT for m in masters) != 1:
                raise ValueError("not exactly one current master key")
            return cls(
                master_key=master_key,
                mac_key=_unb64(doc["mac_key"]),
                chunker_seed=int(doc["chunker_seed"]),
                epochs=epochs,
                extra={k: v for k, v in doc.items() if k not in known},
                generation=int(doc.get("generation", 0)),
                masters=masters,
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            raise IntegrityError("keyring is malformed", key="keyring") from None


def _epoch_from(e: dict[str, Any]) -> Epoch:
    state = _LEGACY_STATES.get(e["state"], e["state"])
    if state not in EPOCH_STATES:
        raise ValueError(f"unknown epoch state {state!r}")
    return Epoch(
        int(e["id"]),
        _unb64(e["key"]) if e.get("key") else b"",
        e["created"],
        state,
        e.get("retired", ""),
        e.get("compromised", ""),
    )


def _epoch_json(e: Epoch) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": e.id,
        "created": e.created,
        "state": _STORED_STATES.get(e.state, e.state),
    }
    doc["key"] = _b64(e.key) if e.key else None
    if e.retired:
        doc["retired"] = e.retired
    if e.compromised:
        doc["compromised"] = e.compromised
    return doc


def _master_from(m: dict[str, Any]) -> MasterRecord:
    if m["state"] not in (CURRENT, DEACTIVATED, COMPROMISED):
        raise ValueError(f"unknown master-key state {m['state']!r}")
    return MasterRecord(
        int(m["id"]),
        str(m["created"]),
        str(m["state"]),
        str(m.get("deactivated", "")),
        str(m.get("compromised", "")),
        bool(m.get("inferred", False)),
        tuple(int(i) for i in m.get("exposed_epochs", ())),
    )


def _master_json(m: MasterRecord) -> dict[str, Any]:
    doc: dict[str, Any] = {"id": m.id, "created": m.created, "state": m.state}
    if m.deactivated:
        doc["deactivated"] = m.deactivated
    if m.compromised:
        doc["compromised"] = m.compromised
    if m.inferred:
        doc["inferred"] = True
    if m.exposed_epochs:
        doc["exposed_epochs"] = list(m.exposed_epochs)
    return doc


class MasterKeyOnly:
    """EpochKeys for the objects sealed directly under the master key (config, keyring)."""

    def __init__(self, master_key: bytes) -> None:
        self._master_key = master_key

    @property
    def current_epoch(self) -> int:
        return 0

    def epoch_key(self, epoch: int) -> bytes:
        if epoch != 0:
            raise KeyError(epoch)
        return self._master_key

    def missing_epoch(self, epoch: int) -> str:
        return "but this object must be sealed under the master key (epoch 0)"
