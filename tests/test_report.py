"""`vault report`: the contingency evidence pack holds what an auditor asks for, and no PHI."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import pydicom

from tests.conftest import RunCli
from tests.repos import RepoHandle

POLICIES = Path(__file__).resolve().parent.parent / "policies"


def _identifiers(archive: Path) -> set[str]:
    found = set()
    for path in archive.rglob("*.dcm"):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        found |= {str(ds.PatientName), str(ds.PatientID), str(ds.StudyInstanceUID)}
        found |= {str(ds.get("AccessionNumber", "")), str(ds.get("PatientBirthDate", ""))}
    return {i for i in found if len(i) >= 4}


class _Balanced(HTMLParser):
    VOID = frozenset({"meta", "br", "hr", "img", "link"})

    def __init__(self) -> None:
        super().__init__()
        self.open: list[str] = []
        self.errors: list[str] = []

    def handle_starttag(self, tag: str, attrs: object) -> None:
        if tag not in self.VOID:
            self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.open or self.open.pop() != tag:
            self.errors.append(tag)


def test_evidence_pack_covers_backups_keys_retention_checks_and_drills_without_phi(
    tmp_path: Path, repo: RepoHandle, vault: RunCli, archive: Path
) -> None:
    assert vault("backup", "-r", repo, archive).code == 0
    assert vault("check", "-r", repo, "--read-data").code == 0
    assert vault("drill", "-r", repo).code == 0
    assert vault("key", "rotate", "-r", repo).code == 0

    md = vault("report", "-r", repo, "--format", "md", "--policy-dir", POLICIES)
    assert md.code == 0, md.err
    text = md.out
    for heading in (
        "## Backups: schedule and recent history",
        "## Encryption and key management",
        "## Retention and immutability",
        "## Integrity verification",
        "## Restore drills",
    ):
        assert heading in text
    assert "Backup runs, last 30 days:** 1 (1 successful, 0 failed, 0 missed): 100%" in text
    assert "since the repository was created on" in text
    assert "AES-256-GCM" in text and "Argon2id" in text
    assert "| data-key epoch 1 |" in text and "| data-key epoch 2 |" in text  # with their dates
    assert "| master key 1 |" in text and "days old (usage period: 365 days)" in text
    assert "monthly 24" in text and "legal-hold" in text
    assert "hash chain intact" in text and "PASS" in text
    assert "every day at 01:30" in text

    out = tmp_path / "evidence.html"
    page = vault("report", "-r", repo, "--out", out, "--policy-dir", POLICIES)
    assert page.code == 0 and str(out) in page.out
    document = out.read_text()
    parser = _Balanced()
    parser.feed(document)
    assert parser.errors == [] and parser.open == []
    assert "<h2>Restore drills</h2>" in document

    for rendered in (text, document):
        # The backed-up root is named (what is backed up, from the snapshots); nothing inside it.
        assert str(archive) in rendered
        assert not [p for p in archive.rglob("*") if str(p) in rendered]
        assert not [i for i in _identifiers(archive) if i in rendered]


def test_report_without_policies_says_what_is_missing(repo: RepoHandle, vault: RunCli) -> None:
    result = vault("report", "-r", repo, "--format", "md")
    assert result.code == 0
    assert "no schedule.toml given" in result.out and "no retention.toml given" in result.out
    assert "no backup runs recorded" in result.out


def test_evidence_pack_names_scope_activity_roles_and_ends_with_a_sign_off(
    tmp_path: Path, repo: RepoHandle, vault: RunCli, archive: Path
) -> None:
    import shutil

    policies = tmp_path / "policies"
    shutil.copytree(POLICIES, policies)
    (policies / "roles.toml").write_text(
        '[roles]\nsecurity_official = "Dr. A. Lee"\nreviewer = "J. Smith, office manager"\n'
    )
    text = (policies / "backup.toml").read_text()
    (policies / "backup.toml").write_text(
        text.replace("sources = [", f'sources = ["{archive}", ', 1)
    )
    assert vault("backup", "-r", repo, archive).code == 0
    study = vault("studies", "-r", repo, "--json").json()[0]["catalog_id"]
    assert vault(
        "restore", "latest", "-r", repo, "--study", study, "--target", tmp_path / "out"
    ).code == 0
    out = tmp_path / "evidence.md"
    vault("report", "-r", repo, "--policy-dir", policies, "--format", "md", "--out", out)
    text = out.read_text()
    assert "Scope and recovery objectives" in text and str(archive) in text
    assert "Recovery point objective (RPO):** 24 h" in text
    activity = text.split("Restores, exports and key events", 1)[1]
    assert "restore" in activity and study in activity
    assert "Security official:** Dr. A. Lee" in text
    assert "Reviewed by: J. Smith, office manager" in text and "Signature: ____" in text
    assert not any(i in text for i in _identifiers(archive))
