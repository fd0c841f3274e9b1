"""Restore drills: a healthy drill passes with a complete record, damage fails it naming the
catalog ids, records are chained and tamper-evident, no PHI leaks, scratch data is removed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pydicom
import pytest

from tests.conftest import BOTH_BACKENDS, RunCli
from tests.repos import RepoHandle

REQUIRED = {
    "drill_id",
    "tool_version",
    "host",
    "os_user",
    "operator",
    "witness",
    "objective",
    "scenario",
    "scope",
    "started",
    "finished",
    "sample",
    "timing",
    "volume",
    "objectives",
    "items",
    "key_check",
    "scratch",
    "result",
    "failure_reasons",
    "lessons_learned",
    "corrective_actions",
    "reviewer",
    "approved",
    "seq",
    "prev",
}


def _drill(
    vault: RunCli, repo: RepoHandle, tmp_path: Path, *args: str
) -> tuple[int, dict[str, Any]]:
    result = vault("drill", "-r", repo, "--record-dir", tmp_path / "records", "--json", *args)
    return result.code, result.json()


def _identifiers(archive: Path) -> set[str]:
    # File and folder names (patient folders, study-date folders), plus every identifier.
    found = {p.name for p in archive.rglob("*") if p.name != "imaging"} | {"DEMO"}
    for path in archive.rglob("*.dcm"):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        for keyword in (
            "PatientName",
            "PatientID",
            "PatientBirthDate",
            "StudyInstanceUID",
            "SeriesInstanceUID",
            "SOPInstanceUID",
            "AccessionNumber",
        ):
            value = str(ds.get(keyword, "") or "")
            if value:
                found.add(value)
    return {f for f in found if len(f) >= 4}


@BOTH_BACKENDS
def test_sampled_drill_passes_with_a_complete_record_and_no_phi(
    repo: RepoHandle, vault: RunCli, archive: Path, tmp_path: Path
) -> None:
    vault("backup", "-r", repo, archive)
    code, record = _drill(vault, repo, tmp_path, "--seed", "7", "--operator", "Pat Admin, IT")
    assert code == 0, record
    assert set(record) >= REQUIRED
    assert record["result"] == "PASS" and record["sample"]["seed"] == 7
    categories = {i["category"] for i in record["items"]}
    assert {"cbct", "radiograph"} <= categories and categories & {"photo", "other"}
    assert all(i["result"] == "PASS" and i["verified"] == i["files"] for i in record["items"])
    assert record["scratch"] == {"used": True, "deleted": True}
    assert record["timing"]["time_to_first_byte_seconds"] is not None
    assert {o["name"].split(" (")[0] for o in record["objectives"]} == {
        "single-study RTO",
        "full-restore RTO",
        "RPO",
    }
    local = Path(record["local_copy"])
    assert local.stat().st_mode & 0o777 == 0o600
    text = json.dumps(record)
    report = vault("drill", "report", "-r", repo, "--format", "html").out
    for identifier in _identifiers(archive):
        assert identifier not in text, identifier
        assert identifier not in report, identifier
        assert identifier not in local.read_text()
    assert "<svg" in report and "http" not in report.replace("http://www.w3.org/2000/svg", "")


def test_scratch_data_is_gone_after_the_drill(
    repo: RepoHandle, vault: RunCli, archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scratch_root = tmp_path / "tmp"
    scratch_root.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch_root))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    vault("backup", "-r", repo, archive)
    code, record = _drill(vault, repo, tmp_path, "--full")
    assert code == 0 and record["volume"]["files"] > 10
    assert list(scratch_root.iterdir()) == []


def test_corrupted_pack_fails_a_full_drill_naming_catalog_ids_and_is_recorded(
    repo: RepoHandle, vault: RunCli, archive: Path, tmp_path: Path
) -> None:
    vault("backup", "-r", repo, archive)
    pack = repo.largest("data/")
    repo.flip(pack, repo.size(pack) // 2)
    code, record = _drill(vault, repo, tmp_path, "--full")
    assert code == 1 and record["result"] == "FAIL"
    failed = [i for i in record["items"] if i["result"] == "FAIL"]
    assert failed and all(i["id"] for i in failed)
    assert any(failed[0]["id"] in reason for reason in record["failure_reasons"])
    assert any(pack.rsplit("/", 1)[-1] in p for i in failed for p in i["problems"])
    history = vault("drill", "history", "-r", repo, "--json").json()["drills"]
    assert [d["result"] for d in history] == ["FAIL"]


def test_impossible_rto_makes_a_healthy_drill_fail(
    repo: RepoHandle, vault: RunCli, archive: Path, tmp_path: Path
) -> None:
    vault("backup", "-r", repo, archive)
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "drill.toml").write_text("[drill]\nsingle_study_rto_minutes = 0\n")
    code, record = _drill(vault, repo, tmp_path, "--policy-dir", str(policies))
    assert code == 1 and record["result"] == "FAIL"
    assert all(i["result"] == "PASS" for i in record["items"])
    assert any("single-study RTO" in r for r in record["failure_reasons"])


def test_edited_or_deleted_drill_records_are_detected(
    repo: RepoHandle, vault: RunCli, archive: Path, tmp_path: Path
) -> None:
    vault("backup", "-r", repo, archive)
    for _ in range(3):
        assert _drill(vault, repo, tmp_path)[0] == 0
    assert vault("drill", "history", "-r", repo, "--verify").code == 0
    repo.flip("drills/000000000002", 60)
    edited = vault("drill", "history", "-r", repo, "--verify", "--json")
    assert edited.code == 1 and any(
        "record 2 cannot be read" in p for p in edited.json()["problems"]
    )
    repo.storage.delete("drills/000000000002")
    deleted = vault("drill", "history", "-r", repo, "--verify", "--json")
    assert deleted.code == 1 and any("2 are missing" in p for p in deleted.json()["problems"])


def test_annotation_fills_the_review_fields_and_status_shows_the_last_drill(
    repo: RepoHandle, vault: RunCli, archive: Path, tmp_path: Path
) -> None:
    vault("backup", "-r", repo, archive)
    before = vault("status", "-r", repo, "--json").json()
    assert before["last_drill"] is None and before["drill_overdue"] is True
    _, record = _drill(vault, repo, tmp_path)
    assert (
        vault(
            "drill",
            "annotate",
            record["drill_id"][:8],
            "-r",
            repo,
            "--reviewer",
            "Dr. Review",
            "--corrective-actions",
            "Label the tapes",
            "--approved",
        ).code
        == 0
    )
    (merged,) = vault("drill", "history", "-r", repo, "--json").json()["drills"]
    assert merged["reviewer"] == "Dr. Review" and merged["approved"] is True
    after = vault("status", "-r", repo, "--json").json()
    assert after["last_drill"]["drill_id"] == record["drill_id"]
    assert after["drill_overdue"] is False


def test_key_check_and_source_comparison_are_recorded(
    repo: RepoHandle,
    vault: RunCli,
    archive: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import os

    recovery = tmp_path / "recovery.txt"
    assert vault("init", "-r", tmp_path / "r2", "--recovery-key-file", recovery).code == 0
    other = RepoHandle(str(tmp_path / "r2"), repo.storage, "local")
    vault("backup", "-r", other, archive)
    monkeypatch.setenv("VAULT_RECOVERY_KEY_FILE", str(recovery))
    code, record = _drill(vault, other, tmp_path, "--key-check", "--compare-source", "--full")
    assert code == 0, record["failure_reasons"]
    assert record["key_check"]["result"] == "PASS"
    compared = [i["source_comparison"] for i in record["items"] if "source_comparison" in i]
    assert compared and all(set(c) == {"PASS"} for c in compared)

    # The live file changes but keeps its size and mtime: the drill catches the mismatch.
    victim = archive / "exports" / "pms_dump.bak"
    st = victim.stat()
    data = bytearray(victim.read_bytes())
    data[100] ^= 0xFF
    victim.write_bytes(bytes(data))
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))
    code, record = _drill(vault, other, tmp_path, "--compare-source", "--full")
    assert code == 1 and any("live source" in r for r in record["failure_reasons"])

    wrong = tmp_path / "wrong.txt"
    wrong.write_text("not the recovery key\n")
    wrong.chmod(0o600)
    monkeypatch.setenv("VAULT_RECOVERY_KEY_FILE", str(wrong))
    code, record = _drill(vault, other, tmp_path, "--key-check")
    assert code == 1 and record["key_check"]["result"] == "FAIL"


def test_the_key_check_fails_when_the_ordinary_passphrase_is_given_as_the_recovery_key(
    repo: RepoHandle, vault: RunCli, archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.conftest import PASSWORD

    vault("backup", "-r", repo, archive)
    not_recovery = tmp_path / "not-the-recovery-key.txt"
    not_recovery.write_text(PASSWORD + "\n")
    not_recovery.chmod(0o600)
    monkeypatch.setenv("VAULT_RECOVERY_KEY_FILE", str(not_recovery))
    code, record = _drill(vault, repo, tmp_path, "--key-check")
    assert code == 1 and record["result"] == "FAIL"
    assert record["key_check"]["result"] == "FAIL"
    assert record["key_check"]["opened_with"] == "passphrase"
    assert any("not a recovery key" in r for r in record["failure_reasons"])


def test_a_drill_against_a_restored_tree_fails_on_a_missing_or_changed_file(
    tmp_path: Path, repo: RepoHandle, vault: RunCli, archive: Path
) -> None:
    """`--source-root`: a restored tree must be the snapshot exactly, so a file missing from
    it, or of another size or time, fails the drill (against live files it is only skipped,
    since live files may change after a backup)."""
    assert vault("backup", "-r", repo, archive).code == 0
    tree = tmp_path / "restored"
    assert vault("restore", "latest", "-r", repo, "--target", tree).code == 0
    compare = ("--full", "--compare-source", "--source-root", str(tree))
    code, record = _drill(vault, repo, tmp_path, *compare)
    assert code == 0 and record["compared_with"] == "a restored tree"
    assert all(set(i["source_comparison"]) == {"PASS"} for i in record["items"])
    victims = sorted(p for p in (tree / str(archive).lstrip("/")).rglob("*.dcm"))[:2]
    victims[0].unlink()
    victims[1].write_bytes(victims[1].read_bytes()[:-1])
    code, record = _drill(vault, repo, tmp_path, *compare)
    assert code == 1 and record["result"] == "FAIL"
    failed = [i for i in record["items"] if i["source_comparison"].get("FAIL")]
    assert sum(i["source_comparison"]["FAIL"] for i in failed) == 2
    assert all("restored tree" in " ".join(i["problems"]) for i in failed)
    # --source-root means nothing without --compare-source: refused, not ignored.
    assert vault("drill", "-r", repo, "--source-root", str(tree)).code == 2
