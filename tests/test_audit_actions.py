"""Every action that changes or reveals the repository is audited, and each event names who did
it: the OS user as the system reports it (not LOGNAME), the host, and the key slot that opened
the repository with the name it was given at `key add --name`."""

from __future__ import annotations

import os
import pwd
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import RunCli
from tests.repos import RepoHandle

OFFICE_MANAGER = "a long passphrase for the office manager"


def _events(vault: RunCli, repo: RepoHandle, **kw: Any) -> list[dict[str, Any]]:
    done = vault("audit", "-r", repo, "--json", **kw)
    assert done.code == 0, done.err
    return list(done.json()["events"])


def test_key_and_maintenance_actions_are_audited_and_attributed(
    repo: RepoHandle, vault: RunCli, tmp_path: Path, archive: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LOGNAME", "dr_smith")  # the environment's claim is not the actor
    monkeypatch.setenv("USER", "dr_smith")
    secret = tmp_path / "manager-pw"
    secret.write_text(OFFICE_MANAGER + "\n")
    secret.chmod(0o600)
    added = vault(
        "key", "add", "-r", repo, "--new-password-file", secret,
        "--name", "J. Smith, office manager", "--json",
    )
    assert added.code == 0, added.err
    slot = added.json()["id"]
    assert vault("backup", "-r", repo, archive, password=OFFICE_MANAGER).code == 0
    assert vault("studies", "-r", repo, password=OFFICE_MANAGER).code == 0
    assert vault("key", "rotate", "-r", repo).code == 0
    assert vault("drill", "-r", repo, "--target", tmp_path / "d").code == 0
    drill_id = vault("drill", "history", "-r", repo, "--json").json()["drills"][-1]["drill_id"]
    assert vault("drill", "annotate", drill_id[:8], "-r", repo, "--reviewer", "R").code == 0
    assert vault("key", "remove", slot[:12], "-r", repo).code == 0
    events = _events(vault, repo)
    actions = [e["action"] for e in events]
    for wanted in ("init", "key-add", "backup", "studies-list", "key-rotate", "drill",
                   "drill-annotate", "key-remove"):
        assert wanted in actions, (wanted, actions)
    system_user = pwd.getpwuid(os.geteuid()).pw_name
    assert {e["actor"] for e in events} == {system_user}
    by_manager = [e for e in events if e["slot"] == slot]
    assert {e["action"] for e in by_manager} == {"backup", "studies-list"}
    assert all(e["slot_name"] == "J. Smith, office manager" for e in by_manager)
    added_event = next(e for e in events if e["action"] == "key-add")
    assert added_event["details"]["name"] == "J. Smith, office manager"


def test_unlocking_stale_locks_is_audited(repo: RepoHandle, vault: RunCli) -> None:
    from datetime import timedelta

    from tests.test_concurrency import _foreign_lock

    _foreign_lock(repo, "gone-host", timedelta(hours=3))
    done = vault("unlock", "-r", repo)
    assert done.code == 0 and "removed" in done.out, done.err
    event = _events(vault, repo)[-1]
    assert event["action"] == "unlock" and "gone-host" in str(event["details"]["removed"])


def test_a_recovery_key_open_is_break_glass_until_acknowledged(
    tmp_path: Path, vault: RunCli
) -> None:
    repo = tmp_path / "repo"
    key_file = tmp_path / "recovery.txt"
    assert vault("init", "-r", repo, "--recovery-key-file", key_file).code == 0
    recovery = key_file.read_text().strip()
    opened = vault("snapshots", "-r", repo, password=recovery)
    assert opened.code == 0 and "RECOVERY KEY (break-glass)" in opened.err
    events = vault("audit", "-r", repo, "--json").json()["events"]
    glass = [e for e in events if e["action"] == "break-glass-open"]
    assert glass and glass[0]["slot_kind"] == "recovery"
    status = vault("status", "-r", repo, "--json").json()
    warned = [f for f in status["findings"] if "break-glass" in f["message"]]
    assert warned and warned[0]["level"] == "WARN"
    listing = vault("audit", "-r", repo)
    assert "RECOVERY KEY" in listing.out
    wrong = vault("audit", "-r", repo, "--acknowledge", "1")
    assert wrong.code == 2 and "not a break-glass open" in wrong.err
    seq = str(glass[0]["seq"])
    done = vault("audit", "-r", repo, "--acknowledge", seq, "--note", "drill of the safe's key")
    assert done.code == 0, done.err
    status = vault("status", "-r", repo, "--json").json()
    assert not [f for f in status["findings"] if "break-glass" in f["message"]]
    acked = vault("audit", "-r", repo, "--json").json()["events"][-1]
    assert acked["action"] == "break-glass-acknowledged" and acked["details"]["event"] == int(seq)

    # A disaster recovery opens with the recovery key many times: `all` acknowledges each,
    # one recorded acknowledgement per open, and never with the recovery key itself (that
    # would be a new open, and the key holder clearing their own trace).
    for _ in range(3):
        assert vault("snapshots", "-r", repo, password=recovery).code == 0
    refused = vault("audit", "-r", repo, "--acknowledge", "all", password=recovery)
    assert refused.code == 2 and "not the recovery key" in refused.err
    waiting = [f for f in vault("status", "-r", repo, "--json").json()["findings"]
               if "break-glass" in f["message"]]  # fmt: skip
    assert len(waiting) == 4  # three opens, and the refused acknowledgement's own open
    done = vault("audit", "-r", repo, "--acknowledge", "all", "--note", "restore on a new server")
    assert done.code == 0, done.err
    assert not [f for f in vault("status", "-r", repo, "--json").json()["findings"]
                if "break-glass" in f["message"]]  # fmt: skip
    events = vault("audit", "-r", repo, "--json").json()["events"]
    assert len([e for e in events if e["action"] == "break-glass-acknowledged"]) == 5
