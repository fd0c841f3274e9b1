"""Rolled-back metadata must not undo a key rotation: a keyring put back from before `key rotate`
is refused by every machine that saw the newer one, and `check` on any machine sees it from the
snapshots written since. A rolled-back check state is not believed by `status`. Both backends."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import BOTH_BACKENDS, RunCli
from tests.repos import RepoHandle

pytestmark = BOTH_BACKENDS


def _backup(vault: RunCli, repo: RepoHandle, source: Path, name: str) -> None:
    (source / name).write_bytes(name.encode() * 1000)
    done = vault("backup", "-r", repo, source)
    assert done.code == 0, done.err


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "src"
    path.mkdir()
    return path


def test_a_keyring_from_before_a_rotation_is_refused_by_a_machine_that_saw_the_rotation(
    repo: RepoHandle, vault: RunCli, source: Path
) -> None:
    _backup(vault, repo, source, "one")
    before_rotation = repo.read("keyring")
    assert vault("key", "rotate", "-r", repo).code == 0
    repo.write("keyring", before_rotation)  # the attacker puts the old copy back
    snapshots = repo.keys("snapshots/")
    for command in (["backup", source], ["key", "list"], ["snapshots"]):
        done = vault(*command, "-r", repo)
        assert done.code == 1, (command, done.err)
        assert "rolled back to an old copy" in done.err and "Traceback" not in done.err
    assert repo.keys("snapshots/") == snapshots  # nothing was sealed under the old epoch


def test_check_on_a_fresh_machine_sees_a_keyring_older_than_the_snapshots(
    repo: RepoHandle,
    vault: RunCli,
    source: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _backup(vault, repo, source, "one")
    before_rotation = repo.read("keyring")
    assert vault("key", "rotate", "-r", repo).code == 0
    _backup(vault, repo, source, "two")  # written under the new keyring generation
    repo.write("keyring", before_rotation)
    monkeypatch.setenv("VAULT_STATE_DIR", str(tmp_path / "another-machine"))
    checked = vault("check", "-r", repo)
    assert checked.code == 1
    # The snapshot written since is sealed under an epoch the old keyring never had.
    assert "newer than every epoch this keyring holds" in checked.err
    assert "the keyring was rolled back to an old copy" in checked.err


def test_check_sees_a_keyring_rolled_back_to_before_an_erase(
    repo: RepoHandle,
    vault: RunCli,
    source: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A rollback that adds back an erased epoch key but no new epoch: every object still
    opens, so only the generations the snapshots record show it; and a backup made on a
    machine that could not know is seen going backwards by the next check."""
    assert vault("key", "rotate", "-r", repo).code == 0
    _backup(vault, repo, source, "one")
    before_erase = repo.read("keyring")  # epoch 1 still has its key
    assert vault("key", "rotate", "--reencrypt", "--epoch", "1", "-r", repo).code == 0
    _backup(vault, repo, source, "two")
    repo.write("keyring", before_erase)
    monkeypatch.setenv("VAULT_STATE_DIR", str(tmp_path / "another-machine"))
    checked = vault("check", "-r", repo, "--json")
    assert checked.code == 1
    problems = " ".join(f["problem"] for f in checked.json()["findings"])
    assert "the keyring was rolled back to an old copy (key rotations undone)" in problems
    _backup(vault, repo, source, "three")  # that machine cannot know
    again = vault("check", "-r", repo, "--json").json()
    problems = " ".join(f["problem"] for f in again["findings"])
    assert "a rolled-back keyring was in use" in problems


def test_a_rotation_then_more_rotations_keep_opening(
    repo: RepoHandle, vault: RunCli, source: Path
) -> None:
    """The memory only ever refuses older keyrings: every legitimate sequence still opens."""
    for round_ in range(3):
        assert vault("key", "rotate", "-r", repo).code == 0
        _backup(vault, repo, source, f"file{round_}")
    assert vault("key", "rotate", "--reencrypt", "-r", repo).code == 0
    assert vault("check", "-r", repo, "--read-data").code == 0


def test_a_check_state_put_back_from_an_older_copy_is_not_believed(
    repo: RepoHandle, vault: RunCli, source: Path
) -> None:
    _backup(vault, repo, source, "one")
    assert vault("check", "-r", repo).code == 0
    old_pass = repo.read("state/check")
    repo.flip(repo.largest("data/"), 200)  # makes the next check FAIL
    failed = vault("check", "-r", repo, "--read-data")
    assert failed.code == 1
    status = vault("status", "-r", repo, "--json").json()
    assert status["last_check"]["outcome"] == "FAIL"
    repo.write("state/check", old_pass)  # hide the failure behind the older PASS
    status = vault("status", "-r", repo, "--json").json()
    assert (status.get("last_check") or {}).get("outcome") != "PASS"

