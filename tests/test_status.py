"""`vault status` and the key policy: rotation due, overdue, and policy files that are wrong."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest

from tests.conftest import PASSWORD, RunCli
from tests.repos import RepoHandle
from vault.evidence.status import DUE_SOON, OK, OVERDUE, key_status
from vault.policy.files import KeyPolicy, load_key_policy

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


def _levels(doc: dict[str, object]) -> dict[str, str]:
    return {f["topic"]: f["level"] for f in doc["findings"]}  # type: ignore[attr-defined]


def test_status_goes_from_fail_to_warn_to_ok_as_backup_check_and_drill_happen(
    tmp_path: Path,
    repo: RepoHandle,
    vault: RunCli,
    archive: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A slot of real strength: the test hook's cheap slots are flagged (test below).
    monkeypatch.delenv("VAULT_TEST_FAST_KDF")
    strong = tmp_path / "strong-passphrase"
    strong.write_text(PASSWORD + "\n")
    strong.chmod(0o600)
    assert vault("key", "passwd", "-r", repo, "--new-password-file", strong).code == 0
    empty = vault("status", "-r", repo, "--json")
    assert empty.code == 1 and empty.json()["level"] == "FAIL"
    assert _levels(empty.json())["backup"] == "FAIL"

    vault("backup", "-r", repo, archive)
    fresh = vault("status", "-r", repo, "--json")
    assert fresh.code == 0 and fresh.json()["level"] == "WARN"
    assert _levels(fresh.json()) == {"check": "WARN", "drill": "WARN"}

    assert vault("check", "-r", repo, "--read-data").code == 0
    assert vault("drill", "-r", repo, "--target", tmp_path / "drill").code == 0
    done = vault("status", "-r", repo, "--json")
    doc = done.json()
    assert done.code == 0 and doc["level"] == "OK" and doc["findings"] == []
    assert doc["last_check"]["outcome"] == "PASS" and doc["last_check"]["all_packs_read"]
    assert doc["last_drill"]["result"] == "PASS"
    space = doc["space"]
    assert space["stored_bytes"] > 0 and space["logical_bytes"] >= space["unique_bytes"] > 0
    page = vault("status", "-r", repo)
    assert page.out.startswith("vault status: OK") and "dedup" in page.out


def test_backup_older_than_the_rpo_fails_and_the_metrics_file_says_so(
    tmp_path: Path, repo: RepoHandle, vault: RunCli, archive: Path
) -> None:
    three_days_ago = (datetime.now() - timedelta(days=3)).strftime("%Y-%m-%d %H:%M:%S")
    vault("backup", "-r", repo, archive, "--time", three_days_ago)
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "drill.toml").write_text("[drill]\nrpo_hours = 48\n")
    prom = tmp_path / "textfile" / "vault.prom"
    prom.parent.mkdir()
    late = vault("status", "-r", repo, "--policy-dir", policies, "--metrics-file", prom, "--json")
    assert late.code == 1
    backup_finding = next(f for f in late.json()["findings"] if f["topic"] == "backup")
    assert backup_finding["level"] == "FAIL" and "RPO of 48 h" in backup_finding["message"]

    values = {}
    for line in prom.read_text().splitlines():
        if not line.startswith("#"):
            name_labels, value = line.rsplit(" ", 1)
            values[name_labels.split("{")[0]] = float(value)
    assert values["vault_status"] == 2
    assert values["vault_rpo_seconds"] == 48 * 3600
    assert 3 * 86400 - 120 < values["vault_last_backup_age_seconds"] < 3 * 86400 + 120
    assert "vault_last_check_success" not in values  # never checked: absent, not a fake 0
    assert str(repo) not in prom.read_text() and PASSWORD not in prom.read_text()
    assert [p.name for p in prom.parent.iterdir()] == ["vault.prom"]  # no temp file left


def test_a_slot_made_with_the_test_kdf_is_flagged_by_status_and_key_list(
    repo: RepoHandle, vault: RunCli
) -> None:
    doc = vault("status", "-r", repo, "--json").json()
    assert doc["keys"]["weak_slots"]
    weak = [f for f in doc["findings"] if f["topic"] == "keys"]
    assert weak and weak[0]["level"] == "WARN" and "test-strength" in weak[0]["message"]
    listed = vault("key", "list", "-r", repo)
    assert "WEAK KDF" in listed.out and "test-strength Argon2id" in listed.err
    assert any(s["weak"] for s in vault("key", "list", "-r", repo, "--json").json()["slots"])
