"""An honest erase: after re-encryption destroys epoch keys, the old versions of the keyring and
the key slots that a versioned bucket keeps are deleted, or named in the erase certificate as
remaining (Object Lock); the certificate (audit log and file) never claims more than that."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import RunCli, new_bucket
from tests.repos import RepoHandle
from tests.s3server import S3Server


def _erase(
    vault: RunCli, repo: str | Path, source: Path, tmp_path: Path
) -> tuple[int, dict[str, Any]]:
    (source / "a.bin").write_bytes(b"first" * 10_000)
    assert vault("backup", "-r", repo, source).code == 0
    assert vault("key", "rotate", "-r", repo).code == 0
    (source / "b.bin").write_bytes(b"second" * 10_000)
    assert vault("backup", "-r", repo, source).code == 0
    certificate = tmp_path / "erase-certificate.json"
    done = vault("key", "rotate", "--reencrypt", "-r", repo, "--certificate", certificate)
    assert done.code == 0, done.err
    doc = json.loads(certificate.read_text())
    audit = vault("audit", "-r", repo, "--json").json()["events"]
    erase = [e for e in audit if e["action"] == "key-erase"]
    assert erase and erase[-1]["details"]["certificate"]["certificate_id"] == doc["certificate_id"]
    assert vault("check", "-r", repo, "--read-data").code == 0
    return done.code, doc


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "src"
    path.mkdir()
    return path


def test_a_local_erase_certificate_names_what_vault_cannot_see(
    repo: RepoHandle, vault: RunCli, source: Path, tmp_path: Path
) -> None:
    _, doc = _erase(vault, str(repo), source, tmp_path)
    assert doc["verdict"] == "complete"
    assert [e["id"] for e in doc["epochs_destroyed"]] == [1, 2]
    assert doc["locations_checked"]["storage_versioning"] == "none"
    assert any("file-system snapshots" in o for o in doc["outside_vault_view"])
    assert "deduplication" in doc["still_readable_by_design"]


def test_a_versioned_bucket_loses_every_old_keyring_version_in_an_erase(
    s3_server: S3Server, s3_env: dict[str, str], vault: RunCli, source: Path, tmp_path: Path
) -> None:
    bucket = new_bucket(s3_server)
    client = s3_server.client()
    client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    url = f"s3://{bucket}/vault"
    assert vault("init", "-r", url).code == 0
    _, doc = _erase(vault, url, source, tmp_path)
    checked = doc["locations_checked"]
    assert checked["storage_versioning"] == "enabled"
    assert checked["old_versions_of_keyring_and_key_slots_found"] >= 3  # one per rewrite
    assert checked["old_versions_deleted"] == checked["old_versions_of_keyring_and_key_slots_found"]
    assert doc["verdict"] == "complete" and doc["not_erased"] == []
    versions = client.list_object_versions(Bucket=bucket, Prefix="vault/keyring")
    kept = [v for v in versions.get("Versions", []) if v["Key"] == "vault/keyring"]
    assert len(kept) == 1 and kept[0]["IsLatest"]  # only the keyring without the keys


def test_an_object_lock_bucket_makes_the_erase_incomplete_and_the_certificate_says_why(
    s3_server: S3Server, s3_env: dict[str, str], vault: RunCli, source: Path, tmp_path: Path
) -> None:
    bucket = new_bucket(s3_server, object_lock=True)
    url = f"s3://{bucket}/vault"
    assert vault("init", "-r", url, "--object-lock-days", "1").code == 0
    (source / "a.bin").write_bytes(b"first" * 10_000)
    assert vault("backup", "-r", url, source).code == 0
    assert vault("key", "rotate", "-r", url).code == 0
    certificate = tmp_path / "erase-certificate.json"
    done = vault("key", "rotate", "--reencrypt", "-r", url, "--certificate", certificate)
    assert done.code == 0, done.err
    doc = json.loads(certificate.read_text())
    assert doc["verdict"] == "incomplete"
    assert doc["not_erased"] and all(
        item["object"].startswith(("keyring@", "keys/")) for item in doc["not_erased"]
    )
    assert "Object Lock" in doc["not_erased"][0]["reason"]
    assert "INCOMPLETE" in done.err
    assert "can no longer be decrypted" not in done.out
