"""S3 repositories against the real SeaweedFS server: errors users meet, faults, economy, and
Object Lock. Faults are injected by a loopback proxy in front of the server."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.conftest import PASSWORD, RunCli, fresh_s3_url, new_bucket
from tests.faultproxy import Fault, FaultProxy
from tests.s3server import ADMIN, READONLY, SCOPED, SCOPED_BUCKET, S3Server
from tests.treecompare import describe_tree
from vault.errors import UsageError
from vault.storage.s3 import S3Storage
from vault.storage.s3_settings import S3Settings


def _use(monkeypatch: pytest.MonkeyPatch, server: S3Server, creds: tuple[str, str]) -> None:
    for name, value in server.env(creds).items():
        monkeypatch.setenv(name, value)


# -- errors users meet ---------------------------------------------------------------------------


def test_wrong_credentials_fail_in_one_line_without_the_secret(
    s3_server: S3Server, s3_env: dict[str, str], vault: RunCli, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = fresh_s3_url(s3_server)
    assert vault("init", "-r", url).code == 0
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret-Zk29")
    result = vault("snapshots", "-r", url)
    assert result.code == 1
    assert "rejected the S3 credentials" in result.err
    assert "not-the-secret-Zk29" not in result.err and ADMIN[1] not in result.err
    assert "Traceback" not in result.err and len(result.err.strip().splitlines()) == 1


def test_missing_bucket_exits_10(s3_env: dict[str, str], vault: RunCli) -> None:
    result = vault("snapshots", "-r", "s3://no-such-bucket-here/vault")
    assert result.code == 10
    assert "no-such-bucket-here" in result.err


def test_missing_repository_in_existing_bucket_exits_10(
    s3_server: S3Server, s3_env: dict[str, str], vault: RunCli
) -> None:
    result = vault("snapshots", "-r", fresh_s3_url(s3_server))
    assert result.code == 10 and "vault init" in result.err


def test_access_denied_on_a_prefix_is_named(
    s3_server: S3Server, vault: RunCli, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = s3_server.client()
    try:
        client.head_bucket(Bucket=SCOPED_BUCKET)
    except Exception:
        client.create_bucket(Bucket=SCOPED_BUCKET)
    _use(monkeypatch, s3_server, SCOPED)
    allowed = vault("init", "-r", f"s3://{SCOPED_BUCKET}/allowed/r{random.randrange(10**9)}")
    assert allowed.code == 0, allowed.err
    denied = vault("init", "-r", f"s3://{SCOPED_BUCKET}/elsewhere/r1")
    assert denied.code == 1
    assert "access denied" in denied.err and f"{SCOPED_BUCKET}/elsewhere" in denied.err


def test_read_only_credentials_can_restore_but_not_back_up(
    s3_server: S3Server,
    vault: RunCli,
    monkeypatch: pytest.MonkeyPatch,
    archive: Path,
    tmp_path: Path,
) -> None:
    _use(monkeypatch, s3_server, ADMIN)
    url = fresh_s3_url(s3_server)
    vault("init", "-r", url)
    assert vault("backup", "-r", url, archive).code == 0
    _use(monkeypatch, s3_server, READONLY)
    backup = vault("backup", "-r", url, archive)
    assert backup.code == 1 and "access denied" in backup.err
    # A reader cannot take a lock either; restore is refused the same clear way, not crashed.
    restore = vault("restore", "latest", "-r", url, "--target", tmp_path / "t")
    assert restore.code == 1 and "access denied" in restore.err


def test_unreachable_endpoint_is_named(vault: RunCli, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("VAULT_S3_MAX_ATTEMPTS", "2")
    result = vault("snapshots", "-r", "s3://bucket/vault")
    assert result.code == 1
    assert f"cannot reach http://127.0.0.1:{port}" in result.err


def test_tls_failure_is_named(
    s3_server: S3Server, s3_env: dict[str, str], vault: RunCli, monkeypatch: pytest.MonkeyPatch
) -> None:
    # https:// to a server that speaks plain http: the handshake fails, as with a bad cert.
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_server.endpoint.replace("http://", "https://"))
    monkeypatch.setenv("VAULT_S3_MAX_ATTEMPTS", "1")
    result = vault("snapshots", "-r", "s3://vault-tests/x")
    assert result.code == 1
    assert "TLS connection" in result.err and "AWS_CA_BUNDLE" in result.err


def test_plain_http_endpoint_off_loopback_is_refused() -> None:
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url="http://storage.example.org:9000",
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="y",
    )
    with pytest.raises(UsageError, match="must use TLS"):
        S3Storage(S3Settings("bucket"), client=client)
    allowed = S3Storage(S3Settings("bucket", allow_insecure_http=True), client=client)
    assert allowed.location() == "s3://bucket"


def test_clock_skew_is_explained(proxy: FaultProxy, s3_server: S3Server, vault: RunCli) -> None:
    url = fresh_s3_url(s3_server)
    proxy.inject(Fault("status", status=403, code="RequestTimeTooSkewed"), times=50)
    result = vault("snapshots", "-r", url)
    assert result.code == 1 and "clock" in result.err and "NTP" in result.err


# -- faults during jobs --------------------------------------------------------------------------


def _incompressible_tree(root: Path, files: int = 3, size: int = 6 * 1024 * 1024) -> Path:
    root.mkdir()
    rng = random.Random(17)
    for i in range(files):
        (root / f"volume{i}.raw").write_bytes(rng.randbytes(size))
    return root


@pytest.mark.parametrize(
    "fault,method",
    [
        (Fault("status", status=503, code="SlowDown"), "PUT"),
        (Fault("status", status=500, code="InternalError"), "PUT"),
        (Fault("status", status=503, code="ServiceUnavailable"), "GET"),
        (Fault("reset"), "PUT"),
        (Fault("reset-mid-body"), "GET"),
        (Fault("truncate"), "GET"),
        (Fault("delay", seconds=0.5), "PUT"),
        (Fault("wrong-length"), "GET"),
    ],
    ids=[
        "slowdown",
        "500",
        "503-get",
        "reset",
        "reset-mid-body",
        "truncated-body",
        "slow",
        "wrong-content-length",
    ],
)
def test_backup_and_restore_complete_correctly_through_transient_faults(
    proxy: FaultProxy,
    s3_server: S3Server,
    vault: RunCli,
    tmp_path: Path,
    archive: Path,
    fault: Fault,
    method: str,
) -> None:
    url = fresh_s3_url(s3_server)
    assert vault("init", "-r", url).code == 0
    # Three faults in a row on every kind of request of that method: retried, not fatal.
    proxy.inject(fault, times=3, method=method)
    backup = vault("backup", "-r", url, archive, "--json")
    assert backup.code == 0, backup.err
    proxy.inject(fault, times=3, method=method)
    target = tmp_path / "out"
    restore = vault("restore", "latest", "-r", url, "--target", target, "--verify")
    assert restore.code == 0, restore.err
    assert proxy.faults_injected >= 3
    assert describe_tree(target / archive.relative_to("/")) == describe_tree(archive)
    assert vault("check", "-r", url, "--read-data").code == 0


def test_server_storm_fails_cleanly_and_next_run_completes(
    proxy: FaultProxy, s3_server: S3Server, vault: RunCli, tmp_path: Path
) -> None:
    source = _incompressible_tree(tmp_path / "src", files=6)
    url = fresh_s3_url(s3_server)
    assert vault("init", "-r", url).code == 0
    # The server answers 500 to every upload after the first two: a storm that outlasts retries.
    proxy.inject(Fault("delay"), times=2, method="PUT")
    proxy.inject(Fault("status", status=500, code="InternalError"), times=10_000, method="PUT")
    failed = vault("backup", "-r", url, source)
    assert failed.code == 1
    assert "server error 500" in failed.err and "Traceback" not in failed.err
    proxy.clear()
    assert vault("check", "-r", url).code == 0
    done = vault("backup", "-r", url, source, "--json")
    assert done.code == 0, done.err
    assert vault("check", "-r", url, "--read-data").code == 0
    target = tmp_path / "out"
    assert vault("restore", "latest", "-r", url, "--target", target, "--verify").code == 0
    assert describe_tree(target / source.relative_to("/")) == describe_tree(source)


def test_server_disappearing_mid_backup_fails_cleanly_and_next_run_completes(
    proxy: FaultProxy, s3_server: S3Server, vault: RunCli, tmp_path: Path
) -> None:
    source = _incompressible_tree(tmp_path / "src", files=8)
    url = fresh_s3_url(s3_server)
    assert vault("init", "-r", url).code == 0
    original = proxy._forward
    forwarded = 0

    def forward_then_vanish(handler, body):  # type: ignore[no-untyped-def]
        nonlocal forwarded
        forwarded += 1
        if handler.command == "PUT" and "/data/" in handler.path:
            proxy.down = True  # after the first pack is stored, the server is gone
        return original(handler, body)

    proxy._forward = forward_then_vanish  # type: ignore[method-assign]
    failed = vault("backup", "-r", url, source)
    assert failed.code == 1
    assert "Traceback" not in failed.err and len(failed.err.strip().splitlines()) == 1
    # The job's own failure is reported (not the failed lock removal that follows it).
    assert "cannot reach" in failed.err or "connection to" in failed.err
    assert "/locks/" not in failed.err
    proxy._forward = original  # type: ignore[method-assign]
    proxy.clear()
    assert vault("check", "-r", url).code == 0
    assert vault("backup", "-r", url, source).code == 0
    assert vault("check", "-r", url, "--read-data").code == 0


# -- economy -------------------------------------------------------------------------------------


def test_many_small_files_cost_about_one_put_per_pack(
    s3_server: S3Server, s3_env: dict[str, str], vault: RunCli, tmp_path: Path
) -> None:
    source = tmp_path / "many"
    source.mkdir()
    rng = random.Random(3)
    total = 0
    for i in range(400):
        data = rng.randbytes(40_000)
        (source / f"slice{i:04}.dcm").write_bytes(data)
        total += len(data)
    url = fresh_s3_url(s3_server)
    vault("init", "-r", url)
    doc = vault("backup", "-r", url, source, "--json").json()
    http = doc["requests"]["http_requests"]
    packs = doc["packs_written"]
    assert packs <= total // (16 * 1024 * 1024) + 2  # data and tree packs
    # Packs plus one index, the study catalog, the snapshot, the slot's last-use note, the
    # audit event, the lock (written and removed) and the conditional-write probe before the
    # first append (two PUTs, vault.repo.append_guard): not 400 PUTs.
    assert http["PutObject"] <= packs + 8
    assert doc["requests"]["put"] == http["PutObject"]

    nightly = vault("backup", "-r", url, source, "--json").json()
    nightly_http = nightly["requests"]["http_requests"]
    # Catalog, snapshot, audit event, lock, and the probe's two: no pack.
    assert nightly_http["PutObject"] <= 6
    assert nightly["stats"]["bytes_read"] == 0
    # Listings: keys/, index/, snapshots/, locks/ twice (before and after writing ours) and
    # audit/ (the next event number); never data/ (test_nightly_backup_never_lists_packs
    # checks the prefixes themselves).
    assert nightly_http.get("ListObjectsV2", 0) <= 6
    assert nightly["requests"]["bytes_downloaded"] < 64 * 1024


# -- Object Lock ---------------------------------------------------------------------------------


def test_object_lock_refused_on_a_bucket_without_it(
    s3_server: S3Server, s3_env: dict[str, str], vault: RunCli, tmp_path: Path
) -> None:
    result = vault("init", "-r", fresh_s3_url(s3_server), "--object-lock-days", "30")
    assert result.code == 2 and "has no Object Lock" in result.err
    local = vault("init", "-r", tmp_path / "local", "--object-lock-days", "30")
    assert local.code == 2


def test_object_lock_keeps_every_object_immutable_and_extend_moves_it_forward(
    s3_server: S3Server, s3_env: dict[str, str], vault: RunCli, archive: Path, tmp_path: Path
) -> None:
    bucket = new_bucket(s3_server, object_lock=True)
    url = f"s3://{bucket}/vault"
    key_file = tmp_path / "recovery.txt"
    init = vault(
        "init", "-r", url, "--object-lock-days", "7", "--json", "--recovery-key-file", key_file
    )
    assert init.code == 0, init.err
    assert init.json()["object_lock"] == {"mode": "GOVERNANCE", "days": 7}
    assert vault("backup", "-r", url, archive).code == 0
    client = s3_server.client()
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]]
    assert any("/data/" in k for k in keys) and any("/snapshots/" in k for k in keys)
    now = datetime.now(UTC)
    for key in keys:
        head = client.head_object(Bucket=bucket, Key=key)
        assert head.get("ObjectLockMode") == "GOVERNANCE", key
        until = head["ObjectLockRetainUntilDate"]
        assert now + timedelta(days=6) < until <= now + timedelta(days=7, minutes=5), key
    pack = next(k for k in keys if "/data/" in k)
    version = client.list_object_versions(Bucket=bucket, Prefix=pack)["Versions"][0]["VersionId"]
    with pytest.raises(Exception, match="AccessDenied"):
        client.delete_object(Bucket=bucket, Key=pack, VersionId=version)

    fresh = vault("object-lock", "extend", "-r", url, "--json").json()
    evidence = [k for k in keys if "/audit/" in k or "/drills/" in k]
    assert evidence  # init and backup events
    # Nothing near expiry, but the audit trail is held for six years (HIPAA 164.316(b)(2)).
    assert fresh["extended"] == len(evidence) and fresh["checked"] >= len(keys) - 1
    for key in evidence:
        until = client.head_object(Bucket=bucket, Key=key)["ObjectLockRetainUntilDate"]
        assert until > now + timedelta(days=6 * 365), key
    # Shorten nothing; instead pretend time passed: objects whose retention is under half left.
    import vault.jobs.objectlock as objectlock

    later = now + timedelta(days=5)
    from tests.repos import RepoHandle
    from vault.storage import open_storage

    repo = RepoHandle(url, open_storage(url), "s3").open(PASSWORD)
    result = objectlock.extend_retention(repo, now=later)
    # Everything but the six-year evidence (and the extend's own audit event, added since).
    assert result.extended >= len(keys) - len(evidence) - 1
    held = {k.removeprefix("vault/") for k in evidence}
    assert held.isdisjoint(result.extended_keys)  # six years out: not renewed at day five
    head = client.head_object(Bucket=bucket, Key=pack)
    assert head["ObjectLockRetainUntilDate"] > now + timedelta(days=11)


def test_nightly_backup_never_lists_packs(
    s3_server: S3Server, s3_env: dict[str, str], vault: RunCli, archive: Path
) -> None:
    from vault.jobs.backup import BackupOptions, backup
    from vault.repo.keys import Secret
    from vault.repo.repository import Repository
    from vault.storage import CountingStorage, open_storage

    url = fresh_s3_url(s3_server)
    vault("init", "-r", url)
    vault("backup", "-r", url, archive)
    storage = CountingStorage(open_storage(url))
    listed: list[str] = []
    real_list = storage.list

    def recording_list(prefix: str = "") -> Iterator[object]:
        listed.append(prefix)
        return real_list(prefix)

    storage.list = recording_list  # type: ignore[method-assign,assignment]
    repo = Repository.open(storage, Secret.from_passphrase(PASSWORD))
    result = backup(repo, BackupOptions((str(archive),)))
    assert result.snapshot.stats.bytes_read == 0
    assert listed and not any(p.startswith("data") or p == "" for p in listed)


def test_stalls_past_the_read_timeout_are_retried_and_a_dead_server_fails_cleanly(
    proxy: FaultProxy,
    s3_server: S3Server,
    vault: RunCli,
    tmp_path: Path,
    archive: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("VAULT_S3_READ_TIMEOUT", "1")
    url = fresh_s3_url(s3_server)
    assert vault("init", "-r", url).code == 0
    # Two stalls of each kind, far past the 1 s timeout: abandoned and sent again.
    proxy.inject(Fault("delay", seconds=60), times=2, method="PUT", path_contains="/data/")
    backed = vault("backup", "-r", url, archive)
    assert backed.code == 0, backed.err
    proxy.inject(Fault("delay", seconds=60), times=2, method="GET", path_contains="/data/")
    target = tmp_path / "out"
    restored = vault("restore", "latest", "-r", url, "--target", target, "--verify")
    assert restored.code == 0, restored.err
    assert describe_tree(target / archive.relative_to("/")) == describe_tree(archive)
    assert proxy.faults_injected == 4

    # A server that accepts connections and never answers uploads: one line, then recovery.
    (archive / "new.bin").write_bytes(random.Random(2).randbytes(300_000))
    proxy.inject(Fault("delay", seconds=60), times=10_000, method="PUT", path_contains="/data/")
    failed = vault("backup", "-r", url, archive)
    assert failed.code == 1 and "Traceback" not in failed.err
    assert len(failed.err.strip().splitlines()) == 1 and "data/" in failed.err
    proxy.clear()
    proxy.release()
    assert vault("backup", "-r", url, archive).code == 0
    assert vault("check", "-r", url, "--read-data").code == 0
