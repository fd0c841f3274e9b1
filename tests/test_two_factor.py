"""A second factor for people: a slot that needs both a passphrase and a key file (on removable
media); and a key policy that allows key commands only to someone who opened the repository
with such a slot (or the recovery key)."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import PASSWORD, RunCli
from tests.repos import RepoHandle

OWNER = "the practice owner's own passphrase"


def _two_factor_slot(repo: RepoHandle, vault: RunCli, tmp_path: Path) -> Path:
    secret = tmp_path / "owner-passphrase"
    secret.write_text(OWNER + "\n")
    secret.chmod(0o600)
    key = tmp_path / "usb" / "owner.vaultkey"
    key.parent.mkdir()
    done = vault(
        "key", "add", "-r", repo, "--new-two-factor", "--new-key-file", key,
        "--new-password-file", secret, "--name", "practice owner", "--json",
    )
    assert done.code == 0, done.err
    assert done.json()["kind"] == "two-factor" and key.stat().st_mode & 0o777 == 0o600
    return key


def test_a_two_factor_slot_opens_only_with_both_factors(
    repo: RepoHandle, vault: RunCli, tmp_path: Path
) -> None:
    key = _two_factor_slot(repo, vault, tmp_path)
    both = vault("snapshots", "-r", repo, "--key-file", key, "--two-factor", password=OWNER)
    assert both.code == 0, both.err
    assert vault("snapshots", "-r", repo, "--key-file", key, password=None).code == 12
    assert vault("snapshots", "-r", repo, password=OWNER).code == 12
    wrong = vault("snapshots", "-r", repo, "--key-file", key, "--two-factor", password="nope")
    assert wrong.code == 12
    listed = vault("key", "list", "-r", repo, "--json").json()["slots"]
    assert any(s["kind"] == "two-factor" for s in listed)


def test_the_key_policy_can_require_the_second_factor_for_key_commands(
    repo: RepoHandle, vault: RunCli, tmp_path: Path
) -> None:
    key = _two_factor_slot(repo, vault, tmp_path)
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "keys.toml").write_text("[keys]\nrequire_two_factor_for_key_commands = true\n")
    refused = vault("key", "rotate", "-r", repo, "--policy-dir", policies)
    assert refused.code == 2 and "requires a two-factor slot" in refused.err
    allowed = vault(
        "key", "rotate", "-r", repo, "--policy-dir", policies,
        "--key-file", key, "--two-factor", password=OWNER,
    )
    assert allowed.code == 0, allowed.err
    events = vault("audit", "-r", repo, "--json", password=PASSWORD).json()["events"]
    rotated = [e for e in events if e["action"] == "key-rotate"]
    assert rotated and rotated[-1]["slot_kind"] == "two-factor"
    assert rotated[-1]["slot_name"] == "practice owner"


def test_backups_refuse_an_epoch_past_its_usage_period_when_the_policy_says_so(
    repo: RepoHandle, vault: RunCli, tmp_path: Path
) -> None:
    from dataclasses import replace
    from datetime import UTC, datetime, timedelta

    r = repo.open(PASSWORD)
    old = (datetime.now(UTC) - timedelta(days=400)).isoformat(timespec="seconds")
    r.keyring.epochs = [replace(e, created=old) for e in r.keyring.epochs]
    r.save_keyring()
    source = tmp_path / "src"
    source.mkdir()
    (source / "f").write_text("x")
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "keys.toml").write_text("[keys]\nrefuse_overdue_epoch = true\n")
    refused = vault("backup", "-r", repo, source, "--policy-dir", policies)
    assert refused.code == 2 and "past its usage period of 365 days" in refused.err
    assert vault("backup", "-r", repo, source).code == 0  # without the policy: a warning only
    assert vault("key", "rotate", "-r", repo).code == 0
    assert vault("backup", "-r", repo, source, "--policy-dir", policies).code == 0
    (policies / "keys.toml").write_text("[keys]\nmax_epoch_age_days = 1000\n")
    bad = vault("backup", "-r", repo, source, "--policy-dir", policies)
    assert bad.code == 2 and "at most 730" in bad.err
