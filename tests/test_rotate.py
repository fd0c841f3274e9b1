"""Key rotation: new epochs, re-encryption with cryptographic erase (also after SIGKILL), and
master-key rotation — and the old keys really open nothing afterwards."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import BOTH_BACKENDS, PASSWORD, RunCli
from tests.repos import RepoHandle
from tests.treecompare import describe_tree
from tests.waiting import Changes, wait_until
from vault.errors import IntegrityError
from vault.format import crypto, layout, sealing
from vault.format.pack import parse_header, read_trailer
from vault.repo.keyring import DESTROYED
from vault.repo.keyusage import SEALED_PREFIXES, sealed_epoch_of
from vault.repo.lock import Lock


def _restore_equals(
    vault: RunCli, repo: RepoHandle, snapshot: str, source: Path, out: Path
) -> None:
    result = vault("restore", snapshot, "-r", repo, "--target", out, "--verify")
    assert result.code == 0, result.err
    assert describe_tree(out / source.relative_to("/")) == describe_tree(source)


class _OldKeys:
    """Holds a copy of retired epoch keys and tries them under every epoch number."""

    def __init__(self, keys: dict[int, bytes]) -> None:
        self.keys = keys

    def opens_sealed(self, key: str, blob: bytes) -> bool:
        if not blob.startswith(sealing.MAGIC):
            return False
        kind = sealing.Kind(blob[4])
        for old in self.keys.values():

            class Keys:
                current_epoch = 0

                def epoch_key(self, epoch: int) -> bytes:
                    return old  # noqa: B023 - each loop tries one old key under any epoch

            try:
                sealing.open_sealed(Keys(), kind, layout.id_of(key), blob, name=key)
                return True
            except IntegrityError:
                continue
        return False

    def opens_pack(self, key: str, blob: bytes) -> bool:
        epoch, _ = parse_header(blob, pack_name=key)
        for old in self.keys.values():
            try:
                read_trailer(blob, {epoch: old}, pack_id=layout.id_of(key), pack_name=key)
                return True
            except IntegrityError:
                continue
        return False


def _assert_nothing_names_or_opens_with(repo: RepoHandle, old: _OldKeys) -> None:
    retired = set(old.keys)
    r = repo.open(PASSWORD)
    for key, blob in repo.all_objects():
        if key.startswith(layout.DATA):
            epoch, _ = parse_header(blob, pack_name=key)
            assert epoch not in retired, key
            assert not old.opens_pack(key, blob), key
        elif key.startswith(SEALED_PREFIXES):
            found = sealed_epoch_of(r, key)
            assert found is not None and found[1] not in retired, key
            assert not old.opens_sealed(key, blob), key


@BOTH_BACKENDS
def test_rotation_seals_new_objects_under_the_new_epoch_and_both_snapshots_restore(
    repo: RepoHandle, vault: RunCli, archive: Path, tmp_path: Path
) -> None:
    first = vault("backup", "-r", repo, archive, "--json").json()["snapshot_id"]
    rotated = vault("key", "rotate", "-r", repo, "--json")
    assert rotated.code == 0, rotated.err
    assert rotated.json()["current_epoch"] == 2
    (archive / "after-rotation.bin").write_bytes(random.Random(1).randbytes(200_000))
    second = vault("backup", "-r", repo, archive, "--json").json()["snapshot_id"]
    r = repo.open(PASSWORD)
    assert sealed_epoch_of(r, layout.snapshot(first)) == (sealing.Kind.SNAPSHOT, 1)
    assert sealed_epoch_of(r, layout.snapshot(second)) == (sealing.Kind.SNAPSHOT, 2)
    epochs = {p.epoch for p in r.load_index().packs()}
    assert epochs == {1, 2}
    listing = vault("key", "list", "-r", repo, "--json").json()
    by_id = {e["id"]: e for e in listing["epochs"]}
    assert by_id[1]["state"] == "deactivated" and by_id[2]["state"] == "current"
    assert by_id[1]["packs"] >= 1 and by_id[2]["packs"] >= 1
    out = tmp_path / "second"
    assert vault("restore", second, "-r", repo, "--target", out, "--verify").code == 0
    assert describe_tree(out / archive.relative_to("/")) == describe_tree(archive)
    out_first = tmp_path / "first"
    assert vault("restore", first, "-r", repo, "--target", out_first, "--verify").code == 0
    restored = describe_tree(out_first / archive.relative_to("/"))
    assert b"after-rotation.bin" not in restored
    assert len(restored) == len(describe_tree(archive)) - 1


@BOTH_BACKENDS
def test_reencrypt_erases_old_epochs_and_everything_still_restores(
    repo: RepoHandle, vault: RunCli, archive: Path, tmp_path: Path
) -> None:
    first = vault("backup", "-r", repo, archive, "--json").json()["snapshot_id"]
    vault("key", "rotate", "-r", repo)
    (archive / "more.bin").write_bytes(random.Random(2).randbytes(300_000))
    second = vault("backup", "-r", repo, archive, "--json").json()["snapshot_id"]
    r = repo.open(PASSWORD)
    old = _OldKeys({e.id: e.key for e in r.keyring.epochs})
    result = vault("key", "rotate", "--reencrypt", "-r", repo, "--json")
    assert result.code == 0, result.err
    doc = result.json()
    assert doc["destroyed_epochs"] == [1, 2] and doc["current_epoch"] == 3
    assert doc["packs_rewritten"] >= 2 and doc["bytes_read"] > 0
    after = repo.open(PASSWORD)
    assert {e.id for e in after.keyring.epochs if e.state == DESTROYED} == {1, 2}
    assert all(not e.key for e in after.keyring.epochs if e.state == DESTROYED)
    assert vault("check", "-r", repo, "--read-data").code == 0
    _assert_nothing_names_or_opens_with(repo, old)
    out = tmp_path / "second"
    assert vault("restore", second, "-r", repo, "--target", out, "--verify").code == 0
    assert describe_tree(out / archive.relative_to("/")) == describe_tree(archive)
    assert vault("restore", first, "-r", repo, "--target", tmp_path / "first").code == 0


def test_retire_one_epoch_keeps_the_others(
    repo: RepoHandle, vault: RunCli, archive: Path, tmp_path: Path
) -> None:
    vault("backup", "-r", repo, archive)
    vault("key", "rotate", "-r", repo)
    (archive / "x.bin").write_bytes(random.Random(3).randbytes(100_000))
    vault("backup", "-r", repo, archive)
    result = vault("key", "retire", "1", "-r", repo, "--json")
    assert result.code == 0, result.err
    states = {
        e["id"]: e["state"] for e in vault("key", "list", "-r", repo, "--json").json()["epochs"]
    }
    assert states == {1: "destroyed", 2: "current"}
    assert vault("check", "-r", repo, "--read-data").code == 0
    again = vault("key", "retire", "1", "-r", repo)
    assert again.code == 2 and "already destroyed" in again.err


def _count(repo: RepoHandle, prefix: str) -> int:
    return len(repo.keys(prefix))


@pytest.fixture(scope="module")
def big_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("rotate") / "src"
    root.mkdir()
    rng = random.Random(77)
    for i in range(8):
        (root / f"scan{i}.raw").write_bytes(rng.randbytes(16 * 1024 * 1024))
    return root


@pytest.mark.parametrize("point", ["first-new-pack", "third-new-pack", "index-replaced"])
def test_reencrypt_killed_by_sigkill_resumes_and_completes(
    repo: RepoHandle,
    vault: RunCli,
    big_source: Path,
    tmp_path: Path,
    point: str,
    repo_changes: tuple[Changes, dict[str, str]],
) -> None:
    changes, through = repo_changes
    assert vault("backup", "-r", repo, big_source).code == 0
    r = repo.open(PASSWORD)
    old = _OldKeys({e.id: e.key for e in r.keyring.epochs})
    packs_before = _count(repo, "data/")
    env = dict({**os.environ, **repo.env, **through}, VAULT_PASSWORD=PASSWORD)
    process = subprocess.Popen(
        [sys.executable, "-m", "vault", "key", "rotate", "--reencrypt", "-r", repo.url],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    wanted = {"first-new-pack": 1, "third-new-pack": 3}.get(point)
    indexes_before = set(repo.keys("index/"))

    def reached() -> bool:
        if wanted is not None:
            return _count(repo, "data/") >= packs_before + wanted
        # Old index objects replaced by the consolidated one; old packs not yet deleted.
        indexes = set(repo.keys("index/"))
        return bool(indexes) and not indexes & indexes_before

    wait_until(reached, changes, timeout=120, process=process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "re-encryption finished before the kill"

    # Interrupted: still consistent and restorable right away.
    assert vault("check", "-r", repo).code == 0
    resumed = vault("key", "rotate", "--reencrypt", "-r", repo, "--json")
    assert resumed.code == 0, resumed.err
    assert resumed.json()["resumed"] is True
    assert resumed.json()["destroyed_epochs"] == [1]
    assert vault("check", "-r", repo, "--read-data").code == 0
    _assert_nothing_names_or_opens_with(repo, old)
    _restore_equals(vault, repo, "latest", big_source, tmp_path / "out")


def test_backup_during_reencryption_is_refused_with_exit_11(
    repo: RepoHandle, vault: RunCli, archive: Path
) -> None:
    vault("backup", "-r", repo, archive)
    r = repo.open(PASSWORD)
    with Lock(r.storage, r.keyring, exclusive=True, operation="key re-encrypt"):
        blocked = vault("backup", "-r", repo, archive)
    assert blocked.code == 11 and "re-encrypt" in blocked.err
    with Lock(r.storage, r.keyring, exclusive=False, operation="backup"):
        refused = vault("key", "rotate", "--reencrypt", "-r", repo)
    assert refused.code == 11
    assert vault("key", "rotate", "--reencrypt", "-r", repo).code == 0


def test_master_rotation_keeps_the_caller_and_invalidates_everyone_else(
    tmp_path: Path, vault: RunCli, archive: Path
) -> None:
    repo = tmp_path / "r"
    recovery_file = tmp_path / "recovery.txt"
    assert vault("init", "-r", repo, "--recovery-key-file", recovery_file).code == 0
    old_recovery = recovery_file.read_text().strip()
    other = tmp_path / "other-pw"
    other.write_text("a colleague's passphrase\n")
    other.chmod(0o600)
    assert vault("key", "add", "-r", repo, "--new-password-file", other).code == 0
    assert vault("backup", "-r", repo, archive).code == 0
    new_file = tmp_path / "new-recovery.txt"
    result = vault(
        "key", "rotate", "--master", "-r", repo, "--json", "--recovery-key-file", new_file
    )
    assert result.code == 0, result.err
    doc = result.json()
    new_recovery = new_file.read_text().strip()
    assert sorted(s["kind"] for s in doc["removed_slots"]) == ["passphrase", "recovery"]
    assert vault("snapshots", "-r", repo, password=old_recovery).code == 12
    assert vault("snapshots", "-r", repo, password="a colleague's passphrase").code == 12
    assert vault("snapshots", "-r", repo, password=new_recovery).code == 0
    assert vault("snapshots", "-r", repo).code == 0
    assert vault("check", "-r", repo, "--read-data").code == 0
    out = tmp_path / "out"
    assert vault("restore", "latest", "-r", repo, "--target", out, "--verify").code == 0
    assert describe_tree(out / archive.relative_to("/")) == describe_tree(archive)


def test_removed_passphrase_slot_fails_with_exit_12(
    tmp_path: Path, repo: RepoHandle, vault: RunCli
) -> None:
    pw = tmp_path / "pw2"
    pw.write_text("a second person's passphrase\n")
    pw.chmod(0o600)
    slot = vault("key", "add", "-r", repo, "--new-password-file", pw, "--json").json()["id"]
    assert vault("snapshots", "-r", repo, password="a second person's passphrase").code == 0
    assert vault("key", "remove", slot, "-r", repo).code == 0
    gone = vault("snapshots", "-r", repo, password="a second person's passphrase")
    assert gone.code == 12 and "a second person's passphrase" not in gone.err


def test_kdf_parameters_stored_in_a_slot_are_honoured(
    tmp_path: Path, vault: RunCli, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    repo = tmp_path / "r"
    custom = crypto.Argon2Params(memory_kib=16 * 1024, iterations=3, lanes=2)
    monkeypatch.setattr("vault.repo.keys.kdf_params_for_new_slots", lambda: custom)
    assert vault("init", "-r", repo).code == 0
    monkeypatch.undo()
    monkeypatch.setenv("VAULT_TEST_FAST_KDF", "1")  # new defaults differ from the stored ones
    slot_file = next(
        p for p in (repo / "keys").iterdir() if json.loads(p.read_text())["kind"] == "passphrase"
    )
    stored = json.loads(slot_file.read_text())["kdf"]
    assert (stored["memory_kib"], stored["iterations"], stored["lanes"]) == (16384, 3, 2)
    assert vault("snapshots", "-r", repo).code == 0  # opened with the stored parameters
    tampered = json.loads(slot_file.read_text())
    tampered["kdf"]["iterations"] = 4  # a different cost derives a different key
    slot_file.write_text(json.dumps(tampered))
    assert vault("snapshots", "-r", repo).code == 12


def test_key_list_shows_which_host_created_and_last_used_each_slot(
    repo: RepoHandle, vault: RunCli, archive: Path
) -> None:
    import socket

    before = vault("key", "list", "-r", repo, "--json").json()["slots"]
    assert {s["created_host"] for s in before} == {socket.gethostname()}
    assert all(s["last_used"] is None for s in before)
    vault("backup", "-r", repo, archive)
    after = {s["id"]: s for s in vault("key", "list", "-r", repo, "--json").json()["slots"]}
    used = [s for s in after.values() if s["in_use"]]
    assert len(used) == 1 and used[0]["last_used_host"] == socket.gethostname()
