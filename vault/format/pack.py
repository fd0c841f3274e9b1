"""Pack files: many sealed blobs in one object, ending with their own sealed table of contents.

Layout (docs/format.md, "Packs"):

    header  : magic "VLP1" | epoch (u32 BE) | salt (16)                      24 bytes
    blobs   : AES-256-GCM(pack key, nonce = u96 BE offset, encoding||data,
                          aad = blob type || blob id)                          one after another
    trailer : AES-256-GCM(pack key, nonce = 0xff * 12, entries,
                          aad = "trailer" || header)
    length  : u32 BE size of the sealed trailer                              4 bytes

pack key = HKDF(epoch key, salt, "vault/v1/pack/" + pack id). Each blob's nonce is its offset,
unique within the pack by construction; the pack key is used for one pack only. Because the id
is in the key derivation, a pack copied under another name fails authentication; because the
blob id and type are the associated data, a blob moved or swapped fails too.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from vault.errors import IntegrityError
from vault.format import compression, crypto

MAGIC = b"VLP1"
_HEADER = struct.Struct(">4sI16s")
HEADER_SIZE = _HEADER.size
_ENTRY = struct.Struct(">B32sIII")  # type, id, offset, length, raw length
_TRAILER_NONCE = b"\xff" * crypto.NONCE_BYTES
_LENGTH = struct.Struct(">I")
OVERHEAD_PER_BLOB = crypto.TAG_BYTES + 1 + _ENTRY.size


class BlobType(IntEnum):
    DATA = 0
    TREE = 1


@dataclass(frozen=True, slots=True)
class PackEntry:
    type: BlobType
    id: bytes
    offset: int
    length: int
    raw_length: int


def pack_key(epoch_key: bytes, salt: bytes, pack_id: str) -> crypto.Aead:
    return crypto.Aead(crypto.subkey(epoch_key, salt, b"vault/v1/pack/" + pack_id.encode()))


def _nonce(offset: int) -> bytes:
    return offset.to_bytes(crypto.NONCE_BYTES, "big")


def seal_blob(
    key: crypto.Aead, offset: int, blob_type: BlobType, blob_id: bytes, encoding: int, body: bytes
) -> bytes:
    return key.seal(_nonce(offset), bytes([encoding]) + body, bytes([blob_type]) + blob_id)


def open_blob(
    key: crypto.Aead, entry: PackEntry, sealed: bytes | memoryview, *, pack_name: str
) -> bytes | bytearray:
    """The plaintext of one blob; IntegrityError naming the pack on any mismatch."""
    if len(sealed) != entry.length:
        raise IntegrityError(f"{pack_name} is truncated at offset {entry.offset}", key=pack_name)
    try:
        plain = key.open(_nonce(entry.offset), sealed, bytes([entry.type]) + entry.id)
    except crypto.AuthenticationFailed:
        raise IntegrityError(
            f"{pack_name} failed authentication at offset {entry.offset} (corrupt or tampered)",
            key=pack_name,
        ) from None
    try:
        # A view past the encoding byte: slicing would copy the whole payload once more.
        data = compression.decompress(plain[0], memoryview(plain)[1:], entry.raw_length)
    except (ValueError, IndexError) as exc:
        raise IntegrityError(f"{pack_name}: blob at {entry.offset} undecodable: {exc}") from None
    if len(data) != entry.raw_length:
        raise IntegrityError(f"{pack_name}: blob at {entry.offset} has the wrong length")
    return data


class PackBuilder:
    """Accumulates sealed blobs in memory; `finish` returns the complete pack bytes."""

    def __init__(self, pack_id: str, epoch: int, epoch_key: bytes) -> None:
        self.pack_id = pack_id
        self.epoch = epoch
        self.salt = crypto.random_bytes(crypto.SALT_BYTES)
        self.key = pack_key(epoch_key, self.salt, pack_id)
        self._header = _HEADER.pack(MAGIC, epoch, self.salt)
        self._parts: list[bytes] = [self._header]
        self.size = HEADER_SIZE
        self.entries: list[PackEntry] = []

    def add(
        self, blob_type: BlobType, blob_id: bytes, data: bytes | memoryview, level: int
    ) -> None:
        encoding, body = compression.compress(data, level)
        self.add_compressed(blob_type, blob_id, len(data), encoding, body)

    def add_compressed(
        self, blob_type: BlobType, blob_id: bytes, raw_length: int, encoding: int, body: bytes
    ) -> None:
        """Seal an already compressed blob at the end of the pack (compress outside locks)."""
        sealed = seal_blob(self.key, self.size, blob_type, blob_id, encoding, body)
        self.entries.append(PackEntry(blob_type, blob_id, self.size, len(sealed), raw_length))
        self._parts.append(sealed)
        self.size += len(sealed)

    def finish(self) -> bytes:
        table = b"".join(
            _ENTRY.pack(e.type, e.id, e.offset, e.length, e.raw_length) for e in self.entries
        )
        trailer = self.key.seal(_TRAILER_NONCE, table, b"trailer" + self._header)
        self._parts.append(trailer)
        self._parts.append(_LENGTH.pack(len(trailer)))
        data = b"".join(self._parts)
        self._parts = []
        return data


def parse_header(data: bytes, *, pack_name: str) -> tuple[int, bytes]:
    """(epoch, salt) from the first HEADER_SIZE bytes of a pack."""
    if len(data) < HEADER_SIZE:
        raise IntegrityError(f"{pack_name} is truncated (no header)", key=pack_name)
    magic, epoch, salt = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise IntegrityError(f"{pack_name} is not a vault pack", key=pack_name)
    return int(epoch), bytes(salt)


def read_trailer(
    data: bytes,
    epoch_key_for: dict[int, bytes] | None,
    *,
    pack_id: str,
    pack_name: str,
    key: crypto.Aead | None = None,
) -> list[PackEntry]:
    """The table of contents of a whole pack, authenticated. Needs either `key` or a map of
    epoch keys to derive it."""
    return read_trailer_parts(
        data[:HEADER_SIZE],
        data,
        len(data),
        epoch_key_for,
        pack_id=pack_id,
        pack_name=pack_name,
        key=key,
    )


def read_trailer_parts(
    header: bytes,
    tail: bytes,
    size: int,
    epoch_key_for: dict[int, bytes] | None,
    *,
    pack_id: str,
    pack_name: str,
    key: crypto.Aead | None = None,
) -> list[PackEntry]:
    """The same from a pack's first HEADER_SIZE bytes and its last `len(tail)` bytes (which
    must hold the trailer), so a pack's contents can be listed without downloading it."""
    epoch, salt = parse_header(header, pack_name=pack_name)
    if key is None:
        if epoch_key_for is None or epoch not in epoch_key_for:
            raise IntegrityError(
                f"{pack_name} is sealed under unknown epoch {epoch}", key=pack_name
            )
        key = pack_key(epoch_key_for[epoch], salt, pack_id)
    if size < HEADER_SIZE + _LENGTH.size + crypto.TAG_BYTES or len(tail) < _LENGTH.size:
        raise IntegrityError(f"{pack_name} is truncated (no trailer)", key=pack_name)
    (trailer_len,) = _LENGTH.unpack_from(tail, len(tail) - _LENGTH.size)
    start = size - _LENGTH.size - trailer_len
    if trailer_len < crypto.TAG_BYTES or start < HEADER_SIZE:
        raise IntegrityError(f"{pack_name} has a damaged trailer length", key=pack_name)
    if trailer_len + _LENGTH.size > len(tail):
        raise TrailerBeyondTail(trailer_len + _LENGTH.size)
    at = len(tail) - _LENGTH.size - trailer_len
    try:
        table = key.open(_TRAILER_NONCE, tail[at : at + trailer_len], b"trailer" + header)
    except crypto.AuthenticationFailed:
        raise IntegrityError(f"{pack_name} trailer failed authentication", key=pack_name) from None
    if len(table) % _ENTRY.size:
        raise IntegrityError(f"{pack_name} trailer is malformed", key=pack_name)
    entries = []
    for pos in range(0, len(table), _ENTRY.size):
        t, blob_id, offset, length, raw = _ENTRY.unpack_from(table, pos)
        if offset < HEADER_SIZE or offset + length > start or t not in (0, 1):
            raise IntegrityError(
                f"{pack_name} trailer names a blob outside the pack", key=pack_name
            )
        entries.append(PackEntry(BlobType(t), bytes(blob_id), offset, length, raw))
    return entries


class TrailerBeyondTail(Exception):
    """The trailer is longer than the tail given: fetch `needed` bytes from the end."""

    def __init__(self, needed: int) -> None:
        super().__init__(f"trailer needs the last {needed} bytes")
        self.needed = needed
