"""The local record of what this machine saw of each repository (vault.repo.seen)."""

from __future__ import annotations

from pathlib import Path

import pytest

from vault.repo.seen import Seen


def test_two_processes_remembering_at_once_never_lower_what_this_machine_saw(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VAULT_STATE_DIR", str(tmp_path / "state"))
    first, second = Seen("r" * 64), Seen("r" * 64)  # both read the file before either wrote
    first.remember_generation("keyring", 7)
    first.remember_chain_head("audit/", 12, "aa")
    second.remember_chain_head("drills/", 3, "bb")  # writes after, from its older copy
    again = Seen("r" * 64)
    assert again.generation("keyring") == 7
    assert again.chain_head("audit/") == (12, "aa") and again.chain_head("drills/") == (3, "bb")
