"""Evidence never rosier than the facts: a failed full drill keeps status and the evidence pack
at FAIL although sampled drills passed since, and an open corrective action keeps them at WARN
until a reviewer approves it (docs/drills.md says why WARN)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import RunCli
from tests.repos import RepoHandle


@pytest.fixture
def failing_policy(tmp_path: Path) -> Path:
    policies = tmp_path / "failing-policies"
    policies.mkdir()
    (policies / "drill.toml").write_text("[drill]\nsingle_study_rto_minutes = 0\n")
    return policies


def _drill(vault: RunCli, repo: RepoHandle, tmp_path: Path, *args: str | Path) -> int:
    target = tmp_path / f"drill-{len(list(tmp_path.glob('drill-*')))}"
    return vault("drill", "-r", repo, "--target", target, *args).code


def _level(vault: RunCli, repo: RepoHandle) -> tuple[str, list[dict[str, str]]]:
    doc = vault("status", "-r", repo, "--json").json()
    return doc["level"], [f for f in doc["findings"] if f["topic"] == "drill"]


def test_a_failed_full_drill_is_not_hidden_by_sampled_drills_that_passed_since(
    repo: RepoHandle, vault: RunCli, archive: Path, tmp_path: Path
) -> None:
    # The annual full drill runs on a backup older than the RPO: it fails.
    assert vault("backup", "-r", repo, archive, "--time", "2020-01-01 00:00:00").code == 0
    assert _drill(vault, repo, tmp_path, "--full") == 1
    (archive / "new-today.txt").write_text("today")
    assert vault("backup", "-r", repo, archive).code == 0
    for _ in range(2):
        assert _drill(vault, repo, tmp_path) == 0  # monthly sampled drills pass
    level, findings = _level(vault, repo)
    assert level == "FAIL"
    assert any(
        "full restore" in f["message"] and "FAILED" in f["message"] for f in findings
    ), findings
    report = tmp_path / "evidence.md"
    assert vault("report", "-r", repo, "--format", "md", "--out", report).code in (0, 1)
    assert "FAIL" in report.read_text().split("Overall", 1)[1].splitlines()[0]
    # A full drill that passes clears it.
    assert _drill(vault, repo, tmp_path, "--full") == 0
    level, findings = _level(vault, repo)
    assert not any("FAILED" in f["message"] for f in findings)


def test_an_open_corrective_action_warns_until_a_reviewer_approves_it(
    repo: RepoHandle, vault: RunCli, archive: Path, tmp_path: Path, failing_policy: Path
) -> None:
    assert vault("backup", "-r", repo, archive).code == 0
    assert _drill(vault, repo, tmp_path, "--policy-dir", failing_policy) == 1
    drill_id = vault("drill", "history", "-r", repo, "--json").json()["drills"][-1]["drill_id"]
    annotated = vault(
        "drill", "annotate", drill_id[:8], "-r", repo,
        "--corrective-actions", "move the repository to the faster disk",
    )
    assert annotated.code == 0, annotated.err
    assert _drill(vault, repo, tmp_path) == 0  # the next drill passes
    level, findings = _level(vault, repo)
    assert any("open corrective action" in f["message"] for f in findings)
    assert level in ("WARN", "FAIL")
    approved = vault(
        "drill", "annotate", drill_id[:8], "-r", repo, "--reviewer", "J. Smith", "--approved"
    )
    assert approved.code == 0, approved.err
    _, findings = _level(vault, repo)
    assert not any("open corrective action" in f["message"] for f in findings)


@pytest.mark.parametrize("scenario", ["--full", "--sample=3"])
def test_a_drill_whose_restore_failed_meets_no_recovery_time_objective(
    repo: RepoHandle, vault: RunCli, archive: Path, tmp_path: Path, scenario: str
) -> None:
    """Every pack flipped: nothing restores, so nothing was timed. The record must say the
    recovery times were not met (or not measured), never "< 1 ms PASS"."""
    assert vault("backup", "-r", repo, archive).code == 0
    for key in repo.keys("data/"):
        repo.flip(key, repo.size(key) // 2)
    target = tmp_path / "drill"
    result = vault("drill", "-r", repo, "--target", target, scenario, "--json")
    assert result.code == 1
    objectives = {o["name"]: o for o in result.json()["objectives"]}
    timed = [o for name, o in objectives.items() if "RTO" in name]
    assert timed and all(o["result"] != "PASS" for o in timed), timed
    assert all(o["measured_seconds"] is None for o in timed)
    report = tmp_path / "drills.html"
    assert vault("drill", "report", "-r", repo, "--out", report).code == 0
    text = report.read_text()
    assert "< 1 ms" not in text
