"""Opening a repository costs one KDF, whatever an attacker plants in keys/: slots are tried
one at a time (the one that opened the repository last time first, then the cheapest), the
first that opens wins, and a slot asking for more than the cap (1 GiB, 16 passes) is damage,
never derived. `check` names slots that vault did not make."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest

from tests.conftest import RunCli
from tests.repos import RepoHandle
from vault.format import crypto


def _plant(repo: RepoHandle, memory_kib: int, iterations: int) -> str:
    """A passphrase slot nobody can open, asking for the given Argon2id cost."""
    slot_id = os.urandom(32).hex()
    doc = {
        "version": 1,
        "kind": "passphrase",
        "created": "2026-01-01T00:00:00+00:00",
        "kdf": {
            "name": "argon2id",
            "memory_kib": memory_kib,
            "iterations": iterations,
            "lanes": 4,
            "salt": base64.b64encode(os.urandom(crypto.SALT_BYTES)).decode(),
        },
        "nonce": base64.b64encode(os.urandom(crypto.NONCE_BYTES)).decode(),
        "wrapped_master_key": base64.b64encode(os.urandom(48)).decode(),
    }
    repo.write(f"keys/{slot_id}", json.dumps(doc).encode())
    return slot_id


@pytest.fixture
def kdf_calls(monkeypatch: pytest.MonkeyPatch) -> list[crypto.Argon2Params]:
    """Every Argon2id derivation vault runs, with its parameters (none is run for real when
    it asks for more than the test KDF: that would take minutes)."""
    calls: list[crypto.Argon2Params] = []
    real = crypto.argon2id

    def counting(secret: bytes, salt: bytes, params: crypto.Argon2Params) -> bytes:
        calls.append(params)
        if params.memory_kib > crypto.TEST_ARGON2.memory_kib:
            return os.urandom(32)  # a planted slot: the derivation's result never opens it
        return real(secret, salt, params)

    monkeypatch.setattr(crypto, "argon2id", counting)
    return calls


def test_planted_costly_slots_are_never_derived_when_the_real_one_opens(
    repo: RepoHandle, vault: RunCli, kdf_calls: list[crypto.Argon2Params], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for _ in range(3):
        _plant(repo, memory_kib=1024 * 1024, iterations=16)  # at the cap: allowed, costly
    kdf_calls.clear()
    assert vault("key", "list", "-r", repo).code == 0
    assert kdf_calls == [crypto.TEST_ARGON2]  # one KDF: the slot that opened it last time
    # A machine that never opened it tries the cheapest slot first: the real one here.
    monkeypatch.setenv("VAULT_STATE_DIR", str(tmp_path / "new-machine"))
    kdf_calls.clear()
    assert vault("snapshots", "-r", repo).code == 0
    assert kdf_calls == [crypto.TEST_ARGON2]


def test_the_slot_last_opened_with_is_tried_first_even_when_others_are_cheaper(
    repo: RepoHandle, vault: RunCli, kdf_calls: list[crypto.Argon2Params]
) -> None:
    for _ in range(3):
        _plant(repo, memory_kib=8, iterations=1)  # as cheap as the real one
    for _ in range(3):
        kdf_calls.clear()
        assert vault("snapshots", "-r", repo).code == 0
        assert len(kdf_calls) == 1


def test_a_slot_beyond_the_cap_is_damage_never_derived_and_check_names_it(
    repo: RepoHandle, vault: RunCli, kdf_calls: list[crypto.Argon2Params]
) -> None:
    huge = _plant(repo, memory_kib=4 * 1024 * 1024, iterations=64)
    wrong = vault("snapshots", "-r", repo, password="not the passphrase")
    assert wrong.code == 12
    assert all(p.memory_kib <= 1024 * 1024 and p.iterations <= 16 for p in kdf_calls)
    assert "1 key slot(s) could not be read" in wrong.err
    listed = vault("key", "list", "-r", repo)
    assert listed.code == 0, listed.err
    checked = vault("check", "-r", repo)
    assert checked.code == 1
    assert f"keys/{huge}" in checked.err and "unusable key slot" in checked.err


def test_check_names_a_slot_vault_did_not_make(repo: RepoHandle, vault: RunCli) -> None:
    planted = _plant(repo, memory_kib=8, iterations=1)
    checked = vault("check", "-r", repo)
    assert checked.code == 1
    assert f"keys/{planted}" in checked.err and "has no sealed slot record" in checked.err
    assert vault("key", "remove", planted[:12], "-r", repo).code == 0
    assert vault("check", "-r", repo).code == 0


def test_a_lost_slot_record_is_reported_until_the_slot_is_used_again(
    repo: RepoHandle, vault: RunCli, tmp_path: Path
) -> None:
    listing = vault("key", "list", "-r", repo, "--json").json()
    in_use = next(s["id"] for s in listing["slots"] if s["in_use"])
    repo.storage.delete(f"slotinfo/{in_use}")
    checked = vault("check", "-r", repo)
    assert checked.code == 1 and f"keys/{in_use}" in checked.err
    source = tmp_path / "src"
    source.mkdir()
    (source / "f").write_bytes(b"x")
    assert vault("backup", "-r", repo, source).code == 0  # the slot opened it: re-recorded
    assert vault("check", "-r", repo).code == 0
