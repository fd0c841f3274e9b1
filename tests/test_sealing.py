"""Sealed objects: payloads round trip; damage, swaps and unknown keys are IntegrityErrors."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.strategies import compression_levels, flip, flip_masks, hex_ids, payloads
from vault.errors import IntegrityError
from vault.format import crypto, sealing
from vault.format.sealing import HEADER_SIZE, Kind, open_sealed, seal, sealed_epoch


@dataclass
class Keys:
    """EpochKeys: the master key as epoch 0 and a few data epochs."""

    keys: dict[int, bytes] = field(
        default_factory=lambda: {epoch: bytes([epoch + 1]) * 32 for epoch in range(3)}
    )
    current_epoch: int = 2

    def epoch_key(self, epoch: int) -> bytes:
        return self.keys[epoch]

    def missing_epoch(self, epoch: int) -> str:
        return "which this test keyring does not hold"


KEYS = Keys()
OBJECT_ID = "5e" * 32
NAME = f"snapshots/{OBJECT_ID}"
kinds = st.sampled_from(list(Kind))


@settings(max_examples=150, deadline=None)
@given(kind=kinds, object_id=hex_ids, payload=payloads(4096), level=compression_levels)
def test_sealed_payload_opens_to_the_same_bytes(
    kind: Kind, object_id: str, payload: bytes, level: int
) -> None:
    blob = seal(KEYS, kind, object_id, payload, compress_level=level)
    assert blob[:4] == sealing.MAGIC
    assert open_sealed(KEYS, kind, object_id, blob, name=NAME) == payload
    assert sealed_epoch(blob, kind, name=NAME) == KEYS.current_epoch


@pytest.mark.parametrize("kind", list(Kind))
@pytest.mark.parametrize("level", [0, 3])
@pytest.mark.parametrize("payload", [b"", b"x", b"compressible " * 500, bytes(range(256)) * 8])
def test_every_kind_round_trips_at_each_compression_level(
    kind: Kind, level: int, payload: bytes
) -> None:
    blob = seal(KEYS, kind, OBJECT_ID, payload, compress_level=level)
    assert open_sealed(KEYS, kind, OBJECT_ID, blob, name=NAME) == payload


def test_compressible_payload_is_sealed_smaller_at_level_3() -> None:
    payload = b"compressible " * 500
    small = seal(KEYS, Kind.SNAPSHOT, OBJECT_ID, payload, compress_level=3)
    raw = seal(KEYS, Kind.SNAPSHOT, OBJECT_ID, payload, compress_level=0)
    assert len(small) < len(payload) // 4
    assert len(raw) == HEADER_SIZE + 1 + len(payload) + crypto.TAG_BYTES


def test_sealing_twice_gives_different_bytes() -> None:
    first = seal(KEYS, Kind.INDEX, OBJECT_ID, b"same payload")
    second = seal(KEYS, Kind.INDEX, OBJECT_ID, b"same payload")
    assert first != second


def test_payload_does_not_appear_in_the_sealed_bytes() -> None:
    payload = b"ZQXPLAINTEXTMARKER" * 20
    for level in (0, 3):
        blob = seal(KEYS, Kind.SNAPSHOT, OBJECT_ID, payload, compress_level=level)
        assert b"ZQXPLAINTEXTMARKER" not in blob


def test_explicit_epoch_is_used_and_opens() -> None:
    blob = seal(KEYS, Kind.CONFIG, "config", b"{}", epoch=0)
    assert sealed_epoch(blob, Kind.CONFIG, name="config") == 0
    assert open_sealed(KEYS, Kind.CONFIG, "config", blob, name="config") == b"{}"


@settings(max_examples=200, deadline=None)
@given(
    kind=kinds,
    payload=payloads(512),
    level=compression_levels,
    choice=st.data(),
    mask=flip_masks,
)
def test_flipped_byte_anywhere_in_sealed_object_is_detected(
    kind: Kind, payload: bytes, level: int, choice: st.DataObject, mask: int
) -> None:
    blob = seal(KEYS, kind, OBJECT_ID, payload, compress_level=level)
    position = choice.draw(st.integers(0, len(blob) - 1), label="position")
    with pytest.raises(IntegrityError) as caught:
        open_sealed(KEYS, kind, OBJECT_ID, flip(blob, position, mask), name=NAME)
    assert NAME in str(caught.value)
    assert caught.value.key == NAME


@settings(max_examples=100, deadline=None)
@given(payload=payloads(512), level=compression_levels, choice=st.data())
def test_truncated_sealed_object_is_detected(
    payload: bytes, level: int, choice: st.DataObject
) -> None:
    blob = seal(KEYS, Kind.INDEX, OBJECT_ID, payload, compress_level=level)
    cut = choice.draw(st.integers(0, len(blob) - 1), label="kept bytes")
    with pytest.raises(IntegrityError) as caught:
        open_sealed(KEYS, Kind.INDEX, OBJECT_ID, blob[:cut], name=NAME)
    assert NAME in str(caught.value)


def test_object_with_bytes_appended_is_detected() -> None:
    blob = seal(KEYS, Kind.INDEX, OBJECT_ID, b"payload")
    with pytest.raises(IntegrityError, match=NAME):
        open_sealed(KEYS, Kind.INDEX, OBJECT_ID, blob + b"\0", name=NAME)


@pytest.mark.parametrize("wrong", [k for k in Kind if k is not Kind.SNAPSHOT])
def test_object_opened_as_the_wrong_kind_is_rejected(wrong: Kind) -> None:
    blob = seal(KEYS, Kind.SNAPSHOT, OBJECT_ID, b"payload")
    with pytest.raises(IntegrityError, match="wrong kind") as caught:
        open_sealed(KEYS, wrong, OBJECT_ID, blob, name=NAME)
    assert NAME in str(caught.value)


def test_object_with_its_kind_byte_rewritten_fails_authentication() -> None:
    blob = bytearray(seal(KEYS, Kind.SNAPSHOT, OBJECT_ID, b"payload"))
    blob[4] = int(Kind.INDEX)  # an attacker relabels a snapshot as an index
    with pytest.raises(IntegrityError, match="failed authentication") as caught:
        open_sealed(KEYS, Kind.INDEX, OBJECT_ID, bytes(blob), name=NAME)
    assert NAME in str(caught.value)


def test_objects_swapped_between_names_are_rejected() -> None:
    other_id = "a1" * 32
    mine = seal(KEYS, Kind.SNAPSHOT, OBJECT_ID, b"snapshot one")
    theirs = seal(KEYS, Kind.SNAPSHOT, other_id, b"snapshot two")
    with pytest.raises(IntegrityError, match="failed authentication") as caught:
        open_sealed(KEYS, Kind.SNAPSHOT, OBJECT_ID, theirs, name=NAME)
    assert NAME in str(caught.value)
    with pytest.raises(IntegrityError, match="failed authentication"):
        open_sealed(KEYS, Kind.SNAPSHOT, other_id, mine, name=f"snapshots/{other_id}")


def test_object_sealed_under_an_unknown_epoch_is_rejected() -> None:
    newer = Keys(keys={**KEYS.keys, 7: b"\x77" * 32}, current_epoch=7)
    blob = seal(newer, Kind.INDEX, OBJECT_ID, b"payload")
    with pytest.raises(
        IntegrityError, match="key epoch 7, which this test keyring does not hold"
    ) as caught:
        open_sealed(KEYS, Kind.INDEX, OBJECT_ID, blob, name=NAME)
    assert NAME in str(caught.value)


def test_object_opened_with_a_different_key_for_its_epoch_fails() -> None:
    blob = seal(KEYS, Kind.INDEX, OBJECT_ID, b"payload")
    other = Keys(keys={2: b"\xee" * 32})
    with pytest.raises(IntegrityError, match="failed authentication"):
        open_sealed(other, Kind.INDEX, OBJECT_ID, blob, name=NAME)


def test_non_vault_bytes_are_rejected_by_magic() -> None:
    junk = b"PK\x03\x04" + bytes(100)
    with pytest.raises(IntegrityError, match="not a vault sealed object") as caught:
        open_sealed(KEYS, Kind.INDEX, OBJECT_ID, junk, name=NAME)
    assert NAME in str(caught.value)
