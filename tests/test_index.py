"""The compact blob index behaves like a dict of first-seen locations; its encoding round trips."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
)

from tests.strategies import blob_ids, pack_entries, pack_infos, u32
from vault.errors import IntegrityError
from vault.format.index import Index, Location, PackInfo, decode, encode
from vault.format.pack import BlobType, PackEntry

# A small pool makes the same blob id turn up in several packs (dedup across packs).
POOL = [bytes([n]) * 32 for n in range(12)]
pooled_or_fresh_ids = st.one_of(st.sampled_from(POOL), blob_ids)


def entries_with(ids: st.SearchStrategy[bytes]) -> st.SearchStrategy[list[PackEntry]]:
    return st.lists(
        st.builds(
            PackEntry,
            type=st.sampled_from(list(BlobType)),
            id=ids,
            offset=u32,
            length=u32,
            raw_length=u32,
        ),
        max_size=8,
    )


class IndexModel(RuleBasedStateMachine):
    """Index against a dict: a blob's first location wins, whatever freezes come between.
    Added packs are visible at once; loaded packs (bulk) at the next freeze, behind everything
    already visible."""

    packs = Bundle("packs")

    @initialize()
    def start(self) -> None:
        self.index = Index()
        self.model: dict[bytes, Location] = {}
        self.model_packs: dict[str, PackInfo] = {}
        self.seen_ids: list[bytes] = list(POOL)
        self.loaded: list[tuple[PackInfo, list[PackEntry]]] = []

    @rule(target=packs, pack=pack_infos)
    def new_pack(self, pack: PackInfo) -> PackInfo:
        return pack

    @rule(pack=packs, entries=entries_with(pooled_or_fresh_ids))
    def add_pack(self, pack: PackInfo, entries: list[PackEntry]) -> None:
        self.index.add_pack(pack, entries)
        registered = self.model_packs.setdefault(pack.id, pack)
        for entry in entries:
            self.model.setdefault(entry.id, Location(registered, entry))
            self.seen_ids.append(entry.id)

    @rule(pack=packs, entries=entries_with(pooled_or_fresh_ids))
    def load_pack(self, pack: PackInfo, entries: list[PackEntry]) -> None:
        self.index.load_pack(pack, entries)
        self.model_packs.setdefault(pack.id, pack)
        self.loaded.append((pack, entries))
        self.seen_ids.extend(e.id for e in entries)

    @rule()
    def freeze(self) -> None:
        self.index.freeze()
        for pack, entries in self.loaded:
            for entry in entries:
                self.model.setdefault(entry.id, Location(self.model_packs[pack.id], entry))
        self.loaded = []

    @rule(blob_id=pooled_or_fresh_ids)
    def lookup_matches_model(self, blob_id: bytes) -> None:
        assert self.index.lookup(blob_id) == self.model.get(blob_id)
        assert (blob_id in self.index) == (blob_id in self.model)
        if blob_id in self.model:
            assert self.index[blob_id] == self.model[blob_id]
        else:
            with pytest.raises(KeyError):
                self.index[blob_id]

    @invariant()
    def same_length_and_contents(self) -> None:
        if not hasattr(self, "index"):
            return
        assert len(self.index) == len(self.model)
        listed = list(self.index)
        assert len(listed) == len(self.model)
        assert {loc.entry.id: loc for loc in listed} == self.model
        for blob_id in self.seen_ids[-16:]:
            assert self.index.lookup(blob_id) == self.model.get(blob_id)

    @invariant()
    def same_packs(self) -> None:
        if not hasattr(self, "index"):
            return
        assert self.index.packs() == list(self.model_packs.values())
        for pack_id, pack in self.model_packs.items():
            assert self.index.pack(pack_id) == pack


IndexModel.TestCase.settings = settings(max_examples=100, stateful_step_count=25, deadline=None)
test_index_behaves_like_a_dict_of_first_locations = IndexModel.TestCase


def test_non_bytes_are_never_in_the_index() -> None:
    index = Index()
    pack = PackInfo("ab" * 32, 1, bytes(16))
    index.add_pack(pack, [PackEntry(BlobType.DATA, POOL[0], 24, 50, 30)])
    index.freeze()
    assert POOL[0] in index
    assert POOL[0].hex() not in index
    assert None not in index
    assert bytearray(POOL[0]) not in index


def test_frozen_lookup_finds_every_id_among_many() -> None:
    rng = random.Random(4)
    pack = PackInfo("cd" * 32, 2, bytes(range(16)))
    entries = [
        PackEntry(BlobType(i % 2), rng.randbytes(32), 24 + i, i + 17, i) for i in range(2000)
    ]
    index = Index()
    index.add_pack(pack, entries[:1000])
    index.freeze()
    index.add_pack(pack, entries[1000:])
    index.freeze()
    for entry in entries:
        assert index.lookup(entry.id) == Location(pack, entry)
    assert index.lookup(bytes(32)) is None
    assert index.lookup(b"\xff" * 32) is None


index_contents = st.lists(
    st.tuples(pack_infos, st.lists(pack_entries, max_size=6)),
    max_size=5,
)


@settings(max_examples=150, deadline=None)
@given(packs=index_contents)
def test_index_encoding_round_trips(packs: list[tuple[PackInfo, list[PackEntry]]]) -> None:
    assert decode(encode(packs), name="index/i1") == packs


@settings(max_examples=150, deadline=None)
@given(packs=index_contents, choice=st.data())
def test_truncated_index_payload_is_rejected(
    packs: list[tuple[PackInfo, list[PackEntry]]], choice: st.DataObject
) -> None:
    payload = encode(packs)
    cut = choice.draw(st.integers(0, len(payload) - 1), label="kept bytes")
    with pytest.raises(IntegrityError, match="index/i1") as caught:
        decode(payload[:cut], name="index/i1")
    assert caught.value.key == "index/i1"


@settings(max_examples=50, deadline=None)
@given(packs=index_contents, extra=st.binary(min_size=1, max_size=60))
def test_index_payload_with_trailing_bytes_is_rejected(
    packs: list[tuple[PackInfo, list[PackEntry]]], extra: bytes
) -> None:
    with pytest.raises(IntegrityError, match="index/i1"):
        decode(encode(packs) + extra, name="index/i1")


@settings(max_examples=200, deadline=None)
@given(garbage=st.binary(max_size=400))
def test_garbage_index_payload_raises_only_integrity_error(garbage: bytes) -> None:
    try:
        decoded = decode(garbage, name="index/i1")
    except IntegrityError as exc:
        assert "index/i1" in str(exc)
    else:
        assert isinstance(decoded, list)


@pytest.mark.parametrize(
    "payload",
    [
        # one pack, one entry naming pack number 1 (there is only pack 0)
        (1).to_bytes(4, "big")
        + bytes(52)
        + (1).to_bytes(4, "big")
        + bytes(33)
        + (1).to_bytes(4, "big")
        + bytes(16),
        # one pack, one entry with blob type 7
        (1).to_bytes(4, "big") + bytes(52) + (1).to_bytes(4, "big") + b"\x07" + bytes(52),
        # a pack count far beyond the payload
        b"\xff\xff\xff\xff" + bytes(100),
    ],
    ids=["pack-number-out-of-range", "unknown-blob-type", "huge-pack-count"],
)
def test_structurally_invalid_index_payload_is_rejected(payload: bytes) -> None:
    with pytest.raises(IntegrityError, match="index/i1"):
        decode(payload, name="index/i1")


def test_frozen_index_costs_under_64_bytes_per_blob() -> None:
    count = 100_000
    rng = random.Random(9)
    pack = PackInfo("ef" * 32, 1, bytes(16))
    index = Index()
    for start in range(0, count, 10_000):
        index.add_pack(
            pack,
            (
                PackEntry(BlobType.DATA, rng.randbytes(32), 24 + i, 1000, 2000)
                for i in range(start, start + 10_000)
            ),
        )
    index.freeze()
    assert len(index) == count
    per_blob = index.memory_bytes() / count
    assert per_blob < 64, f"{per_blob:.1f} bytes per blob"
    assert all(index.lookup(loc.entry.id) == loc for loc in list(index)[:1000])


def test_many_added_blobs_are_compacted_and_stay_findable_first_location_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("vault.format.index.PENDING_LIMIT", 100)
    rng = random.Random(11)
    index = Index()
    ids = [rng.randbytes(32) for _ in range(1000)]
    first = PackInfo("aa" * 32, 1, bytes(16))
    second = PackInfo("bb" * 32, 1, bytes(16))
    index.add_pack(first, [PackEntry(BlobType.DATA, b, 24, 10, 20) for b in ids])
    # The same blobs again in another pack: the first location must win, merged or not.
    index.add_pack(second, [PackEntry(BlobType.DATA, b, 99, 10, 20) for b in ids[::3]])
    assert len(index._pending) < 100  # compacted as it went, not held as a dict
    assert len(index) == 1000
    assert all(index[b].pack == first and index[b].entry.offset == 24 for b in ids)
