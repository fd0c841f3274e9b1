"""Recovery keys, key files, key slots and the keyring."""

from __future__ import annotations

import base64
import itertools
import json
import random
import string
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vault.errors import IntegrityError, UsageError, WrongKey
from vault.format import crypto
from vault.repo import keys
from vault.repo.keyring import Epoch, Keyring, MasterKeyOnly
from vault.repo.keys import (
    KEYFILE,
    PASSPHRASE,
    RECOVERY,
    KeySlot,
    Secret,
    make_slot,
    make_slot_with_signer,
    new_key_file_text,
    new_recovery_key,
    open_slot,
    parse_key_file,
    parse_recovery_key,
)
from vault.repo.repository import Repository
from vault.storage import MemoryStorage

MASTER = bytes(range(100, 132))
SLOT_ID = "51" * 32
BASE32 = string.ascii_uppercase + "234567"


def recovery_key_for(material: bytes, monkeypatch: pytest.MonkeyPatch) -> str:
    """The recovery key text `new_recovery_key` prints for `material` (its randomness pinned)."""
    with monkeypatch.context() as patch:
        patch.setattr(keys.secrets, "token_bytes", lambda n: material)
        text, returned = new_recovery_key()
    assert returned == material
    return text


def single_character_typos(text: str) -> list[str]:
    """Every text that differs from `text` in one base32 character of the key body."""
    body_start = len(keys.RECOVERY_PREFIX)
    return [
        text[:i] + replacement + text[i + 1 :]
        for i, char in enumerate(text)
        if i >= body_start and char in BASE32
        for replacement in BASE32
        if replacement != char
    ]


# -- recovery keys --------------------------------------------------------------------------


def test_new_recovery_key_parses_back_to_its_material() -> None:
    text, material = new_recovery_key()
    assert len(material) == 32
    assert text.startswith("VRK1-")
    assert parse_recovery_key(text) == material
    assert Secret.from_passphrase(text) == Secret(RECOVERY, material)


def test_recovery_keys_are_random() -> None:
    assert new_recovery_key()[1] != new_recovery_key()[1]


@pytest.mark.parametrize(
    "mangle",
    [
        str.lower,
        lambda t: t.replace("-", ""),
        lambda t: t.replace("-", " "),
        lambda t: "  " + t + "\n",
        lambda t: t.replace("-", "\n"),
        lambda t: " ".join(t),  # a space after every character
        lambda t: t[:10].lower() + t[10:],
    ],
    ids=["lowercase", "no-dashes", "spaces", "padded", "newlines", "spaced-out", "mixed-case"],
)
def test_recovery_key_tolerates_case_and_spacing(mangle: object) -> None:
    text, material = new_recovery_key()
    assert parse_recovery_key(mangle(text)) == material  # type: ignore[operator]


@pytest.mark.parametrize("seed", range(5))
def test_single_character_typo_in_recovery_key_never_yields_another_key(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    material = random.Random(seed).randbytes(32)
    text = recovery_key_for(material, monkeypatch)
    results = {parse_recovery_key(typo) for typo in single_character_typos(text)}
    # None (rejected), or the same key: the last character's low 3 bits are base32 padding.
    assert results <= {None, material}
    assert None in results


def test_typo_in_recovery_key_prefix_is_not_a_recovery_key() -> None:
    text, _ = new_recovery_key()
    assert parse_recovery_key("VRK2" + text[4:]) is None
    assert parse_recovery_key(text[:-1]) is None  # one character short
    assert parse_recovery_key(text + "A") is None  # one too many
    assert parse_recovery_key(text[:6] + "0" + text[7:]) is None  # not a base32 character


def test_known_single_character_typo_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    # A typo that slipped past the earlier 16-bit SHA-256 check; a CRC-16 catches every one.
    material = bytes.fromhex("45e54a009d49a59c7f1e5b7e7af4fbd32a371bde225848556af1703e7a89f3ba")
    text = recovery_key_for(material, monkeypatch)
    typo = text[:17] + "7" + text[18:]
    assert text[17] == "S"
    assert parse_recovery_key(typo) is None


def test_every_single_typo_and_neighbour_swap_is_caught_for_many_keys(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = random.Random(7)
    for _ in range(40):
        material = rng.randbytes(32)
        text = recovery_key_for(material, monkeypatch)
        body = [i for i, c in enumerate(text) if c != "-" and i >= 5]
        for i in body[:-1]:  # the last character carries 3 padding bits
            for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567":
                if c != text[i]:
                    assert parse_recovery_key(text[:i] + c + text[i + 1 :]) is None
        for i, j in itertools.pairwise(body[:-1]):
            if text[i] != text[j]:
                swapped = list(text)
                swapped[i], swapped[j] = swapped[j], swapped[i]
                assert parse_recovery_key("".join(swapped)) is None


def test_mistyped_recovery_key_is_reported_as_a_typo_not_tried_as_a_passphrase(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Pinned material: a random key's typo slips past the 16-bit check once in 65536.
    text = recovery_key_for(random.Random(0).randbytes(32), monkeypatch)
    position = 6  # inside the first group of the key body
    typo = text[:position] + ("B" if text[position] == "A" else "A") + text[position + 1 :]
    assert parse_recovery_key(typo) is None
    with pytest.raises(WrongKey, match="typo"):
        Secret.from_passphrase(typo)


@pytest.mark.parametrize(
    "text", ["correct horse battery staple", "", "VRK1", "VRK1-AAAAA", "vrk1 not a key"]
)
def test_ordinary_passphrases_are_not_recovery_keys(text: str) -> None:
    assert parse_recovery_key(text) is None
    assert Secret.from_passphrase(text) == Secret(PASSPHRASE, text.encode())


# -- key files --------------------------------------------------------------------------------


def test_key_file_text_parses_to_32_bytes() -> None:
    text = new_key_file_text()
    material = parse_key_file(text, name="k.key")
    assert len(material) == 32
    assert parse_key_file(text.strip() + "\n\n", name="k.key") == material
    assert new_key_file_text() != text


@pytest.mark.parametrize(
    "text",
    [
        "",
        "vault-keyfile-v1",
        "vault-keyfile-v2 " + base64.b64encode(bytes(32)).decode(),
        "vault-keyfile-v1 " + base64.b64encode(bytes(31)).decode(),
        "vault-keyfile-v1 not*base64",
        "vault-keyfile-v1 " + base64.b64encode(bytes(32)).decode() + " extra",
    ],
)
def test_malformed_key_file_is_a_usage_error_naming_the_file(text: str) -> None:
    with pytest.raises(UsageError, match=r"k\.key"):
        parse_key_file(text, name="k.key")


# -- slots ------------------------------------------------------------------------------------


def _secrets() -> dict[str, Secret]:
    return {
        PASSPHRASE: Secret.from_passphrase("correct horse battery staple"),
        RECOVERY: Secret(RECOVERY, new_recovery_key()[1]),
        KEYFILE: Secret(KEYFILE, parse_key_file(new_key_file_text(), name="k")),
    }


@pytest.mark.parametrize("kind", [PASSPHRASE, RECOVERY, KEYFILE])
def test_slot_opens_with_its_secret_to_the_master_key(kind: str) -> None:
    secret = _secrets()[kind]
    slot = make_slot(SLOT_ID, secret, MASTER)
    assert slot.kind == kind
    assert open_slot(slot, secret) == MASTER


@pytest.mark.parametrize("kind", [PASSPHRASE, RECOVERY, KEYFILE])
def test_slot_does_not_open_with_a_wrong_secret_of_the_same_kind(kind: str) -> None:
    slot = make_slot(SLOT_ID, _secrets()[kind], MASTER)
    wrong = (
        Secret.from_passphrase("correct horse battery stapl")
        if kind == PASSPHRASE
        else _secrets()[kind]  # fresh random material
    )
    assert open_slot(slot, wrong) is None


@pytest.mark.parametrize("kind", [PASSPHRASE, RECOVERY, KEYFILE])
def test_slot_does_not_open_with_a_secret_of_another_kind(kind: str) -> None:
    secret = _secrets()[kind]
    slot = make_slot(SLOT_ID, secret, MASTER)
    for other_kind in {PASSPHRASE, RECOVERY, KEYFILE} - {kind}:
        # Same material, presented as the other kind: still no.
        assert open_slot(slot, Secret(other_kind, secret.material)) is None


@pytest.mark.parametrize("kind", [PASSPHRASE, RECOVERY, KEYFILE])
def test_slot_survives_serialization(kind: str) -> None:
    secret = _secrets()[kind]
    slot = make_slot(SLOT_ID, secret, MASTER)
    restored = KeySlot.from_bytes(SLOT_ID, slot.to_bytes())
    assert restored == slot
    assert open_slot(restored, secret) == MASTER


def test_slot_copied_under_another_id_does_not_open() -> None:
    secret = _secrets()[RECOVERY]
    slot = make_slot(SLOT_ID, secret, MASTER)
    moved = KeySlot.from_bytes("77" * 32, slot.to_bytes())
    assert open_slot(moved, secret) is None


def test_slot_with_kind_relabelled_does_not_open() -> None:
    secret = _secrets()[RECOVERY]
    doc = json.loads(make_slot(SLOT_ID, secret, MASTER).to_bytes())
    doc["kind"] = KEYFILE
    relabelled = KeySlot.from_bytes(SLOT_ID, json.dumps(doc).encode())
    assert open_slot(relabelled, Secret(KEYFILE, secret.material)) is None


@pytest.mark.parametrize("kind", [PASSPHRASE, RECOVERY, KEYFILE])
def test_slot_json_reveals_neither_master_key_nor_secret(kind: str) -> None:
    secret = _secrets()[kind]
    slot, signer = make_slot_with_signer(SLOT_ID, secret, MASTER)
    data = slot.to_bytes()
    for leaked in (
        signer,
        base64.b64encode(signer),
        MASTER,
        MASTER.hex().encode(),
        base64.b64encode(MASTER),
        base64.urlsafe_b64encode(MASTER),
        secret.material,
        base64.b64encode(secret.material),
        secret.material.hex().encode(),
    ):
        assert leaked not in data
    doc = json.loads(data)
    assert set(doc) == {
        "version",
        "kind",
        "created",
        "kdf",
        "nonce",
        "wrapped_master_key",
        "signing",
    }
    assert set(doc["signing"]) == {"public", "nonce", "wrapped_private"}


def test_passphrase_slot_records_its_argon2id_parameters() -> None:
    slot = make_slot(SLOT_ID, _secrets()[PASSPHRASE], MASTER)
    params = keys.kdf_params_for_new_slots()
    assert slot.kdf["name"] == "argon2id"
    assert (slot.kdf["memory_kib"], slot.kdf["iterations"], slot.kdf["lanes"]) == (
        params.memory_kib,
        params.iterations,
        params.lanes,
    )
    assert len(base64.b64decode(slot.kdf["salt"])) == crypto.SALT_BYTES


def test_two_slots_for_the_same_secret_use_different_salts_and_ciphertexts() -> None:
    secret = _secrets()[PASSPHRASE]
    a, b = make_slot(SLOT_ID, secret, MASTER), make_slot(SLOT_ID, secret, MASTER)
    assert a.kdf["salt"] != b.kdf["salt"]
    assert a.wrapped != b.wrapped


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not json",
        b'{"version": 2}',
        b'{"version": 1, "kind": "passphrase"}',
        b'{"version": 1, "kind": "passphrase", "created": "", "kdf": [1], "nonce": "",'
        b' "wrapped_master_key": ""}',
        b"[]",
        b"null",
        b'"slot"',
    ],
)
def test_malformed_slot_is_an_integrity_error_naming_the_slot(data: bytes) -> None:
    with pytest.raises(IntegrityError, match=SLOT_ID):
        KeySlot.from_bytes(SLOT_ID, data)


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: d["kdf"].pop("salt"),
        lambda d: d["kdf"].pop("name"),
        lambda d: d["kdf"].update(lanes=0),
        lambda d: d["kdf"].update(iterations="six"),
        lambda d: d.update(nonce="AAAA"),
        lambda d: d["kdf"].update(name="hkdf-sha256"),  # a passphrase without stretching
        lambda d: d["kdf"].update(memory_kib=2**31),  # a planted slot asking for 2 TiB
        lambda d: d["kdf"].update(iterations=10**9),
    ],
    ids=[
        "no-salt",
        "no-kdf-name",
        "zero-lanes",
        "non-integer-iterations",
        "short-nonce",
        "passphrase-downgraded-to-hkdf",
        "huge-memory",
        "huge-iterations",
    ],
)
def test_slot_with_damaged_fields_is_rejected_as_integrity_error(damage: object) -> None:
    """Damaged or planted slot parameters are refused before any key derivation runs."""
    doc = json.loads(make_slot(SLOT_ID, _secrets()[PASSPHRASE], MASTER).to_bytes())
    damage(doc)  # type: ignore[operator]
    with pytest.raises(IntegrityError, match=SLOT_ID):
        KeySlot.from_bytes(SLOT_ID, json.dumps(doc).encode())


def test_damaged_passphrase_slot_does_not_lock_out_the_recovery_key() -> None:
    storage = MemoryStorage()
    repo, recovery_text = Repository.init(storage, Secret.from_passphrase("pw"))
    passphrase_slot = f"keys/{repo.slot_id}"
    storage.put(passphrase_slot, storage.get(passphrase_slot)[:-20])  # torn write
    reopened = Repository.open(storage, Secret.from_passphrase(recovery_text))
    assert reopened.keyring.master_key == repo.keyring.master_key


# -- keyring ----------------------------------------------------------------------------------


def test_keyring_survives_serialization() -> None:
    ring = Keyring.create(MASTER)
    ring.epochs.append(Epoch(2, crypto.random_key(), "2026-01-01T00:00:00+00:00", "deactivated"))
    ring.mark_compromised({2}, "2026-02-01T00:00:00+00:00")
    ring.replace_master(crypto.random_key(), compromised=True)
    restored = Keyring.from_bytes(ring.master_key, ring.to_bytes())
    assert restored == ring
    assert restored.epoch_keys() == ring.epoch_keys()


def test_a_keyring_from_before_the_sp_800_57_names_reads_as_it_meant() -> None:
    """Round-1 keyrings call a deactivated epoch "active" and hold no master records: the
    first reads as deactivated, the master key's age is inferred from the first epoch."""
    doc = json.loads(Keyring.create(MASTER).to_bytes())
    doc["epochs"].append(
        {
            "id": 2,
            "created": "2026-03-01T00:00:00+00:00",
            "state": "current",
            "key": base64.b64encode(crypto.random_key()).decode(),
        }
    )
    doc["epochs"][0]["state"] = "active"
    doc["epochs"][0]["created"] = "2025-01-01T00:00:00+00:00"
    del doc["masters"]
    ring = Keyring.from_bytes(MASTER, json.dumps(doc).encode())
    assert ring.epoch(1).state == "deactivated"
    (master,) = ring.masters
    assert master.created == "2025-01-01T00:00:00+00:00" and master.inferred
    again = Keyring.from_bytes(MASTER, ring.to_bytes())
    assert again.masters[0].inferred


def test_a_compromised_current_epoch_is_rotated_away_first() -> None:
    ring = Keyring.create(MASTER)
    ring.mark_compromised({1}, "2026-05-05T10:00:00+00:00")
    assert ring.epoch(1).state == "compromised" and ring.current_epoch == 2
    ring.set_state({1}, "retiring")
    ring.destroy({1})
    # The reason for the erase stays on the record.
    assert ring.epoch(1).state == "destroyed"
    assert ring.epoch(1).compromised == "2026-05-05T10:00:00+00:00"


def test_an_unknown_epoch_state_is_a_malformed_keyring() -> None:
    doc = json.loads(Keyring.create(MASTER).to_bytes())
    doc["epochs"][0]["state"] = "maybe"
    with pytest.raises(IntegrityError, match="malformed"):
        Keyring.from_bytes(MASTER, json.dumps(doc).encode())


def test_serialized_keyring_does_not_contain_the_master_key() -> None:
    data = Keyring.create(MASTER).to_bytes()
    assert base64.b64encode(MASTER) not in data
    assert MASTER not in data
    assert MASTER.hex().encode() not in data


def test_new_keyring_has_one_current_epoch_with_fresh_keys() -> None:
    a, b = Keyring.create(MASTER), Keyring.create(MASTER)
    assert a.current_epoch == 1
    assert [e.state for e in a.epochs] == ["current"]
    assert a.mac_key != b.mac_key
    assert a.epoch_key(1) != b.epoch_key(1)
    assert a.chunker_seed != 0
    assert a.epoch_key(0) == MASTER


def test_keyring_rejects_unknown_epoch_and_version() -> None:
    ring = Keyring.create(MASTER)
    with pytest.raises(KeyError):
        ring.epoch_key(99)
    doc = json.loads(ring.to_bytes())
    doc["version"] = 2
    with pytest.raises(IntegrityError):
        Keyring.from_bytes(MASTER, json.dumps(doc).encode())


def test_master_key_only_knows_epoch_zero() -> None:
    only = MasterKeyOnly(MASTER)
    assert only.current_epoch == 0
    assert only.epoch_key(0) == MASTER
    with pytest.raises(KeyError):
        only.epoch_key(1)


# -- KDF cost ---------------------------------------------------------------------------------


def test_new_slots_meet_the_owasp_argon2id_floor_without_the_test_hook(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(keys.TEST_KDF_ENV, raising=False)
    params = keys.kdf_params_for_new_slots()
    assert params.memory_kib >= 19456
    assert params.iterations >= 2
    assert params.lanes >= 1


@pytest.mark.parametrize("value", ["0", "", "yes", "true"])
def test_only_the_exact_test_hook_value_lowers_the_kdf_cost(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv(keys.TEST_KDF_ENV, value)
    assert keys.kdf_params_for_new_slots() == crypto.DEFAULT_ARGON2
    monkeypatch.setenv(keys.TEST_KDF_ENV, "1")
    assert keys.kdf_params_for_new_slots() == crypto.TEST_ARGON2


@settings(max_examples=50, deadline=None)
@given(passphrase=st.text(min_size=1, max_size=40))
def test_any_unicode_passphrase_opens_its_slot(passphrase: str) -> None:
    secret = Secret.from_passphrase(passphrase)
    slot = make_slot(SLOT_ID, secret, MASTER)
    assert open_slot(KeySlot.from_bytes(SLOT_ID, slot.to_bytes()), secret) == MASTER


_DERIVE_AT_ONCE = """
import sys, threading
from vault.format import crypto
start = threading.Barrier(4)
results = {}
def derive(number):
    start.wait()
    secret = b"passphrase %d" % (number % 2)
    results[number] = crypto.argon2id(secret, b"s" * 16, crypto.DEFAULT_ARGON2)
threads = [threading.Thread(target=derive, args=(n,)) for n in range(4)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
assert results[0] == results[2] != results[1] == results[3], results
print("derived", len(results))
"""


def test_derivations_started_at_once_from_threads_all_finish() -> None:
    """The console signs users in on a thread pool while repositories open: four derivations
    with the real parameters (four lanes) started together must all end, with the right keys.
    A hang is the failure: the child is killed after a minute."""
    try:
        done = subprocess.run(
            [sys.executable, "-c", _DERIVE_AT_ONCE],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("Argon2id derivations started at once from four threads hung")
    assert done.returncode == 0 and done.stdout.strip() == "derived 4", done.stderr
