"""An opened repository: keys, config, index, snapshots, trees and blob reads.

Creating and opening repositories, and reading everything a job needs. Writing blobs goes
through `vault.repo.writer.BlobWriter`, which this module hands out.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import functools
import hashlib
import json
import socket
from dataclasses import replace
from datetime import UTC, datetime

from vault import __version__, ids
from vault.dicom.catalog import Catalog, parse_catalog
from vault.errors import (
    IntegrityError,
    ObjectNotFound,
    UsageError,
    VaultError,
)
from vault.format import crypto, layout, sealing
from vault.format.chunker import Chunker, ChunkerParams
from vault.format.config import (
    DEFAULT_PACK_SIZE,
    DEFAULT_ZSTD_LEVEL,
    Config,
    ObjectLockPolicy,
)
from vault.format.index import Index, Location, decode
from vault.format.pack import BlobType, open_blob, pack_key
from vault.format.snapshot import Snapshot
from vault.format.tree import Tree
from vault.parallel import LOCAL_READS, REMOTE_READS, in_order
from vault.repo import unlock
from vault.repo.keyring import Keyring, MasterKeyOnly
from vault.repo.keys import (
    KeySlot,
    Secret,
    kdf_params_for_new_slots,
    make_slot_with_signer,
    new_recovery_key,
)
from vault.repo.location import check_new_location, not_found
from vault.repo.packcache import TreePacks
from vault.repo.seen import LastSlots, Seen
from vault.storage import Storage

# Loading millions of index entries leaves freed heap pages that glibc keeps (~15 bytes per
# blob at 10 million, scripts/bench_scale.py); malloc_trim hands them back to the system.
_TRIM_AFTER_BLOBS = 1_000_000


def _return_free_heap() -> None:
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to do
        ctypes.CDLL(None).malloc_trim(0)


class Repository:
    def __init__(self, storage: Storage, keyring: Keyring, config: Config, slot_id: str) -> None:
        self.storage = storage
        self._reads = LOCAL_READS if storage.local_root() is not None else REMOTE_READS
        self.keyring = keyring
        self.config = config
        self.slot_id = slot_id  # the slot that opened it
        self.slot_kind = ""  # its kind: passphrase | keyfile | recovery
        self.signing_key = b""  # that slot's Ed25519 private key (b"" for older slots)
        self._fresh_signers: dict[str, tuple[bytes, str]] = {}  # slots made by this process
        self.index = Index()
        self.tree_packs = TreePacks(storage)
        self._index_loaded = False
        self.torn_objects: set[str] = set()  # empty objects left by writers killed mid-PUT

    # -- creation and opening -----------------------------------------------------------------

    @classmethod
    def init(
        cls,
        storage: Storage,
        passphrase: Secret,
        *,
        chunker: ChunkerParams | None = None,
        pack_size: int = DEFAULT_PACK_SIZE,
        zstd_level: int = DEFAULT_ZSTD_LEVEL,
        object_lock: ObjectLockPolicy | None = None,
        replica_of: Repository | None = None,
    ) -> tuple[Repository, str]:
        """Create a repository; returns it and the recovery key text (shown once, never stored).
        A replica (`replica_of`) shares its source's chunking and data keys, and has its own
        master key, slots, id, locks and Object Lock setting."""
        kdf_params_for_new_slots()  # refuses a misplaced test hook before anything is written
        check_new_location(storage, object_lock)
        master = crypto.random_key()
        if replica_of is not None:
            source_id = replica_of.config.repository_id
            keyring = Keyring.replica_of(replica_of.keyring, master, source_id)
            source_config = replica_of.config
            chunker = source_config.chunker
            pack_size, zstd_level = source_config.pack_size, source_config.zstd_level
        else:
            keyring = Keyring.create(master)
        config = Config(
            ids.new_id(),
            datetime.now(UTC).isoformat(timespec="seconds"),
            chunker or ChunkerParams(),
            pack_size,
            zstd_level,
            object_lock,
        )
        master_keys = MasterKeyOnly(master)
        repo = cls(storage, keyring, config, "")
        repo.put(
            layout.CONFIG,
            sealing.seal(master_keys, sealing.Kind.CONFIG, "config", config.to_bytes()),
            if_absent=True,
        )
        repo.put(
            layout.KEYRING,
            sealing.seal(master_keys, sealing.Kind.KEYRING, "keyring", keyring.to_bytes()),
            if_absent=True,
        )
        repo.use_new_slot(repo.add_slot(passphrase).id)
        LastSlots().remember(storage.location(), repo.slot_id)
        recovery_text, recovery_material = new_recovery_key()
        repo.add_slot(Secret("recovery", recovery_material))
        # `version` last: a repository without it is an interrupted init, not a repository.
        repo.put(layout.VERSION, layout.VERSION_TEXT, if_absent=True)
        return repo, recovery_text

    @classmethod
    def open(cls, storage: Storage, secret: Secret, *, version: bytes | None = None) -> Repository:
        """`version`: the version object's bytes when the caller has just read them."""
        try:
            version = storage.get(layout.VERSION) if version is None else version
        except ObjectNotFound:
            raise not_found(storage) from None
        if version != layout.VERSION_TEXT:
            raise VaultError(
                f"the `version` object at {storage.location()} does not name a format this vault "
                "reads (damaged, or written by a newer vault)"
            )
        objects = unlock.read_opening_objects(storage)
        repo = cls._unlock(storage, secret, objects)
        if repo is None:
            # Keyring, config and slots are read at once: another client's master-key rotation
            # landing among those reads pairs a new keyring with old slots. Read them again.
            again = unlock.read_opening_objects(storage)
            if again != objects:
                repo = cls._unlock(storage, secret, again)
        if repo is not None:
            return repo
        raise IntegrityError(
            "the keyring does not open with the master key of any slot this secret opens "
            "(corrupt keyring, or an interrupted master-key rotation by another secret)",
            key=layout.KEYRING,
        )

    @classmethod
    def _unlock(
        cls, storage: Storage, secret: Secret, objects: unlock.OpeningObjects
    ) -> Repository | None:
        """The repository opened with the first slot whose master opens the keyring."""
        keyring_blob, config_blob = objects.keyring, objects.config
        last_slots = LastSlots()
        # One KDF in the normal case: slots are tried one at a time, the one that opened this
        # repository last time first, and the first that opens the keyring wins. During (or
        # after an interrupted) master-key rotation the same secret may open an old and a new
        # slot: the old master does not open the keyring, so the next slot is tried.
        opened: list[tuple[bytes, str]] = []
        signers: dict[str, bytes] = {}
        preferred = last_slots.get(storage.location())
        candidates = unlock.unlock_slots(storage, secret, preferred, signers, objects.slots)
        for master, slot_id in candidates:
            opened.append((master, slot_id))
            try:
                keyring_payload = unlock.open_master_object(
                    master, sealing.Kind.KEYRING, keyring_blob
                )
            except IntegrityError:
                continue
            keyring = Keyring.from_bytes(master, keyring_payload)
            config = Config.from_bytes(unlock.open_config(opened, master, config_blob, candidates))
            repo = cls(storage, keyring, config, slot_id)
            repo.slot_kind = secret.kind
            repo.signing_key = signers.get(slot_id, b"")
            repo._accept_keyring(keyring)
            last_slots.remember(storage.location(), slot_id)
            return repo
        return None

    # -- slots ----------------------------------------------------------------------------------

    def slots(self) -> list[KeySlot]:
        """The usable key slots (see `unusable_slots` for the others)."""
        found = []
        for info in self.storage.list(layout.KEYS):
            with contextlib.suppress(IntegrityError, ObjectNotFound):
                found.append(KeySlot.from_bytes(layout.id_of(info.key), self.storage.get(info.key)))
        return found

    def add_slot(self, secret: Secret, name: str = "") -> KeySlot:
        """A new slot for `secret`; `name` (a person or machine, e.g. "J. Smith, office
        manager") is kept sealed in its record and named in every audit event it opens."""
        slot_id = ids.new_id()
        slot, signer = make_slot_with_signer(slot_id, secret, self.keyring.master_key)
        self._fresh_signers[slot_id] = (signer, secret.kind)
        stored = slot.to_bytes()
        self.put(layout.key_slot(slot_id), stored, if_absent=True)
        host, now = socket.gethostname(), datetime.now(UTC).isoformat(timespec="seconds")
        # The slot's digest under the master key: `check` can then tell a damaged slot it
        # cannot open (no secret for it) from an intact one.
        digest = hashlib.sha256(stored).hexdigest()
        info = {"created_host": host, "created": now, "slot_sha256": digest}
        if slot.signing_public:
            info["signing_public"] = base64.b64encode(slot.signing_public).decode()
        if name:
            info["name"] = name
        self.save_slot_info(slot_id, info)
        return slot

    def use_new_slot(self, slot_id: str) -> None:
        """Act as a slot this process just made (init, passwd, master rotation): its id, kind
        and signing key, without deriving its KEK again."""
        self.signing_key, self.slot_kind = self._fresh_signers[slot_id]
        self.slot_id = slot_id

    def remove_slot(self, slot_id: str) -> None:
        self.storage.delete(layout.key_slot(slot_id))
        self.storage.delete(layout.slot_info(slot_id))

    # Slot usage lives in a separate sealed object, not in the plaintext slot: host names say
    # which practice machine holds which key, and a slot must never be rewritten just to log.

    def slot_info(self, slot_id: str) -> dict[str, str]:
        try:
            payload = self.open_object(sealing.Kind.SLOT_INFO, layout.slot_info(slot_id))
            info = json.loads(payload)
        except (ObjectNotFound, IntegrityError, ValueError):
            return {}
        return {str(k): str(v) for k, v in info.items()} if isinstance(info, dict) else {}

    def save_slot_info(self, slot_id: str, info: dict[str, str]) -> None:
        payload = json.dumps(info, sort_keys=True).encode()
        self.put(layout.slot_info(slot_id), self.seal(sealing.Kind.SLOT_INFO, slot_id, payload))

    # -- writing ------------------------------------------------------------------------------

    def put(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        """Store an object of the repository, under Object Lock retention when configured."""
        lock = self.config.object_lock
        retention = lock.retention(datetime.now(UTC)) if lock else None
        self.storage.put(key, data, if_absent=if_absent, retention=retention)

    def save_keyring(self) -> None:
        """Overwrite the keyring (sealed under the master key), one generation up; callers hold
        an exclusive lock."""
        self.keyring.generation += 1
        self._save_master_object(sealing.Kind.KEYRING, layout.KEYRING, self.keyring.to_bytes())
        self.seen.remember_generation(layout.KEYRING, self.keyring.generation)

    @functools.cached_property
    def seen(self) -> Seen:
        return Seen(self.config.repository_id)

    def _accept_keyring(self, keyring: Keyring) -> None:
        """Refuse a keyring older than one this machine has seen: put back from an old copy, it
        would undo key rotations (new data sealed under a retired, perhaps compromised, epoch)."""
        seen = self.seen.generation(layout.KEYRING)
        if keyring.generation < seen:
            raise IntegrityError(
                f"the keyring at {self.storage.location()} is generation {keyring.generation}, "
                f"older than generation {seen} this machine has seen: it was rolled back to an "
                "old copy, which would undo key rotations, so it is not used. If the whole "
                f"repository was restored from an older copy on purpose, remove {self.seen.path} "
                "and run again",
                key=layout.KEYRING,
            )
        self.seen.remember_generation(layout.KEYRING, keyring.generation)

    def save_config(self) -> None:
        self._save_master_object(sealing.Kind.CONFIG, layout.CONFIG, self.config.to_bytes())

    def _save_master_object(self, kind: sealing.Kind, name: str, payload: bytes) -> None:
        # The object id of config and keyring is their name.
        keys = MasterKeyOnly(self.keyring.master_key)
        self.put(name, sealing.seal(keys, kind, name, payload))

    def refresh_keyring(self) -> None:
        """Re-read the keyring (after taking a lock): a rotation may have finished since open,
        and nothing may be written under an epoch that was destroyed meanwhile."""
        payload = unlock.open_master_object(
            self.keyring.master_key, sealing.Kind.KEYRING, self.storage.get(layout.KEYRING)
        )
        keyring = Keyring.from_bytes(self.keyring.master_key, payload)
        self._accept_keyring(keyring)
        self.keyring = keyring

    # -- sealed objects ---------------------------------------------------------------------

    def seal(self, kind: sealing.Kind, object_id: str, payload: bytes, level: int = 0) -> bytes:
        return sealing.seal(self.keyring, kind, object_id, payload, compress_level=level)

    def open_object(self, kind: sealing.Kind, key: str) -> bytes:
        return sealing.open_sealed(
            self.keyring, kind, layout.id_of(key), self.storage.get(key), name=key
        )

    def chunker(self) -> Chunker:
        return Chunker(self.config.chunker, self.keyring.chunker_seed)

    def blob_id(self, data: bytes | bytearray | memoryview, blob_type: BlobType) -> bytes:
        """The keyed id of a blob. Trees use a key derived for trees, so a file whose bytes
        happen to equal a tree's serialization can never be mistaken for (or deduplicated
        against) that tree."""
        return crypto.mac(self.keyring.blob_id_key(blob_type.value), data)

    # -- index ----------------------------------------------------------------------------------

    def load_index(self) -> Index:
        if self._index_loaded:
            return self.index
        keys = []
        for info in self.storage.list(layout.INDEX):
            if sealing.is_torn(info.size):
                # An interrupted write: no snapshot can depend on it (snapshots are written
                # only after their index is durable). check reports it; prune removes it.
                self.torn_objects.add(info.key)
                continue
            keys.append(info.key)
        opened = in_order(keys, lambda key: self.open_object(sealing.Kind.INDEX, key), self._reads)
        for key, payload in opened:  # decoded in listing order, as one at a time did
            for pack, entries in decode(payload, name=key):
                self.index.load_pack(pack, entries)
        self.index.freeze()
        self._index_loaded = True
        if len(self.index) >= _TRIM_AFTER_BLOBS:
            _return_free_heap()
        return self.index

    def forget_index(self) -> None:
        """Drop the loaded index (after index objects were replaced)."""
        self.index = Index()
        self._index_loaded = False

    def index_objects(self) -> list[str]:
        keys = []
        for info in self.storage.list(layout.INDEX):
            if sealing.is_torn(info.size):
                self.torn_objects.add(info.key)
            keys.append(info.key)
        return keys

    # -- blobs ----------------------------------------------------------------------------------

    def read_blob(self, blob_id: bytes) -> bytes | bytearray:
        location = self.index.lookup(blob_id)
        if location is None:
            raise IntegrityError(f"blob {blob_id.hex()} is not in the index")
        return self.read_located(location)

    def read_located(self, location: Location) -> bytes | bytearray:
        name = layout.pack(location.pack.id)
        entry = location.entry
        sealed = self.storage.get(name, offset=entry.offset, length=entry.length)
        return open_blob(
            self.pack_key(location.pack.id, location.pack.epoch, location.pack.salt),
            entry,
            sealed,
            pack_name=name,
        )

    def pack_key(self, pack_id: str, epoch: int, salt: bytes) -> crypto.Aead:
        try:
            epoch_key = self.keyring.epoch_key(epoch)
        except KeyError:
            raise IntegrityError(
                f"{layout.pack(pack_id)} is sealed under key epoch {epoch}, "
                f"{self.keyring.missing_epoch(epoch)}"
            ) from None
        return pack_key(epoch_key, salt, pack_id)

    def load_tree(self, tree_id: str) -> Tree:
        blob_id = bytes.fromhex(tree_id)
        location = self.index.lookup(blob_id)
        if location is None or location.entry.type != BlobType.TREE:
            raise IntegrityError(f"tree {tree_id[:16]} is missing from the index")
        pack, entry = location.pack, location.entry
        data = open_blob(
            self.pack_key(pack.id, pack.epoch, pack.salt),
            entry,
            self.tree_packs.sealed_blob(pack.id, entry.offset, entry.length),
            pack_name=layout.pack(pack.id),
        )
        if not crypto.constant_time_equal(self.blob_id(data, BlobType.TREE), blob_id):
            raise IntegrityError(f"tree {tree_id[:16]} does not match its id")
        try:
            return Tree.from_bytes(bytes(data))
        except (ValueError, KeyError, TypeError) as exc:
            raise IntegrityError(f"tree {tree_id[:16]} is malformed: {exc}") from None

    # -- snapshots ------------------------------------------------------------------------------

    def snapshot_ids(self) -> list[str]:
        ids_found = []
        for info in self.storage.list(layout.SNAPSHOTS):
            if sealing.is_torn(info.size):
                self.torn_objects.add(info.key)  # an interrupted snapshot write: no snapshot
                continue
            ids_found.append(layout.id_of(info.key))
        return ids_found

    def load_snapshot(self, snapshot_id: str) -> Snapshot:
        key = layout.snapshot(snapshot_id)
        payload = self.open_object(sealing.Kind.SNAPSHOT, key)
        try:
            return Snapshot.from_bytes(snapshot_id, payload)
        except (ValueError, KeyError, TypeError) as exc:
            raise IntegrityError(f"{key} is malformed: {exc}", key=key) from None

    def snapshots(self) -> list[Snapshot]:
        def load(snapshot_id: str) -> Snapshot | None:
            try:
                return self.load_snapshot(snapshot_id)
            except ObjectNotFound:
                return None  # listed, then forgotten by another client before it was read

        loaded = in_order(self.snapshot_ids(), load, self._reads)
        found = [snapshot for _, snapshot in loaded if snapshot is not None]
        return sorted(found, key=lambda s: (s.time, s.id))

    def save_snapshot(self, snapshot: Snapshot) -> None:
        key = layout.snapshot(snapshot.id)
        self.put(
            key,
            self.seal(
                sealing.Kind.SNAPSHOT, snapshot.id, snapshot.to_bytes(), self.config.zstd_level
            ),
            if_absent=True,
        )

    def retag_snapshot(self, snapshot: Snapshot, tags: tuple[str, ...]) -> Snapshot:
        """The snapshot with new tags, sealed again under its own id (the only change a
        snapshot ever gets: a legal hold put on or taken off). Callers hold an exclusive lock."""
        changed = replace(snapshot, tags=tags)
        self.put(
            layout.snapshot(snapshot.id),
            self.seal(
                sealing.Kind.SNAPSHOT, snapshot.id, changed.to_bytes(), self.config.zstd_level
            ),
        )
        return changed

    # -- catalogs -------------------------------------------------------------------------------

    def save_catalog(
        self,
        snapshot_id: str,
        catalog: Catalog,
        *,
        again: bool = False,
        serialized: bytes | None = None,
    ) -> None:
        """`again`: replace a catalog that a killed writer left without its snapshot (a copy
        run again); a backup's catalog is written once, for a new snapshot id. `serialized`:
        the catalog's bytes when the caller has them already."""
        payload = catalog.to_bytes() if serialized is None else serialized
        blob = self.seal(sealing.Kind.CATALOG, snapshot_id, payload, self.config.zstd_level)
        self.put(layout.catalog(snapshot_id), blob, if_absent=not again)

    def load_catalog(self, snapshot: Snapshot) -> Catalog | None:
        """The snapshot's study catalog; None for snapshots made before catalogs existed."""
        if not snapshot.catalog:
            return None
        key = layout.catalog(snapshot.catalog)
        return parse_catalog(key, self.open_object(sealing.Kind.CATALOG, key))

    def find_snapshot(self, ref: str) -> Snapshot:
        """'latest', a full id, or a unique id prefix."""
        if ref == "latest":
            all_snapshots = self.snapshots()
            if not all_snapshots:
                raise UsageError("the repository has no snapshots yet")
            return all_snapshots[-1]
        matches = [s for s in self.snapshot_ids() if s.startswith(ref.lower())] if ref else []
        if not matches:
            raise UsageError(f"no snapshot matches {ref!r}")
        if len(matches) > 1:
            raise UsageError(f"snapshot prefix {ref!r} is ambiguous ({len(matches)} match)")
        return self.load_snapshot(matches[0])

    def program_version(self) -> str:
        return __version__
