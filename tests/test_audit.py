"""The audit log: restores and patient searches are recorded, without PHI, in a hash chain
that shows an edited or deleted event."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pydicom
import pytest

from tests.conftest import PASSWORD, RunCli
from tests.repos import RepoHandle
from vault.repo import audit


def _events(vault: RunCli, repo: RepoHandle) -> dict[str, Any]:
    result = vault("audit", "-r", repo, "--verify", "--json")
    return {"code": result.code, **result.json()}


@pytest.fixture
def audited(repo: RepoHandle, vault: RunCli, archive: Path, tmp_path: Path) -> RepoHandle:
    vault("backup", "-r", repo, archive)
    studies = vault("studies", "-r", repo, "--json").json()
    patient = studies[0]["patient_id"]
    assert vault("studies", "-r", repo, "--patient", patient).code == 0
    for n, study in enumerate(studies[:3]):
        out = tmp_path / f"out{n}"
        assert (
            vault(
                "restore", "latest", "-r", repo, "--study", study["catalog_id"], "--target", out
            ).code
            == 0
        )
    return repo


def test_restores_and_patient_searches_are_recorded_without_phi(
    audited: RepoHandle, vault: RunCli, archive: Path
) -> None:
    doc = _events(vault, audited)
    assert doc["code"] == 0 and doc["outcome"] == "PASS"
    actions = [e["action"] for e in doc["events"]]
    assert actions == [
        "init", "backup", "studies-list", "studies-search", "restore", "restore", "restore"
    ]
    saved = doc["events"][1]
    assert saved["result"] == "PASS" and saved["snapshot"] and saved["details"]["bytes"] > 0
    assert str(audited) not in str(saved) and "archive" not in str(saved)  # no source paths
    restore = doc["events"][4]
    assert restore["result"] == "PASS" and len(restore["catalog_ids"]) == 1
    assert restore["actor"] and restore["host"] and restore["snapshot"]
    # Attributed to the key slot that opened the repository, not only to an OS user name.
    assert len(restore["slot"]) == 64 and restore["slot_kind"] == "passphrase"
    identifiers = set()
    for path in archive.rglob("*.dcm"):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        identifiers |= {str(ds.PatientName), str(ds.PatientID), str(ds.StudyInstanceUID)}
    text = str(doc["events"])
    assert not any(i in text for i in identifiers if i)
    # A plain listing shows patient names too: logged as well (without them).
    vault("studies", "-r", audited)
    events = _events(vault, audited)["events"]
    assert len(events) == 8 and events[-1]["action"] == "studies-list"


def test_edited_event_breaks_the_chain(audited: RepoHandle, vault: RunCli) -> None:
    r = audited.open(PASSWORD)
    # Rewrite event 2 with a valid seal but different content: authentic, yet the chain breaks.
    key = "audit/000000000002"
    event, _ = audit._load(r, key)
    forged = audit.AuditEvent(**{**event.__dict__, "target": "/somewhere/else"})
    audited.write(key, r.seal(audit.sealing.Kind.AUDIT, "000000000002", forged.payload()))
    doc = _events(vault, audited)
    assert doc["code"] == 1 and doc["outcome"] == "FAIL"
    assert any("event 3 does not link to audit event 2" in p for p in doc["problems"])


def test_flipped_byte_in_an_event_is_detected(audited: RepoHandle, vault: RunCli) -> None:
    key = "audit/000000000003"
    audited.flip(key, audited.size(key) // 2)
    doc = _events(vault, audited)
    assert doc["code"] == 1 and any("event 3 cannot be read" in p for p in doc["problems"])


def test_deleted_event_is_detected(audited: RepoHandle, vault: RunCli) -> None:
    audited.storage.delete("audit/000000000002")
    doc = _events(vault, audited)
    assert doc["code"] == 1 and any("2 are missing" in p for p in doc["problems"])


def test_an_empty_final_record_from_a_killed_append_is_replaced(
    audited: RepoHandle, vault: RunCli, tmp_path: Path
) -> None:
    head = len(_events(vault, audited)["events"])
    # What a killed uploader can leave on S3: an empty record after the head, which no machine
    # ever saw whole (an emptied record a machine did see is tampering: test_chain_anchor.py).
    audited.write(f"audit/{head + 1:012d}", b"")
    assert _events(vault, audited)["code"] == 0
    out = tmp_path / "again"
    studies = vault("studies", "-r", audited, "--json").json()
    vault("restore", "latest", "-r", audited, "--study", studies[0]["catalog_id"], "--target", out)
    doc = _events(vault, audited)  # the listing's event took the empty record's place
    assert doc["code"] == 0 and [e["seq"] for e in doc["events"]] == list(range(1, head + 3))


def test_a_restore_target_naming_a_patient_is_kept_only_as_a_keyed_token(
    tmp_path: Path, repo: RepoHandle, vault: RunCli, archive: Path
) -> None:
    assert vault("backup", "-r", repo, archive).code == 0
    target = tmp_path / "SMITH_JOHN_1.2.826.0.1.3680043.8.498.1"
    assert vault("restore", "latest", "-r", repo, "--target", target).code == 0
    events = vault("audit", "-r", repo, "--json").json()["events"]
    restore = next(e for e in events if e["action"] == "restore")
    assert "SMITH" not in json.dumps(events) and "3680043" not in json.dumps(events)
    assert restore["target"].startswith("path-token:")
    found = vault("audit", "-r", repo, "--target", target, "--json").json()["events"]
    assert [e["seq"] for e in found] == [restore["seq"]]
    other = vault("audit", "-r", repo, "--target", tmp_path / "elsewhere", "--json").json()
    assert other["events"] == []


@pytest.mark.parametrize("name", ["²" * 12, "٣" * 12, "1" * 11 + "²"])
def test_a_planted_object_with_unicode_digits_in_its_name_is_not_a_traceback(
    audited: RepoHandle, vault: RunCli, name: str
) -> None:
    """str.isdigit() takes superscripts and other scripts' digits, int() not all of them: a
    name of twelve such "digits" beside the events must be ignored, never crash the reader."""
    audited.write(f"audit/{name}", b"planted")
    doc = _events(vault, audited)
    assert doc["code"] == 0, doc
    assert "Traceback" not in json.dumps(doc)
