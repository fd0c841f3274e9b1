"""The end of the audit log and of the drill records is tamper-evident: a machine that has seen a
record notices it deleted, emptied or replaced (`audit --verify`, `drill history --verify`,
`check`, `status`), and the next append refuses to paper over it. Both backends."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tests.conftest import BOTH_BACKENDS, PASSWORD, RunCli
from tests.repos import RepoHandle
from vault.format import sealing

pytestmark = BOTH_BACKENDS


@pytest.fixture
def events(repo: RepoHandle, vault: RunCli, tmp_path: Path) -> list[str]:
    """Three backups: three audit events, each seen by this machine when it was written."""
    source = tmp_path / "src"
    source.mkdir()
    for n in range(3):
        (source / f"f{n}").write_bytes(b"x" * (n + 1))
        assert vault("backup", "-r", repo, source).code == 0
    assert vault("audit", "-r", repo, "--verify").code == 0
    return repo.keys("audit/")


def _tampered(vault: RunCli, repo: RepoHandle, words: str) -> None:
    verified = vault("audit", "-r", repo, "--verify")
    assert verified.code == 1 and words in verified.out + verified.err
    checked = vault("check", "-r", repo)
    assert checked.code == 1 and words in checked.out + checked.err
    status = vault("status", "-r", repo, "--json").json()
    evidence = [f for f in status["findings"] if f["topic"] == "evidence"]
    assert status["level"] == "FAIL" and evidence and words in evidence[0]["message"]


def test_deleting_the_newest_audit_event_is_tampering(
    events: list[str], repo: RepoHandle, vault: RunCli, tmp_path: Path
) -> None:
    repo.storage.delete(events[-1])
    _tampered(vault, repo, "were deleted")
    # The next append does not write over the gap: the deletion stays visible.
    source = tmp_path / "src"
    (source / "later").write_bytes(b"y")
    backed = vault("backup", "-r", repo, source)
    assert backed.code == 0  # the backup itself is saved; only its audit event is refused
    assert "newest records were deleted" in backed.err
    assert repo.keys("audit/") == events[:-1]


def test_emptying_the_newest_audit_event_is_tampering_not_a_torn_write(
    events: list[str], repo: RepoHandle, vault: RunCli
) -> None:
    repo.write(events[-1], b"x")
    _tampered(vault, repo, "was emptied after this machine saw it")
    assert repo.read(events[-1]) == b"x"  # not deleted as an interrupted append


def test_replacing_the_newest_audit_event_with_an_older_one_is_tampering(
    events: list[str], repo: RepoHandle, vault: RunCli, tmp_path: Path
) -> None:
    repo.write(events[-1], repo.read(events[0]))
    verified = vault("audit", "-r", repo, "--verify")
    assert verified.code == 1
    # The next append does not link onto the replacement (which would make it look like
    # history): the evidence stays.
    (tmp_path / "src" / "later").write_bytes(b"z")
    assert vault("backup", "-r", repo, tmp_path / "src").code == 0
    assert repo.keys("audit/") == events
    assert vault("audit", "-r", repo, "--verify").code == 1


def test_a_machine_that_never_saw_the_chain_cannot_know_but_one_that_did_can(
    events: list[str],
    repo: RepoHandle,
    vault: RunCli,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("VAULT_STATE_DIR", str(tmp_path / "new-machine"))
    assert vault("audit", "-r", repo, "--verify").code == 0  # anchors the head it sees
    repo.storage.delete(events[-1])
    verified = vault("audit", "-r", repo, "--verify")
    assert verified.code == 1 and "were deleted" in verified.out + verified.err


def test_deleting_the_newest_drill_record_is_tampering(
    events: list[str], repo: RepoHandle, vault: RunCli, tmp_path: Path
) -> None:
    for n in range(2):
        done = vault("drill", "-r", repo, "--target", tmp_path / f"drill{n}")
        assert done.code == 0, done.err
    records = repo.keys("drills/")
    repo.storage.delete(records[-1])
    verified = vault("drill", "history", "-r", repo, "--verify")
    assert verified.code == 1 and "were deleted" in verified.out + verified.err
    status = vault("status", "-r", repo, "--json").json()
    assert status["level"] == "FAIL"


def test_the_reports_print_the_chain_heads_so_paper_anchors_them_too(
    events: list[str], repo: RepoHandle, vault: RunCli, tmp_path: Path
) -> None:
    assert vault("drill", "-r", repo, "--target", tmp_path / "drill").code == 0
    opened = repo.open(PASSWORD)
    newest = opened.open_object(sealing.Kind.AUDIT, repo.keys("audit/")[-1])
    audit_head = hashlib.sha256(newest).hexdigest()
    pack = tmp_path / "evidence.md"
    vault("report", "-r", repo, "--format", "md", "--out", pack)
    text = pack.read_text()
    assert f"SHA-256 {audit_head}" in text and "Drill record chain head" in text
    drills = tmp_path / "drills.md"
    assert vault("drill", "report", "-r", repo, "--format", "md", "--out", drills).code == 0
    assert "Drill record chain head: record #1, SHA-256" in drills.read_text()
