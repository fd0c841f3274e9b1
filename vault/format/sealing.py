"""Sealed objects: the envelope around every stored byte except key slots and `version`.

Layout (docs/format.md, "Sealed object"):

    magic "VLS1" | kind (1) | epoch (u32 BE) | salt (16) | nonce (12) | AES-256-GCM(ct || tag)

The GCM key is HKDF(epoch key, salt, "vault/v1/object/" + kind): a fresh key per object, so
nonce reuse cannot happen however many objects an epoch seals. The associated data is the
37-byte header plus the object's id, which binds kind, epoch and name: a blob copied over
another object, or under another name, fails authentication. The plaintext starts with one
encoding byte (raw or zstd) followed by the payload.
"""

from __future__ import annotations

import struct
from enum import IntEnum
from typing import Protocol

from vault.errors import IntegrityError
from vault.format import compression, crypto

MAGIC = b"VLS1"
_HEADER = struct.Struct(">4sBI16s12s")
HEADER_SIZE = _HEADER.size
# Anything shorter cannot be a sealed object: it is what a writer killed mid-PUT can leave on
# S3-compatible servers that do not make uploads atomic (SeaweedFS shows empty objects).
MIN_SIZE = HEADER_SIZE + 16 + 1
MASTER_EPOCH = 0  # epoch 0 names the master key itself (config and keyring)


class Kind(IntEnum):
    CONFIG = 1
    KEYRING = 2
    INDEX = 3
    SNAPSHOT = 4
    LOCK = 5
    DRILL = 6
    AUDIT = 7
    CATALOG = 8
    SLOT_INFO = 9
    STATE = 10


class EpochKeys(Protocol):
    """Where sealing finds keys: the keyring (epochs >= 1) plus the master key (epoch 0)."""

    @property
    def current_epoch(self) -> int: ...

    def epoch_key(self, epoch: int) -> bytes: ...

    def missing_epoch(self, epoch: int) -> str:
        """Why `epoch_key(epoch)` has no key, in words for an error message."""
        ...


def seal(
    keys: EpochKeys,
    kind: Kind,
    object_id: str,
    payload: bytes,
    *,
    epoch: int | None = None,
    compress_level: int = 0,
) -> bytes:
    epoch = keys.current_epoch if epoch is None else epoch
    salt = crypto.random_bytes(crypto.SALT_BYTES)
    nonce = crypto.random_bytes(crypto.NONCE_BYTES)
    header = _HEADER.pack(MAGIC, int(kind), epoch, salt, nonce)
    encoding, body = compression.compress(payload, compress_level, planes=False)
    key = crypto.subkey(keys.epoch_key(epoch), salt, _info(kind))
    sealed = crypto.Aead(key).seal(nonce, bytes([encoding]) + body, header + object_id.encode())
    return header + sealed


def open_sealed(keys: EpochKeys, kind: Kind, object_id: str, blob: bytes, *, name: str) -> bytes:
    """The payload of a sealed object; IntegrityError naming `name` on any mismatch."""
    epoch = sealed_epoch(blob, kind, name=name)
    _, _, _, salt, nonce = _HEADER.unpack_from(blob)
    try:
        epoch_key = keys.epoch_key(epoch)
    except KeyError:
        raise IntegrityError(
            f"{name} is sealed under key epoch {epoch}, {keys.missing_epoch(epoch)}", key=name
        ) from None
    key = crypto.subkey(epoch_key, salt, _info(kind))
    try:
        plain = crypto.Aead(key).open(
            nonce, blob[HEADER_SIZE:], blob[:HEADER_SIZE] + object_id.encode()
        )
    except crypto.AuthenticationFailed:
        raise IntegrityError(
            f"{name} failed authentication (corrupt or tampered)", key=name
        ) from None
    if not plain:
        raise IntegrityError(f"{name} is empty after decryption", key=name)
    try:
        return bytes(compression.decompress(plain[0], plain[1:], 1 << 31))
    except ValueError as exc:
        raise IntegrityError(f"{name} cannot be decoded: {exc}", key=name) from None


def is_torn(size: int) -> bool:
    """An object too short to be sealed: an interrupted write, not tampering of a whole one."""
    return size < MIN_SIZE


def sealed_epoch(blob: bytes, kind: Kind, *, name: str) -> int:
    """The epoch a sealed object names, checked for the right magic and kind."""
    if len(blob) < HEADER_SIZE + crypto.TAG_BYTES + 1:
        raise IntegrityError(f"{name} is truncated ({len(blob)} bytes)", key=name)
    magic, stored_kind, epoch, _, _ = _HEADER.unpack_from(blob)
    if magic != MAGIC:
        raise IntegrityError(f"{name} is not a vault sealed object", key=name)
    if stored_kind != int(kind):
        raise IntegrityError(f"{name} holds the wrong kind of object", key=name)
    return int(epoch)


# Literal strings, not enum names: renaming a member must never change the format.
_INFO = {
    Kind.CONFIG: b"vault/v1/object/config",
    Kind.KEYRING: b"vault/v1/object/keyring",
    Kind.INDEX: b"vault/v1/object/index",
    Kind.SNAPSHOT: b"vault/v1/object/snapshot",
    Kind.LOCK: b"vault/v1/object/lock",
    Kind.DRILL: b"vault/v1/object/drill",
    Kind.AUDIT: b"vault/v1/object/audit",
    Kind.CATALOG: b"vault/v1/object/catalog",
    Kind.SLOT_INFO: b"vault/v1/object/slot-info",
    Kind.STATE: b"vault/v1/object/state",
}


def _info(kind: Kind) -> bytes:
    return _INFO[kind]
