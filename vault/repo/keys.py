"""Key slots: who can open the repository.

Two levels (docs/format.md, "Keys"): each slot wraps the random 256-bit master key under a key
derived from a passphrase (Argon2id), a recovery key or a key file (HKDF; both already carry 256
bits of entropy). The master key seals the keyring (vault.repo.keyring), which holds the
chunk-id MAC key, the chunker seed and the data-key epochs. Slots are plaintext JSON by
necessity (they are what you open first); they hold no host names or anything else about the
practice.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import secrets
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from vault.errors import IntegrityError, UsageError, WrongKey
from vault.format import crypto

PASSPHRASE = "passphrase"
RECOVERY = "recovery"
KEYFILE = "keyfile"
# Both a passphrase and a key file (held on removable media): a second factor for people, so a
# guessed or overheard passphrase alone opens nothing (docs/keys.md).
TWO_FACTOR = "two-factor"
KEYFILE_BYTES = 32

RECOVERY_PREFIX = "VRK1"
TEST_KDF_ENV = "VAULT_TEST_FAST_KDF"  # the one test hook: cheap Argon2id for new slots
# The hook is honoured only inside the test suite: under pytest, or vault's own test scripts
# (campaigns, the golden repository) that say so. Anywhere else it is refused, never used.
TEST_SUITE_ENV = "VAULT_TEST_SUITE"


def in_test_suite() -> bool:
    return bool(os.environ.get("PYTEST_CURRENT_TEST")) or os.environ.get(TEST_SUITE_ENV) == "1"


def kdf_params_for_new_slots() -> crypto.Argon2Params:
    if os.environ.get(TEST_KDF_ENV) == "1":
        if not in_test_suite():
            raise UsageError(
                f"{TEST_KDF_ENV}=1 is the test suite's hook for cheap key slots; it is refused "
                "outside the test suite, so unset it (a slot made with it could be guessed fast)"
            )
        return crypto.TEST_ARGON2
    return crypto.DEFAULT_ARGON2


def weak_slot(slot: KeySlot) -> bool:
    """A passphrase slot below OWASP's Argon2id floor (m >= 19 MiB, t >= 2): made by the test
    hook, or by hand. Whoever copies it can guess its passphrase fast; key list and status say
    so."""
    kdf = slot.kdf
    if slot.kind != PASSPHRASE or kdf.get("name") != "argon2id":
        return False
    return int(kdf["memory_kib"]) < 19456 or int(kdf["iterations"]) < 2


@dataclass(frozen=True)
class Secret:
    """What the user presented: a passphrase, a recovery key or a key file's 32 bytes."""

    kind: str
    material: bytes

    @classmethod
    def from_passphrase(cls, text: str) -> Secret:
        recovery = parse_recovery_key(text)
        if recovery is not None:
            return cls(RECOVERY, recovery)
        if looks_like_recovery_key(text):
            raise WrongKey(
                "the recovery key has a typo (its checksum does not match); "
                "compare it character by character with the printed copy"
            )
        # NFC: the same passphrase typed on different systems derives the same key.
        return cls(PASSPHRASE, unicodedata.normalize("NFC", text).encode("utf-8"))

    @classmethod
    def two_factor(cls, passphrase: str, key_file: bytes) -> Secret:
        """Both factors: the key file's 32 bytes, then the NFC passphrase."""
        if parse_recovery_key(passphrase) is not None:
            raise UsageError("a recovery key is not a passphrase for a two-factor slot")
        return cls(TWO_FACTOR, key_file + unicodedata.normalize("NFC", passphrase).encode())


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text)


# -- recovery keys and key files --------------------------------------------------------------


def new_recovery_key() -> tuple[str, bytes]:
    """(printable text, 32 bytes). The text carries a CRC-16 (CCITT) so that any single
    mistyped character, or two swapped neighbours, is caught (a burst of at most 10 bits)."""
    material = secrets.token_bytes(32)
    check = _recovery_check(material)
    text = base64.b32encode(material + check).decode().rstrip("=")
    groups = [text[i : i + 5] for i in range(0, len(text), 5)]
    return RECOVERY_PREFIX + "-" + "-".join(groups), material


def looks_like_recovery_key(text: str) -> bool:
    compact = "".join(text.split()).replace("-", "").upper()
    return compact.startswith(RECOVERY_PREFIX) and len(compact) == len(RECOVERY_PREFIX) + 55


def parse_recovery_key(text: str) -> bytes | None:
    """The 32 bytes of a recovery key, or None when `text` is not one (a passphrase then)."""
    compact = "".join(text.split()).replace("-", "").upper()
    if not compact.startswith(RECOVERY_PREFIX) or len(compact) != len(RECOVERY_PREFIX) + 55:
        return None
    try:
        raw = base64.b32decode(compact[len(RECOVERY_PREFIX) :] + "=")
    except ValueError:
        return None
    material, check = raw[:32], raw[32:]
    if _recovery_check(material) != check:
        return None
    return material


def _recovery_check(material: bytes) -> bytes:
    return binascii.crc_hqx(material, 0).to_bytes(2, "big")


def new_key_file_text() -> str:
    return "vault-keyfile-v1 " + _b64(secrets.token_bytes(32)) + "\n"


def parse_key_file(text: str, *, name: str) -> bytes:
    parts = text.split()
    if len(parts) != 2 or parts[0] != "vault-keyfile-v1":
        raise UsageError(f"{name} is not a vault key file")
    try:
        material = base64.b64decode(parts[1], validate=True)
    except ValueError:
        raise UsageError(f"{name} is not a vault key file") from None
    if len(material) != 32:
        raise UsageError(f"{name} is not a vault key file")
    return material


# -- slots ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeySlot:
    id: str
    kind: str
    created: str
    kdf: dict[str, Any]
    nonce: bytes
    wrapped: bytes
    # The slot's own Ed25519 key for signing audit events and drill records: the private key
    # wrapped under the slot's KEK (only this slot's secret opens it, not the master key every
    # slot shares), the public key in the clear. Empty in slots made before signing existed.
    signing_public: bytes = b""
    signing_nonce: bytes = b""
    signing_wrapped: bytes = b""

    def to_bytes(self) -> bytes:
        doc: dict[str, Any] = {
            "version": 1,
            "kind": self.kind,
            "created": self.created,
            "kdf": self.kdf,
            "nonce": _b64(self.nonce),
            "wrapped_master_key": _b64(self.wrapped),
        }
        if self.signing_public:
            doc["signing"] = {
                "public": _b64(self.signing_public),
                "nonce": _b64(self.signing_nonce),
                "wrapped_private": _b64(self.signing_wrapped),
            }
        return json.dumps(doc, indent=2, sort_keys=True).encode() + b"\n"

    @classmethod
    def from_bytes(cls, slot_id: str, data: bytes) -> KeySlot:
        try:
            doc = json.loads(data)
            if doc.get("version") != 1 or doc["kind"] not in (
                PASSPHRASE,
                RECOVERY,
                KEYFILE,
                TWO_FACTOR,
            ):
                raise ValueError("version or kind")
            signing = doc.get("signing") or {}
            slot = cls(
                slot_id,
                doc["kind"],
                str(doc["created"]),
                dict(doc["kdf"]),
                _unb64(doc["nonce"]),
                _unb64(doc["wrapped_master_key"]),
                _unb64(signing["public"]) if signing else b"",
                _unb64(signing["nonce"]) if signing else b"",
                _unb64(signing["wrapped_private"]) if signing else b"",
            )
            if signing and (
                len(slot.signing_public) != 32
                or len(slot.signing_nonce) != crypto.NONCE_BYTES
                or len(slot.signing_wrapped) != 48
            ):
                raise ValueError("signing key lengths")
            _validate_kdf(slot.kind, slot.kdf)
            if len(slot.nonce) != crypto.NONCE_BYTES or len(slot.wrapped) != 48:
                raise ValueError("nonce or wrapped key length")
            return slot
        except (ValueError, KeyError, TypeError, AttributeError):
            raise IntegrityError(f"key slot keys/{slot_id} is malformed", key=slot_id) from None


def _validate_kdf(kind: str, kdf: dict[str, Any]) -> None:
    """ValueError unless `kdf` names a known derivation with sane parameters."""
    if len(_unb64(kdf["salt"])) != crypto.SALT_BYTES:
        raise ValueError("salt length")
    argon = (kdf["name"] == "argon2id" and kind == PASSPHRASE) or (
        kdf["name"] == "argon2id+keyfile" and kind == TWO_FACTOR
    )
    if argon:
        limit = crypto.MAX_ARGON2
        if not (
            8 <= int(kdf["memory_kib"]) <= limit.memory_kib
            and 1 <= int(kdf["iterations"]) <= limit.iterations
            and 1 <= int(kdf["lanes"]) <= limit.lanes
        ):
            raise ValueError("Argon2id parameters out of range")
    elif not (kdf["name"] == "hkdf-sha256" and kind in (RECOVERY, KEYFILE)):
        raise ValueError("unknown key derivation")


def kdf_cost(kdf: dict[str, Any]) -> int:
    """A slot's derivation cost, for trying cheap slots first (HKDF costs nothing)."""
    if kdf.get("name") in ("argon2id", "argon2id+keyfile"):
        return int(kdf["memory_kib"]) * int(kdf["iterations"])
    return 0


def _slot_kek(kind: str, material: bytes, kdf: dict[str, Any]) -> bytes:
    salt = _unb64(kdf["salt"])
    if kdf["name"] == "argon2id":
        params = crypto.Argon2Params(
            int(kdf["memory_kib"]), int(kdf["iterations"]), int(kdf["lanes"])
        )
        return crypto.argon2id(material, salt, params)
    if kdf["name"] == "hkdf-sha256":
        return crypto.subkey(material, salt, b"vault/v1/slot/" + kind.encode())
    if kdf["name"] == "argon2id+keyfile":
        # Both factors are needed: the passphrase through Argon2id, then the key file's 256 bits
        # mixed in with HKDF. Either alone derives nothing useful.
        key_file, passphrase = material[:KEYFILE_BYTES], material[KEYFILE_BYTES:]
        params = crypto.Argon2Params(
            int(kdf["memory_kib"]), int(kdf["iterations"]), int(kdf["lanes"])
        )
        stretched = crypto.argon2id(passphrase, salt, params)
        return crypto.subkey(key_file + stretched, salt, b"vault/v1/slot/" + kind.encode())
    raise IntegrityError(f"unknown key derivation {kdf['name']!r}")


def _slot_aad(slot_id: str, kind: str) -> bytes:
    return b"vault/v1/slot/" + slot_id.encode() + b"/" + kind.encode()


def make_slot(slot_id: str, secret: Secret, master_key: bytes) -> KeySlot:
    return make_slot_with_signer(slot_id, secret, master_key)[0]


def make_slot_with_signer(slot_id: str, secret: Secret, master_key: bytes) -> tuple[KeySlot, bytes]:
    """A new slot, and its signing private key (which the slot holds only wrapped)."""
    salt = crypto.random_bytes(crypto.SALT_BYTES)
    kdf: dict[str, Any]
    if secret.kind in (PASSPHRASE, TWO_FACTOR):
        p = kdf_params_for_new_slots()
        kdf = {
            "name": "argon2id" if secret.kind == PASSPHRASE else "argon2id+keyfile",
            "memory_kib": p.memory_kib,
            "iterations": p.iterations,
            "lanes": p.lanes,
            "salt": _b64(salt),
        }
    else:
        kdf = {"name": "hkdf-sha256", "salt": _b64(salt)}
    kek = _slot_kek(secret.kind, secret.material, kdf)
    nonce = crypto.random_bytes(crypto.NONCE_BYTES)
    wrapped = crypto.Aead(kek).seal(nonce, master_key, _slot_aad(slot_id, secret.kind))
    private, public = crypto.signing_keypair()
    signing_nonce = crypto.random_bytes(crypto.NONCE_BYTES)
    signing_wrapped = crypto.Aead(kek).seal(signing_nonce, private, _signing_aad(slot_id))
    slot = KeySlot(
        slot_id, secret.kind, _now(), kdf, nonce, wrapped, public, signing_nonce, signing_wrapped
    )
    return slot, private


def _signing_aad(slot_id: str) -> bytes:
    return b"vault/v1/slot-signing/" + slot_id.encode()


def open_slot(slot: KeySlot, secret: Secret) -> bytes | None:
    """The master key if `secret` opens `slot`, else None."""
    opened = unlock_slot(slot, secret)
    return opened[0] if opened else None


def unlock_slot(slot: KeySlot, secret: Secret) -> tuple[bytes, bytes] | None:
    """(master key, the slot's signing private key or b"") if `secret` opens `slot`."""
    if slot.kind != secret.kind:
        return None
    kek = _slot_kek(slot.kind, secret.material, slot.kdf)
    try:
        master = crypto.Aead(kek).open(slot.nonce, slot.wrapped, _slot_aad(slot.id, slot.kind))
    except crypto.AuthenticationFailed:
        return None
    signing = b""
    if slot.signing_wrapped:
        try:
            signing = crypto.Aead(kek).open(
                slot.signing_nonce, slot.signing_wrapped, _signing_aad(slot.id)
            )
        except crypto.AuthenticationFailed:
            signing = b""  # a damaged signing key costs signatures, never the repository
    return master, signing
