"""Cryptographic primitives, the only home of the `cryptography` library.

- AES-256-GCM (NIST SP 800-38D) with a 96-bit nonce and 128-bit tag for every sealed byte.
- HKDF-SHA256 (RFC 5869) derives a one-use subkey per object from an epoch key and a random
  salt, so no GCM key ever sees more than a handful of nonces (see docs/format.md, "Sealing").
- HMAC-SHA256 keys chunk ids, so an id never confirms a guess of content.
- Argon2id (RFC 9106) stretches passphrases into slot-wrapping keys.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
SALT_BYTES = 16


class AuthenticationFailed(Exception):
    """The ciphertext, its associated data or its key do not match (tampering or wrong key)."""


def random_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


def random_bytes(n: int) -> bytes:
    return secrets.token_bytes(n)


def subkey(key: bytes, salt: bytes, info: bytes) -> bytes:
    """A 256-bit key bound to `salt` and `info`, for one object."""
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=salt, info=info).derive(key)


class Aead:
    """AES-256-GCM under one key. Thread-safe: the underlying context holds no per-call state."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError("AES-256-GCM needs a 32-byte key")
        self._aesgcm = AESGCM(key)

    def seal(self, nonce: bytes, plaintext: bytes, associated: bytes) -> bytes:
        return self._aesgcm.encrypt(nonce, plaintext, associated)

    def open(self, nonce: bytes, ciphertext: bytes | memoryview, associated: bytes) -> bytes:
        try:
            return self._aesgcm.decrypt(nonce, ciphertext, associated)
        except InvalidTag:
            raise AuthenticationFailed() from None


def mac(key: bytes, data: bytes | bytearray | memoryview) -> bytes:
    """HMAC-SHA256: the chunk id of `data` under the repository's MAC key."""
    return hmac.digest(key, data, hashlib.sha256)


def constant_time_equal(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)


@dataclass(frozen=True)
class Argon2Params:
    """Argon2id cost parameters, stored in each passphrase slot so they can be raised later."""

    memory_kib: int
    iterations: int
    lanes: int


# About 0.35 s on a 2-core 2026 server. 64 MiB (RFC 9106's memory-constrained choice, restic's
# scrypt budget) keeps a job's peak memory low; 12 passes keep memory × passes as at 128 MiB × 6.
DEFAULT_ARGON2 = Argon2Params(memory_kib=65536, iterations=12, lanes=4)
# Far below OWASP's floor (m >= 19 MiB, t >= 2, p = 1): only for the test hook, never for users.
TEST_ARGON2 = Argon2Params(memory_kib=8, iterations=1, lanes=1)


# Bounds a slot's stored parameters must respect, so a planted slot cannot exhaust memory.
# What a slot may ask for. A planted slot must not make opening cost minutes: 1 GiB and 16
# passes is 16x the default's memory and beyond any slot vault makes; larger is damage.
MAX_ARGON2 = Argon2Params(memory_kib=1024 * 1024, iterations=16, lanes=16)


# One derivation at a time in a process. cryptography runs a derivation's lanes on OpenSSL's
# thread pool, which it sizes to the machine's cores, and holds the GIL while it waits: two
# derivations with more than one lane started at once from two threads (two sign-ins to the
# console, a sign-in while a repository opens) each wait for pool threads the other holds, and
# the whole process hangs (cryptography 50 with OpenSSL 4.0, reproduced on 2 cores). In turn,
# each still gets every core, and the memory is one derivation's at a time.
_ARGON2_TURN = threading.Lock()


def argon2id(secret: bytes, salt: bytes, params: Argon2Params) -> bytes:
    kdf = Argon2id(
        salt=salt,
        length=KEY_BYTES,
        iterations=params.iterations,
        lanes=params.lanes,
        memory_cost=max(params.memory_kib, 8 * params.lanes),
    )
    with _ARGON2_TURN:
        return kdf.derive(secret)


# -- signatures (Ed25519): who wrote an audit event or drill record ---------------------------

SIGNATURE_BYTES = 64


def signing_keypair() -> tuple[bytes, bytes]:
    """A new Ed25519 key pair as raw bytes: (private 32, public 32)."""
    private = Ed25519PrivateKey.generate()
    raw = private.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    return raw, _public_raw(private)


def _public_raw(private: Ed25519PrivateKey) -> bytes:
    return private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )


def sign(private_raw: bytes, data: bytes) -> bytes:
    return Ed25519PrivateKey.from_private_bytes(private_raw).sign(data)


def verify_signature(public_raw: bytes, data: bytes, signature: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public_raw).verify(signature, data)
    except (InvalidSignature, ValueError):
        return False
    return True


# -- the console's TLS certificate (X.509): generated once when none is given -----------------


def self_signed_certificate(names: tuple[str, ...], days: int = 825) -> tuple[bytes, bytes]:
    """(certificate PEM, private key PEM) of a new self-signed ECDSA P-256 certificate for
    `names` (DNS names or IP addresses). 825 days: the longest validity browsers accept."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    alternatives: list[x509.GeneralName] = []
    for name in names:
        try:
            alternatives.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alternatives.append(x509.DNSName(name))
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alternatives), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return certificate.public_bytes(serialization.Encoding.PEM), key_pem


def certificate_fingerprint(pem: bytes) -> str:
    """The SHA-256 fingerprint of a PEM certificate, as browsers show it (AA:BB:…)."""
    from cryptography import x509

    try:
        der = x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)
    except ValueError:
        raise ValueError("not a PEM certificate") from None
    return ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())
