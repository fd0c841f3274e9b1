"""`vault status` and the key policy: rotation due, overdue, and policy files that are wrong."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from tests.conftest import PASSWORD, RunCli
from tests.repos import RepoHandle
from vault.policy import KeyPolicy, load_key_policy
from vault.status import DUE_SOON, OK, OVERDUE, key_status

ROOT = Path(__file__).resolve().parent.parent


def test_shipped_key_policy_matches_the_built_in_defaults() -> None:
    assert load_key_policy(ROOT / "policies") == KeyPolicy()


def test_rotation_becomes_due_then_overdue_with_epoch_age(repo: RepoHandle) -> None:
    r = repo.open(PASSWORD)
    created = datetime.fromisoformat(r.keyring.epoch(1).created)
    policy = KeyPolicy(max_epoch_age_days=365, warn_days=30)
    assert key_status(r, policy, created + timedelta(days=10)).rotation == OK
    soon = key_status(r, policy, created + timedelta(days=340))
    assert soon.rotation == DUE_SOON and "in 25 days" in soon.reasons[0]
    late = key_status(r, policy, created + timedelta(days=400))
    assert late.rotation == OVERDUE and "400 days old" in late.reasons[0]


def test_status_exits_1_when_the_epoch_seals_too_many_objects_and_0_after_rotating(
    tmp_path: Path, repo: RepoHandle, vault: RunCli, archive: Path
) -> None:
    vault("backup", "-r", repo, archive)
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "keys.toml").write_text("[keys]\nmax_objects_per_epoch = 2\n")
    overdue = vault("status", "-r", repo, "--policy-dir", policies, "--json")
    assert overdue.code == 1
    doc = overdue.json()
    assert doc["outcome"] == "FAIL" and doc["keys"]["rotation"] == "overdue"
    assert doc["last_backup"]["age_seconds"] >= 0
    assert vault("key", "rotate", "-r", repo).code == 0
    fine = vault("status", "-r", repo, "--policy-dir", policies, "--json")
    assert fine.code == 0 and fine.json()["keys"]["current_epoch"] == 2


def test_invalid_policy_names_file_line_and_key(
    tmp_path: Path, repo: RepoHandle, vault: RunCli
) -> None:
    policies = tmp_path / "p"
    policies.mkdir()
    (policies / "keys.toml").write_text("[keys]\n\nmax_epoch_age_dayz = 30\n")
    unknown = vault("status", "-r", repo, "--policy-dir", policies)
    assert unknown.code == 2
    assert "keys.toml, line 3" in unknown.err and "max_epoch_age_dayz" in unknown.err
    (policies / "keys.toml").write_text("[keys]\nmax_epoch_age_days = -5\n")
    negative = vault("status", "-r", repo, "--policy-dir", policies)
    assert negative.code == 2 and "line 2" in negative.err
    (policies / "keys.toml").write_text("[keys\nmax_epoch_age_days = 5\n")
    broken = vault("status", "-r", repo, "--policy-dir", policies)
    assert broken.code == 2 and "not valid TOML" in broken.err and "line 1" in broken.err
