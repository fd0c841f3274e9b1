"""3-2-1: `vault init --replica-of` and `vault copy --to`, local and on a real S3 server.

A replica shares its source's chunking and data keys, so packs copy as stored; it has its own
passphrase, slots and id. Copies are incremental, partial packs are repacked, the copy of a
snapshot restores byte-identical, a killed copy resumes without sending again what arrived, the
source's key rotations reach the replica, and what the replica's own retention forgot is not
copied back. `check --read-data` passes on both sides after every scenario."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import PASSWORD, RunCli, fresh_s3_url
from tests.faultproxy import Fault, FaultProxy
from tests.s3server import S3Server, start_server
from tests.treecompare import describe_tree
from vault.format import crypto
from vault.repo.keyring import CURRENT, DEACTIVATED, RETIRING, Keyring

REPLICA_PASSWORD = "a different replica passphrase for the offsite copy"


def _files(root: Path, names: dict[str, int], seed: int) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for name, size in names.items():
        rnd = __import__("random").Random(f"{seed}-{name}")
        (root / name).write_bytes(rnd.randbytes(size))


def _location(kind: str, tmp_path: Path, name: str, s3: S3Server | None, *, own: bool) -> str:
    """A local path, or a fresh S3 prefix; `own` names the server's endpoint in the URL (a
    repository at another provider than the environment's)."""
    if kind == "local":
        return str(tmp_path / name)
    assert s3 is not None
    url = fresh_s3_url(s3)
    return f"{url}?endpoint={s3.endpoint}" if own else url


@pytest.fixture
def second_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """Another SeaweedFS server: S3 to S3 between two services, as between two providers."""
    server = start_server(tmp_path_factory.mktemp("seaweedfs-offsite"))
    try:
        yield server
    finally:
        server.stop()


def _replica(vault: RunCli, source: str, replica: str, tmp_path: Path) -> None:
    secret = tmp_path / "replica-passphrase"
    secret.write_text(REPLICA_PASSWORD + "\n")
    secret.chmod(0o600)
    own = tmp_path / "source-passphrase"
    own.write_text(PASSWORD + "\n")
    own.chmod(0o600)
    made = vault("init", "-r", replica, "--password-file", str(secret), "--replica-of", source,
                 "--from-password-file", str(own), password=None)  # fmt: skip
    assert made.code == 0, made.err
    assert "a replica of" in made.out


def _copy(
    vault: RunCli, source: str, replica: str, tmp_path: Path, *extra: str
) -> dict[str, object]:
    done = vault("copy", "-r", source, "--to", replica, "--to-password-file",
                 str(tmp_path / "replica-passphrase"), "--json", *extra)  # fmt: skip
    assert done.code == 0, done.err
    result: dict[str, object] = done.json()
    return result


def _check_both(vault: RunCli, source: str, replica: str) -> None:
    assert vault("check", "-r", source, "--read-data").code == 0
    checked = vault("check", "-r", replica, "--read-data", password=REPLICA_PASSWORD)
    assert checked.code == 0, checked.out + checked.err


def _backed_up_with_replica(
    vault: RunCli, tmp_path: Path, names: dict[str, int], seed: int
) -> tuple[str, str, Path]:
    """A local source backed up once from generated `names`, and its (empty) local replica."""
    source, replica = str(tmp_path / "nas"), str(tmp_path / "offsite")
    data = tmp_path / "imaging"
    _files(data, names, seed)
    assert vault("init", "-r", source).code == 0
    assert vault("backup", "-r", source, str(data)).code == 0
    _replica(vault, source, replica, tmp_path)
    return source, replica, data


def _restores_identical(vault: RunCli, replica: str, data: Path, target: Path) -> None:
    """The replica's latest snapshot restores byte-identical to `data`."""
    restored = vault("restore", "-r", replica, "latest", "--target", str(target),
                     password=REPLICA_PASSWORD)  # fmt: skip
    assert restored.code == 0, restored.err
    assert describe_tree(target / data.relative_to("/")) == describe_tree(data)


@pytest.mark.parametrize(
    ("source_kind", "replica_kind"),
    [("local", "local"), ("local", "s3"), ("s3", "s3"), ("s3", "local")],
)
def test_copies_are_incremental_partial_packs_repacked_and_restore_identical(
    source_kind: str,
    replica_kind: str,
    vault: RunCli,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    s3 = request.getfixturevalue("s3_server") if "s3" in (source_kind, replica_kind) else None
    if s3 is not None:
        request.getfixturevalue("s3_env")  # credentials (both servers know them) and endpoint
    two_servers = source_kind == replica_kind == "s3"
    offsite = request.getfixturevalue("second_s3") if two_servers else s3
    source = _location(source_kind, tmp_path, "nas", s3, own=False)
    replica = _location(replica_kind, tmp_path, "offsite", offsite, own=two_servers)
    data = tmp_path / "imaging"
    _files(data, {"ct1.dcm": 3_000_000, "pan.dcm": 1_500_000, "old.dcm": 2_000_000}, 1)
    assert vault("init", "-r", source).code == 0
    assert vault("backup", "-r", source, str(data)).code == 0
    (data / "old.dcm").unlink()
    _files(data, {"new.dcm": 1_000_000}, 2)
    assert vault("backup", "-r", source, str(data)).code == 0
    first, second = [s["id"] for s in vault("snapshots", "-r", source, "--json").json()]
    _replica(vault, source, replica, tmp_path)

    # Only the second snapshot: it needs part of the first backup's pack (not old.dcm).
    only = _copy(vault, source, replica, tmp_path, second)
    assert only["copied"] == 1 and only["blobs_repacked"] > 0 and only["packs_copied"] >= 1
    # Then everything else: just the first snapshot and the blobs the replica lacks.
    rest = _copy(vault, source, replica, tmp_path)
    assert rest["copied"] == 1 and rest["already_there"] == 1
    again = _copy(vault, source, replica, tmp_path)
    assert again["copied"] == 0 and again["packs_copied"] == 0 and again["blobs_repacked"] == 0

    _check_both(vault, source, replica)
    for snapshot in (first, second):
        a, b = tmp_path / f"a-{snapshot}", tmp_path / f"b-{snapshot}"
        assert vault("restore", snapshot, "-r", source, "--target", str(a)).code == 0
        restored = vault("restore", snapshot, "-r", replica, "--target", str(b),
                         password=REPLICA_PASSWORD)  # fmt: skip
        assert restored.code == 0, restored.err
        assert describe_tree(str(a)) == describe_tree(str(b))
    # The replica has its own identity and passphrase: the source's does not open it.
    assert vault("snapshots", "-r", replica).code == 12


def test_a_copy_killed_mid_way_resumes_without_sending_again(vault: RunCli, tmp_path: Path) -> None:
    source, replica = str(tmp_path / "nas"), str(tmp_path / "offsite")
    data = tmp_path / "imaging"
    _files(data, {f"vol{n}.dcm": 12_000_000 for n in range(8)}, 3)  # about 6 packs
    assert vault("init", "-r", source).code == 0
    assert vault("backup", "-r", source, str(data)).code == 0
    _replica(vault, source, replica, tmp_path)
    env = {**os.environ, "VAULT_PASSWORD": PASSWORD}
    copy = subprocess.Popen(
        [sys.executable, "-m", "vault", "copy", "-r", source, "--to", replica,
         "--to-password-file", str(tmp_path / "replica-passphrase")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    packs = Path(replica) / "data"

    def whole_packs() -> list[Path]:
        # Written as a temporary file and renamed: a pack under its own name is whole.
        return [p for p in packs.rglob("*") if p.is_file() and not p.name.startswith(".tmp-")]

    # SIGKILL as soon as the first pack has landed whole in the replica.
    while copy.poll() is None:
        if whole_packs():
            os.kill(copy.pid, signal.SIGKILL)
            break
    copy.wait()
    landed = sum(p.stat().st_size for p in whole_packs())
    total = sum(p.stat().st_size for p in (Path(source) / "data").rglob("*") if p.is_file())
    assert copy.returncode == -signal.SIGKILL, "the copy ended before it could be killed"
    assert 0 < landed < total
    assert vault("unlock", "-r", replica, "--remove-all", password=REPLICA_PASSWORD).code == 0
    resumed = _copy(vault, source, replica, tmp_path)
    assert resumed["copied"] == 1
    assert resumed["packs_resumed"] >= 1
    # What arrived whole is not sent again: at most the packs in flight at the kill, torn.
    resent = int(resumed["bytes_copied"]) + int(resumed["bytes_repacked"])
    assert resent <= total - int(resumed["bytes_resumed"])
    # Every pack that had landed whole was kept, none sent again.
    assert int(resumed["bytes_resumed"]) == landed
    _check_both(vault, source, replica)


def test_key_rotation_reaches_the_replica_and_forgotten_snapshots_stay_forgotten(
    vault: RunCli, tmp_path: Path
) -> None:
    source, replica, data = _backed_up_with_replica(vault, tmp_path, {"a.dcm": 500_000}, 4)
    assert _copy(vault, source, replica, tmp_path)["copied"] == 1

    # A rotation on the source: the next backup is sealed under a new epoch the replica must
    # learn before it can open what it receives.
    assert vault("key", "rotate", "-r", source).code == 0
    _files(data, {"b.dcm": 500_000}, 5)
    assert vault("backup", "-r", source, str(data)).code == 0
    rotated = _copy(vault, source, replica, tmp_path, "--verify-data")
    assert rotated["keyring_updated"] is True and rotated["copied"] == 1
    assert int(rotated["blobs_verified"]) > 0
    _check_both(vault, source, replica)

    # The replica's own retention forgets the first snapshot; copy does not bring it back.
    first = vault("snapshots", "-r", replica, "--json", password=REPLICA_PASSWORD).json()[0]["id"]
    retention = tmp_path / "replica-retention.toml"
    retention.write_text("[retention]\nkeep_last = 1\nminimum_days = 0\n")
    forgot = vault("forget", "-r", replica, "--policy", str(retention), password=REPLICA_PASSWORD)
    assert forgot.code == 0, forgot.err
    after = _copy(vault, source, replica, tmp_path)
    assert after["copied"] == 0 and after["forgotten_skipped"] == 1
    listed = vault("snapshots", "-r", replica, "--json", password=REPLICA_PASSWORD).json()
    assert first not in [s["id"] for s in listed]
    _check_both(vault, source, replica)

    # Keys are the source's: the replica refuses to rotate its own, which would fork them.
    refused = vault("key", "rotate", "-r", replica, password=REPLICA_PASSWORD)
    assert refused.code == 2 and "this repository is a replica" in refused.err
    erase = vault("key", "rotate", "--reencrypt", "--epoch", "1", "-r", replica,
                  password=REPLICA_PASSWORD)  # fmt: skip
    assert erase.code == 2 and "this repository is a replica" in erase.err

    # A copied snapshot deleted behind vault's back is noticed, as a backed-up one is.
    (Path(replica) / "snapshots" / listed[0]["id"]).unlink()
    checked = vault("check", "-r", replica, password=REPLICA_PASSWORD)
    assert checked.code != 0 and "made by a backup or copy" in checked.out + checked.err


def test_an_empty_snapshot_object_a_killed_copy_left_does_not_block_the_next(
    vault: RunCli, tmp_path: Path
) -> None:
    source, replica, _data = _backed_up_with_replica(vault, tmp_path, {"a.dcm": 200_000}, 6)
    snapshot = vault("snapshots", "-r", source, "--json").json()[0]["id"]
    (Path(replica) / "snapshots").mkdir(exist_ok=True)
    (Path(replica) / "snapshots" / snapshot).write_bytes(b"")  # torn by a kill mid-PUT
    assert _copy(vault, source, replica, tmp_path)["copied"] == 1
    _check_both(vault, source, replica)


@pytest.mark.parametrize("dest_kind", ["local", "s3"])
def test_a_copy_into_an_independent_repository_is_re_encrypted_blob_by_blob(
    dest_kind: str, vault: RunCli, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    s3 = request.getfixturevalue("s3_server") if dest_kind == "s3" else None
    if s3 is not None:
        request.getfixturevalue("s3_env")
    source, dest = str(tmp_path / "old-nas"), _location(dest_kind, tmp_path, "new", s3, own=False)
    data = tmp_path / "imaging"
    _files(data, {"ct1.dcm": 3_000_000, "pan.dcm": 1_500_000}, 12)
    (data / "series").mkdir()
    _files(data / "series" / "deep" / "er", {"slice.dcm": 200_000}, 13)
    assert vault("init", "-r", source).code == 0
    assert vault("backup", "-r", source, str(data)).code == 0
    _files(data, {"new.dcm": 1_000_000}, 14)
    assert vault("backup", "-r", source, str(data), "--tag", "legal-hold").code == 0
    secret = tmp_path / "replica-passphrase"
    secret.write_text(REPLICA_PASSWORD + "\n")
    secret.chmod(0o600)
    # A repository of its own: its own chunk-id key, chunker seed and data keys.
    assert vault("init", "-r", dest, "--password-file", str(secret), password=None).code == 0

    # Not a replica: refused unless asked for, so a mistyped destination stays empty.
    refused = vault("copy", "-r", source, "--to", dest, "--to-password-file", str(secret))
    assert refused.code == 2 and "give --independent" in refused.err
    moved = _copy(vault, source, dest, tmp_path, "--independent", "--verify-data")
    assert moved["mode"] == "independent" and moved["copied"] == 2
    assert moved["packs_copied"] == 0 and int(moved["blobs_verified"]) > 0
    # Every chunk was read once, and the second snapshot's unchanged files deduplicated.
    assert int(moved["bytes_read"]) == 3_000_000 + 1_500_000 + 200_000 + 1_000_000
    again = _copy(vault, source, dest, tmp_path, "--independent")
    assert again["copied"] == 0 and again["already_there"] == 2 and again["bytes_read"] == 0
    assert again["blobs_repacked"] == 0

    # A later snapshot: only what the destination lacks is stored.
    _files(data, {"photo.jpg": 400_000}, 15)
    assert vault("backup", "-r", source, str(data)).code == 0
    later = _copy(vault, source, dest, tmp_path, "--independent")
    assert later["copied"] == 1
    assert 400_000 <= int(later["bytes_repacked"]) < 400_000 + 64_000  # the new file, its trees

    # Nothing of the source's keys reached it: no pack opens in both, and ids differ.
    if dest_kind == "local":
        theirs = {p.name for p in (Path(dest) / "data").rglob("*") if p.is_file()}
        ours = {p.name for p in (Path(source) / "data").rglob("*") if p.is_file()}
        assert theirs and not theirs & ours
        # A copy killed at the last step leaves the catalog and an empty snapshot object:
        # the next copy writes both again.
        newest = Path(dest) / "snapshots" / str(later["snapshots"][0])
        newest.write_bytes(b"")
        redone = _copy(vault, source, dest, tmp_path, "--independent")
        assert redone["copied"] == 1 and redone["bytes_read"] == later["bytes_read"]
    _check_both(vault, source, dest)
    listed = vault("snapshots", "-r", dest, "--json", password=REPLICA_PASSWORD).json()
    assert [s["tags"] for s in listed][1] == ["legal-hold"]
    for snapshot in [s["id"] for s in listed]:
        a, b = tmp_path / f"a-{snapshot}", tmp_path / f"b-{snapshot}"
        assert vault("restore", snapshot, "-r", source, "--target", str(a)).code == 0
        restored = vault("restore", snapshot, "-r", dest, "--target", str(b),
                         password=REPLICA_PASSWORD)  # fmt: skip
        assert restored.code == 0, restored.err
        assert describe_tree(str(a)) == describe_tree(str(b))
    studies = vault("studies", "-r", dest, "--json", password=REPLICA_PASSWORD)
    assert studies.code == 0, studies.err


def test_copy_refuses_the_same_repository_and_names_a_missing_one(
    vault: RunCli, tmp_path: Path
) -> None:
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    assert vault("init", "-r", a).code == 0
    same = vault("copy", "-r", a, "--to", a)
    assert same.code == 2
    assert "the same repository" in same.err and "Traceback" not in same.err
    missing = vault("copy", "-r", a, "--to", b)
    assert missing.code == 10


def test_the_nightly_copy_follows_the_backup_and_status_shows_each_replicas_lag(
    vault: RunCli, tmp_path: Path
) -> None:
    source, replica = str(tmp_path / "nas"), str(tmp_path / "offsite")
    data = tmp_path / "imaging"
    _files(data, {"a.dcm": 300_000}, 7)
    assert vault("init", "-r", source).code == 0
    _replica(vault, source, replica, tmp_path)
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "backup.toml").write_text(
        f'[backup]\nrepository = "{source}"\n'
        f'password_file = "{tmp_path / "source-passphrase"}"\nsources = ["{data}"]\n'
    )
    schedule = (
        "[schedule]\nretry_after_minutes = 0\ncopy_rpo_hours = 1\n"
        f'copy_to = ["{replica}"]\ncopy_password_file = "{tmp_path / "replica-passphrase"}"\n'
    )
    (policies / "schedule.toml").write_text(schedule)
    night = vault("schedule", "run", "--policy-dir", policies, "--once", "backup", password=None)
    assert night.code == 0, night.err
    assert "copy: done" in night.err
    held = vault("snapshots", "-r", replica, "--json", password=REPLICA_PASSWORD).json()
    assert len(held) == 1
    status = vault("status", "-r", source, "--policy-dir", policies, "--json").json()
    [entry] = status["replicas"]
    assert entry["lag_seconds"] == 0 and entry["location"] == replica
    assert not [f for f in status["findings"] if f["topic"] == "replica"]

    # A backup five hours later that no copy followed: the replica is behind its RPO.
    assert vault("backup", "-r", source, str(data), "--time", "2099-01-01 05:00:00").code == 0
    behind = vault("status", "-r", source, "--policy-dir", policies, "--json").json()
    assert any(
        f["topic"] == "replica" and "h behind, more than its RPO of 1 h" in f["message"]
        for f in behind["findings"]
    )
    # A copy that fails (the replica's passphrase is wrong) is a replica finding too, and
    # the next copy that passes clears it.
    (tmp_path / "wrong").write_text("not the replica passphrase at all\n")
    (tmp_path / "wrong").chmod(0o600)
    failed = vault(
        "copy", "-r", source, "--to", replica, "--to-password-file", str(tmp_path / "wrong")
    )
    assert failed.code == 12
    failing = vault("status", "-r", source, "--policy-dir", policies, "--json").json()
    assert any(
        f["topic"] == "replica" and "has failed since" in f["message"] for f in failing["findings"]
    ) or any("h behind" in f["message"] for f in failing["findings"])
    assert failing["replicas"][0]["failed_since"] is not None
    assert _copy(vault, source, replica, tmp_path)["copied"] == 1
    caught_up = vault("status", "-r", source, "--policy-dir", policies, "--json").json()
    assert caught_up["replicas"][0]["lag_seconds"] == 0
    assert caught_up["replicas"][0]["failed_since"] is None
    assert not [f for f in caught_up["findings"] if f["topic"] == "replica"]
    # The evidence pack names the offsite copy and how current it is.
    pack = vault("report", "-r", source, "--policy-dir", policies, "--format", "md")
    assert f"Replica {replica}" in pack.out and "0.0 h behind (RPO 1 h)" in pack.out

    # A machine key file for the replica (no Argon2id each night) is used over a passphrase.
    key_file = tmp_path / "offsite.key"
    added = vault("key", "add", "-r", replica, "--new-key-file", str(key_file),
                  password=REPLICA_PASSWORD)  # fmt: skip
    assert added.code == 0, added.err
    (policies / "schedule.toml").write_text(
        schedule.replace(str(tmp_path / "replica-passphrase"), str(tmp_path / "wrong"))
        + f'copy_key_file = "{key_file}"\n'
    )
    night = vault("schedule", "run", "--policy-dir", policies, "--once", "backup", password=None)
    assert night.code == 0, night.err
    assert len(vault("snapshots", "-r", replica, "--json", password=REPLICA_PASSWORD).json()) == 3


def test_an_erase_on_the_source_is_incomplete_until_the_next_copy_erases_it_on_the_replica(
    vault: RunCli, tmp_path: Path
) -> None:
    source, replica, data = _backed_up_with_replica(
        vault, tmp_path, {"a.dcm": 400_000, "b.dcm": 300_000}, 7
    )
    assert _copy(vault, source, replica, tmp_path)["copied"] == 1
    sealed_under_1 = {p.name for p in (Path(replica) / "data").rglob("*") if p.is_file()}
    assert sealed_under_1

    certificate = tmp_path / "source-erase.json"
    erased = vault("key", "rotate", "--reencrypt", "-r", source, "--certificate", certificate)
    assert erased.code == 0, erased.err
    doc = json.loads(certificate.read_text())
    assert doc["verdict"] == "incomplete"
    assert [r["object"] for r in doc["not_erased"]] == [f"replica {replica}"]
    assert "next `vault copy --to` erases the keys there" in erased.err
    findings = vault("status", "-r", source, "--json").json()["findings"]
    assert any("still holds the keys of epoch(s) 1" in f["message"] for f in findings)

    replica_certificate = tmp_path / "replica-erase.json"
    copied = _copy(vault, source, replica, tmp_path, "--certificate", str(replica_certificate))
    assert copied["epochs_erased"] == [1]
    theirs = json.loads(replica_certificate.read_text())
    assert theirs["verdict"] == "complete"
    assert [e["id"] for e in theirs["epochs_destroyed"]] == [1]
    epochs = vault("key", "list", "-r", replica, "--json", password=REPLICA_PASSWORD).json()
    assert {e["id"]: e["state"] for e in epochs["epochs"]}[1] == "destroyed"
    # Every pack the replica held under the destroyed key was rewritten and deleted.
    left = {p.name for p in (Path(replica) / "data").rglob("*") if p.is_file()}
    assert left and not left & sealed_under_1
    findings = vault("status", "-r", source, "--json").json()["findings"]
    assert not any("still holds the keys" in f["message"] for f in findings)
    again = _copy(vault, source, replica, tmp_path)
    assert again["epochs_erased"] == []
    _check_both(vault, source, replica)
    _restores_identical(vault, replica, data, tmp_path / "restored")


def test_tags_added_on_the_source_reach_the_replica_and_a_copy_never_takes_one_off(
    vault: RunCli, tmp_path: Path
) -> None:
    source, replica = str(tmp_path / "nas"), str(tmp_path / "offsite")
    data = tmp_path / "imaging"
    _files(data, {"a.dcm": 100_000}, 8)
    assert vault("init", "-r", source).code == 0
    assert vault("backup", "-r", source, str(data)).code == 0
    _files(data, {"b.dcm": 100_000}, 9)
    assert vault("backup", "-r", source, str(data)).code == 0
    _replica(vault, source, replica, tmp_path)
    assert _copy(vault, source, replica, tmp_path)["copied"] == 2
    first = vault("snapshots", "-r", source, "--json").json()[0]["id"]
    assert vault("tag", "-r", replica, first, "--add", "offsite-audit",
                 password=REPLICA_PASSWORD).code == 0  # fmt: skip

    # A legal hold put on at the NAS after the copy: the offsite copy keeps the snapshot too.
    assert vault("tag", "-r", source, first, "--add", "legal-hold").code == 0
    carried = _copy(vault, source, replica, tmp_path)
    assert carried["retagged"] == [first] and carried["copied"] == 0

    def replica_tags() -> dict[str, list[str]]:
        listed = vault("snapshots", "-r", replica, "--json", password=REPLICA_PASSWORD).json()
        return {s["id"]: s["tags"] for s in listed}

    assert sorted(replica_tags()[first]) == ["legal-hold", "offsite-audit"]
    retention = tmp_path / "offsite-retention.toml"
    retention.write_text(
        '[retention]\nkeep_last = 1\nminimum_days = 0\nhold_tags = ["legal-hold"]\n'
    )
    forgot = vault("forget", "-r", replica, "--policy", str(retention), password=REPLICA_PASSWORD)
    assert forgot.code == 0, forgot.err
    assert first in replica_tags()

    # The hold comes off at the NAS: it stays offsite until someone takes it off there.
    assert vault("tag", "-r", source, first, "--remove", "legal-hold").code == 0
    kept = vault("copy", "-r", source, "--to", replica, "--to-password-file",
                 str(tmp_path / "replica-passphrase"))  # fmt: skip
    assert kept.code == 0, kept.err
    assert f"legal-hold came off snapshot {first[:8]} on the source but stays" in kept.out
    assert "legal-hold" in replica_tags()[first]
    quiet = _copy(vault, source, replica, tmp_path)
    assert quiet["retagged"] == [] and quiet["tags_kept"] == {}
    _check_both(vault, source, replica)


def test_a_source_halfway_through_an_erase_does_not_start_one_on_the_replica() -> None:
    """`retiring` in a replica means its own erase is under way (the copy then finishes it and
    destroys the key): taken from a source whose erase was interrupted, it would destroy a key
    the source's packs, still to be copied, are sealed under."""
    source = Keyring.create(crypto.random_key())
    source.rotate()
    replica = Keyring.replica_of(source, crypto.random_key(), "source-id")
    source.set_state({1}, RETIRING)
    replica.take_epochs_from(source)
    assert {e.id: e.state for e in replica.epochs} == {1: DEACTIVATED, 2: CURRENT}
    source.destroy({1})
    replica.take_epochs_from(source)
    kept = {e.id: e for e in replica.epochs}[1]
    assert kept.state == DEACTIVATED and kept.key  # the copy's own erase destroys it, not this

    # A replica made while the source's erase was interrupted, or left `retiring` by an
    # older vault, does not keep that state for a key the source still uses.
    halfway = Keyring.create(crypto.random_key())
    halfway.rotate()
    halfway.set_state({1}, RETIRING)
    made = Keyring.replica_of(halfway, crypto.random_key(), "source-id")
    assert {e.id: e.state for e in made.epochs}[1] == DEACTIVATED
    made.set_state({1}, RETIRING)
    halfway.set_state({1}, DEACTIVATED)
    assert made.take_epochs_from(halfway) is True
    assert {e.id: e.state for e in made.epochs}[1] == DEACTIVATED


@pytest.mark.parametrize(
    ("fault", "method"),
    [(Fault("reset-mid-body"), "PUT"), (Fault("wrong-length"), "GET")],
    ids=["reset-mid-upload", "miscounted-download"],
)
def test_a_copy_into_s3_through_transient_faults_completes_and_restores_identical(
    proxy: FaultProxy, s3_server: S3Server, vault: RunCli, tmp_path: Path, fault: Fault, method: str
) -> None:
    source, replica = str(tmp_path / "nas"), fresh_s3_url(s3_server)
    data = tmp_path / "imaging"
    _files(data, {f"vol{n}.dcm": 6_000_000 for n in range(4)}, 10)
    assert vault("init", "-r", source).code == 0
    assert vault("backup", "-r", source, str(data)).code == 0
    _replica(vault, source, replica, tmp_path)
    # Three faults in a row on the replica's packs: retried, never fatal, nothing torn kept.
    proxy.inject(fault, times=3, method=method, path_contains="/data/")
    assert _copy(vault, source, replica, tmp_path, "--verify-data")["copied"] == 1
    assert proxy.faults_injected == 3
    _check_both(vault, source, replica)
    _restores_identical(vault, replica, data, tmp_path / "restored")


def test_a_copy_whose_server_vanishes_fails_in_one_line_and_the_next_resumes(
    proxy: FaultProxy, s3_server: S3Server, vault: RunCli, tmp_path: Path
) -> None:
    source, replica = str(tmp_path / "nas"), fresh_s3_url(s3_server)
    data = tmp_path / "imaging"
    _files(data, {f"vol{n}.dcm": 12_000_000 for n in range(4)}, 11)  # about 3 packs
    assert vault("init", "-r", source).code == 0
    assert vault("backup", "-r", source, str(data)).code == 0
    _replica(vault, source, replica, tmp_path)
    original = proxy._forward

    def forward_then_vanish(handler, body):  # type: ignore[no-untyped-def]
        answer = original(handler, body)
        if handler.command == "PUT" and "/data/" in handler.path:
            proxy.down = True  # the first pack is stored, then the line to the offsite drops
        return answer

    proxy._forward = forward_then_vanish  # type: ignore[method-assign]
    # A process of its own, as the scheduler runs it: the lock it could not remove from the
    # vanished server names a process that is gone, so the next copy on this host passes it.
    failed = subprocess.run(
        [sys.executable, "-m", "vault", "copy", "-r", source, "--to", replica,
         "--to-password-file", str(tmp_path / "replica-passphrase")],
        env={**os.environ, "VAULT_PASSWORD": PASSWORD}, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    proxy._forward = original  # type: ignore[method-assign]
    proxy.clear()
    assert failed.returncode == 1, failed.stderr
    # The error in one line naming the connection; at most a warning before it, that the
    # failure could not be logged on the replica either.
    lines = failed.stderr.strip().splitlines()
    assert "Traceback" not in failed.stderr and all(line.startswith("vault: ") for line in lines)
    assert lines[-1].startswith("vault: error") and "connection to" in lines[-1]
    assert all("warning: could not record" in line for line in lines[:-1])
    status = vault("status", "-r", source, "--json").json()
    assert status["replicas"][0]["failed_since"] is not None

    resumed = _copy(vault, source, replica, tmp_path)
    assert resumed["copied"] == 1 and resumed["packs_resumed"] >= 1
    _check_both(vault, source, replica)
    status = vault("status", "-r", source, "--json").json()
    assert status["replicas"][0]["failed_since"] is None


def test_the_replicas_recovery_key_is_break_glass_and_a_two_factor_slot_opens_it(
    vault: RunCli, tmp_path: Path
) -> None:
    source, replica = str(tmp_path / "nas"), str(tmp_path / "offsite")
    data = tmp_path / "imaging"
    _files(data, {"a.dcm": 100_000}, 16)
    assert vault("init", "-r", source).code == 0
    assert vault("backup", "-r", source, str(data)).code == 0
    recovery = tmp_path / "offsite-recovery.txt"
    own = tmp_path / "source-passphrase"
    own.write_text(PASSWORD + "\n")
    own.chmod(0o600)
    made = vault("init", "-r", replica, "--replica-of", source, "--from-password-file", str(own),
                 "--recovery-key-file", str(recovery), password=REPLICA_PASSWORD)  # fmt: skip
    assert made.code == 0, made.err
    recovery.chmod(0o600)
    # The recovery key given for the other repository of the pair is break-glass there.
    opened = vault("copy", "-r", source, "--to", replica, "--to-password-file", str(recovery))
    assert opened.code == 0, opened.err
    assert "RECOVERY KEY (break-glass)" in opened.err
    events = vault("audit", "-r", replica, "--json", password=REPLICA_PASSWORD).json()["events"]
    assert [e["slot_kind"] for e in events if e["action"] == "break-glass-open"] == ["recovery"]
    status = vault("status", "-r", replica, "--json", password=REPLICA_PASSWORD).json()
    assert any("break-glass" in f["message"] for f in status["findings"])

    # A two-factor slot on the replica: the key file and its passphrase together.
    second = tmp_path / "offsite-second-passphrase"
    second.write_text("the offsite two-factor passphrase, long enough\n")
    second.chmod(0o600)
    key = tmp_path / "offsite-two-factor.key"
    added = vault("key", "add", "-r", replica, "--new-key-file", str(key), "--new-two-factor",
                  "--new-password-file", str(second), password=REPLICA_PASSWORD)  # fmt: skip
    assert added.code == 0, added.err
    assert vault("backup", "-r", source, str(data), "--time", "2099-01-01 00:00:00").code == 0
    alone = vault("copy", "-r", source, "--to", replica, "--to-key-file", str(key))
    assert alone.code == 12  # the key file alone opens nothing
    both = vault("copy", "-r", source, "--to", replica, "--to-key-file", str(key),
                 "--to-two-factor", "--to-password-file", str(second), "--json")  # fmt: skip
    assert both.code == 0, both.err
    assert both.json()["copied"] == 1
