"""New passphrases must resist an offline guesser (zxcvbn estimate, at least 10^12 guesses), and
the test suite's hooks (cheap KDF, weak-passphrase override) work nowhere else."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, RunCli
from tests.repos import RepoHandle

WEAK = ["password123", "dentist2024", "Smile2024!", "drsmith1970", "qwertyuiop", "a" * 16]


@pytest.mark.parametrize("weak", WEAK)
def test_init_refuses_a_weak_passphrase_before_creating_anything(
    weak: str, tmp_path: Path, vault: RunCli
) -> None:
    refused = vault("init", "-r", tmp_path / "r", password=weak)
    assert refused.code == 2
    assert "too weak" in refused.err and "at least 10^12" in refused.err
    assert weak not in refused.err
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir())


def test_key_add_and_passwd_refuse_a_weak_passphrase(
    tmp_path: Path, repo: RepoHandle, vault: RunCli
) -> None:
    weak = tmp_path / "weak"
    weak.write_text("dentist2024\n")
    weak.chmod(0o600)
    slots = len(vault("key", "list", "-r", repo, "--json").json()["slots"])
    for command in (["key", "add"], ["key", "passwd"]):
        refused = vault(*command, "-r", repo, "--new-password-file", weak)
        assert refused.code == 2 and "too weak" in refused.err, command
    assert len(vault("key", "list", "-r", repo, "--json").json()["slots"]) == slots
    assert vault("snapshots", "-r", repo).code == 0  # the old passphrase still opens it


def test_the_weak_passphrase_override_works_only_inside_the_test_suite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}
    env.update(VAULT_PASSWORD="dentist2024", VAULT_TEST_WEAK_PASSPHRASE="1")
    env.pop("VAULT_TEST_FAST_KDF", None)
    outside = subprocess.run(
        [sys.executable, "-m", "vault", "init", "-r", str(tmp_path / "outside")],
        env=env, capture_output=True, text=True, cwd=ROOT,
    )
    assert outside.returncode == 2 and "too weak" in outside.stderr


def test_the_fast_kdf_hook_is_refused_outside_the_test_suite(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}
    env.update(VAULT_PASSWORD="correct horse battery staple", VAULT_TEST_FAST_KDF="1")
    outside = subprocess.run(
        [sys.executable, "-m", "vault", "init", "-r", str(tmp_path / "outside")],
        env=env, capture_output=True, text=True, cwd=ROOT,
    )
    assert outside.returncode == 2
    assert "test suite's hook" in outside.stderr and "Traceback" not in outside.stderr
    assert not (tmp_path / "outside").exists() or not any((tmp_path / "outside").iterdir())
