"""Object names in a repository: the only module that knows them.

Every name is fixed or a random id; nothing is derived from file names or patient data.
"""

from __future__ import annotations

VERSION = "version"
CONFIG = "config"
KEYRING = "keyring"
KEYS = "keys/"
DATA = "data/"
INDEX = "index/"
SNAPSHOTS = "snapshots/"
LOCKS = "locks/"
DRILLS = "drills/"
AUDIT = "audit/"
SLOT_INFO = "slotinfo/"  # sealed: which host created a slot and last used it
CATALOGS = "catalog/"  # sealed: one DICOM study catalog per snapshot
STATE = "state/"  # sealed: small mutable job state (the last check and its read position)

VERSION_TEXT = b"vault repository format 1\n"


def key_slot(slot_id: str) -> str:
    return KEYS + slot_id


def catalog(snapshot_id: str) -> str:
    return CATALOGS + snapshot_id


def state(name: str) -> str:
    return STATE + name


def slot_info(slot_id: str) -> str:
    return SLOT_INFO + slot_id


def pack(pack_id: str) -> str:
    # Two-character fan-out keeps local directories small; harmless on S3.
    return f"{DATA}{pack_id[:2]}/{pack_id}"


def index(index_id: str) -> str:
    return INDEX + index_id


def snapshot(snapshot_id: str) -> str:
    return SNAPSHOTS + snapshot_id


def lock(lock_id: str) -> str:
    return LOCKS + lock_id


def id_of(key: str) -> str:
    """The id part of an object name (the last path component)."""
    return key.rsplit("/", 1)[-1]
