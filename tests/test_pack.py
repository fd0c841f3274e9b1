"""Packs: blobs round trip, and any damage, renaming or mix-up is detected, never returned."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.strategies import (
    blob_ids,
    blob_types,
    compression_levels,
    flip,
    flip_masks,
    payloads,
    repetitive_bytes,
)
from vault.errors import IntegrityError
from vault.format import compression, crypto
from vault.format.pack import (
    HEADER_SIZE,
    BlobType,
    PackBuilder,
    PackEntry,
    open_blob,
    pack_key,
    parse_header,
    read_trailer,
)

EPOCH = 3
EPOCH_KEY = bytes(range(32))
PACK_ID = "ab" * 32
NAME = f"data/ab/{PACK_ID}"

Blob = tuple[BlobType, bytes, bytes, int]  # type, id, data, compression level

blob_lists = st.lists(
    st.tuples(blob_types, blob_ids, payloads(2048), compression_levels),
    max_size=6,
    unique_by=lambda blob: blob[1],
)


def build(blobs: list[Blob], pack_id: str = PACK_ID) -> tuple[PackBuilder, bytes]:
    builder = PackBuilder(pack_id, EPOCH, EPOCH_KEY)
    for blob_type, blob_id, data, level in blobs:
        builder.add(blob_type, blob_id, data, level)
    return builder, builder.finish()


def trailer(data: bytes, pack_id: str = PACK_ID) -> list[PackEntry]:
    return read_trailer(data, {EPOCH: EPOCH_KEY}, pack_id=pack_id, pack_name=NAME)


def open_entry(key: crypto.Aead, entry: PackEntry, data: bytes) -> bytes:
    return open_blob(key, entry, data[entry.offset : entry.offset + entry.length], pack_name=NAME)


@settings(max_examples=150, deadline=None)
@given(blobs=blob_lists)
def test_pack_round_trip_returns_entries_and_original_blobs(blobs: list[Blob]) -> None:
    builder, data = build(blobs)
    assert trailer(data) == builder.entries
    assert [(e.type, e.id, e.raw_length) for e in builder.entries] == [
        (t, i, len(d)) for t, i, d, _ in blobs
    ]
    for entry, (_, _, original, _) in zip(builder.entries, blobs, strict=True):
        assert open_entry(builder.key, entry, data) == original
    # The key derived from the index's (epoch, salt) is the builder's key.
    epoch, salt = parse_header(data, pack_name=NAME)
    assert (epoch, salt) == (EPOCH, builder.salt)
    rederived = pack_key(EPOCH_KEY, salt, PACK_ID)
    for entry, (_, _, original, _) in zip(builder.entries, blobs, strict=True):
        assert open_entry(rederived, entry, data) == original


@settings(max_examples=200, deadline=None)
@given(blobs=blob_lists, choice=st.data(), mask=flip_masks)
def test_flipped_byte_anywhere_in_pack_is_detected(
    blobs: list[Blob], choice: st.DataObject, mask: int
) -> None:
    builder, data = build(blobs)
    position = choice.draw(st.integers(0, len(data) - 1), label="position")
    damaged = flip(data, position, mask)

    trailer_failed = False
    try:
        entries = trailer(damaged)
    except IntegrityError as exc:
        assert NAME in str(exc)
        trailer_failed = True
    else:
        assert entries == builder.entries, "damaged trailer returned different entries"

    failed_blobs = set()
    for number, (entry, (_, _, original, _)) in enumerate(zip(builder.entries, blobs, strict=True)):
        try:
            plain = open_entry(builder.key, entry, damaged)
        except IntegrityError as exc:
            assert NAME in str(exc)
            failed_blobs.add(number)
        else:
            assert plain == original, "damaged blob returned different data"

    inside = {
        number
        for number, e in enumerate(builder.entries)
        if e.offset <= position < e.offset + e.length
    }
    if inside:
        assert failed_blobs == inside  # the damaged blob, and only it, fails
    else:
        assert trailer_failed  # header, trailer or length damaged
        assert not failed_blobs
    assert trailer_failed or failed_blobs


@settings(max_examples=100, deadline=None)
@given(blobs=blob_lists, choice=st.data())
def test_truncated_pack_is_detected(blobs: list[Blob], choice: st.DataObject) -> None:
    _, data = build(blobs)
    cut = choice.draw(st.integers(0, len(data) - 1), label="kept bytes")
    with pytest.raises(IntegrityError, match=NAME):
        trailer(data[:cut])


@settings(max_examples=50, deadline=None)
@given(blobs=blob_lists.filter(bool), extra=st.binary(min_size=1, max_size=64))
def test_pack_with_bytes_appended_is_detected(blobs: list[Blob], extra: bytes) -> None:
    _, data = build(blobs)
    with pytest.raises(IntegrityError, match=NAME):
        trailer(data + extra)


@settings(max_examples=50, deadline=None)
@given(blobs=blob_lists.filter(bool), other_id=blob_ids.map(bytes.hex))
def test_pack_renamed_to_another_id_fails_authentication(blobs: list[Blob], other_id: str) -> None:
    if other_id == PACK_ID:
        other_id = "cd" * 32
    builder, data = build(blobs)
    with pytest.raises(IntegrityError, match=NAME):
        trailer(data, pack_id=other_id)
    wrong_key = pack_key(EPOCH_KEY, builder.salt, other_id)
    for entry in builder.entries:
        with pytest.raises(IntegrityError, match=NAME):
            open_entry(wrong_key, entry, data)


def _two_blob_pack() -> tuple[PackBuilder, bytes]:
    return build(
        [
            (BlobType.DATA, b"\x01" * 32, b"first blob " * 10, 0),
            (BlobType.TREE, b"\x02" * 32, b"second blob " * 10, 3),
        ]
    )


@pytest.mark.parametrize(
    "change",
    [
        {"id": b"\x03" * 32},
        {"id": b"\x02" * 32},  # the other blob's id
        {"type": BlobType.TREE},
    ],
)
def test_blob_opened_with_wrong_id_or_type_fails(change: dict[str, object]) -> None:
    builder, data = _two_blob_pack()
    entry = dataclasses.replace(builder.entries[0], **change)  # type: ignore[arg-type]
    with pytest.raises(IntegrityError, match=NAME):
        open_entry(builder.key, entry, data)


def test_blob_opened_at_another_blobs_offset_fails() -> None:
    builder, data = _two_blob_pack()
    first, second = builder.entries
    moved = dataclasses.replace(first, offset=second.offset, length=second.length)
    with pytest.raises(IntegrityError, match=NAME):
        open_entry(builder.key, moved, data)


def test_blob_read_short_is_reported_as_truncated() -> None:
    builder, data = _two_blob_pack()
    entry = builder.entries[1]
    short = data[entry.offset : entry.offset + entry.length - 1]
    with pytest.raises(IntegrityError, match="truncated"):
        open_blob(builder.key, entry, short, pack_name=NAME)


def test_pack_of_unknown_epoch_is_rejected() -> None:
    _, data = _two_blob_pack()
    with pytest.raises(IntegrityError, match="unknown epoch"):
        read_trailer(data, {EPOCH + 1: EPOCH_KEY}, pack_id=PACK_ID, pack_name=NAME)


def test_pack_opened_under_another_epoch_key_fails() -> None:
    _, data = _two_blob_pack()
    with pytest.raises(IntegrityError, match=NAME):
        read_trailer(data, {EPOCH: bytes(32)}, pack_id=PACK_ID, pack_name=NAME)


def test_read_trailer_accepts_a_precomputed_key() -> None:
    builder, data = _two_blob_pack()
    assert (
        read_trailer(data, None, pack_id=PACK_ID, pack_name=NAME, key=builder.key)
        == builder.entries
    )


def test_non_pack_data_is_rejected_by_its_header() -> None:
    with pytest.raises(IntegrityError, match="not a vault pack"):
        parse_header(b"XXXX" + bytes(HEADER_SIZE), pack_name=NAME)
    with pytest.raises(IntegrityError, match="truncated"):
        parse_header(b"VLP1", pack_name=NAME)


def test_empty_pack_round_trips_to_no_entries() -> None:
    _, data = build([])
    assert trailer(data) == []


@settings(max_examples=30, deadline=None)
@given(data=repetitive_bytes(4096).filter(lambda d: len(d) >= 256))
def test_compressible_blob_is_stored_compressed_at_level_3_and_raw_at_level_0(
    data: bytes,
) -> None:
    builder, packed = build([(BlobType.DATA, b"\x01" * 32, data, 3)])
    (entry,) = builder.entries
    assert entry.length < len(data)
    assert open_entry(builder.key, entry, packed) == data
    raw_builder, _ = build([(BlobType.DATA, b"\x01" * 32, data, 0)])
    assert raw_builder.entries[0].length == len(data) + 1 + crypto.TAG_BYTES


@pytest.mark.parametrize("encoding", [compression.RAW, compression.ZSTD])
def test_blob_whose_recorded_length_disagrees_with_its_content_is_rejected(
    encoding: int,
) -> None:
    raw = b"abcdefgh" * 64
    body = raw if encoding == compression.RAW else compression.compress(raw, 3)[1]
    builder = PackBuilder(PACK_ID, EPOCH, EPOCH_KEY)
    builder.add_compressed(BlobType.DATA, b"\x01" * 32, len(raw) - 1, encoding, body)
    data = builder.finish()
    with pytest.raises(IntegrityError, match=NAME):
        open_entry(builder.key, builder.entries[0], data)
