"""The key-compromise workflow (SP 800-57 states, HIPAA 164.308(a)(6)): `vault key compromised`
marks the key, re-encrypts what it sealed, destroys it, and writes a breach-assessment fact
sheet of facts only; an interrupted workflow is a FAIL in `status`; the master key has an age."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pydicom

from tests.conftest import PASSWORD, RunCli
from tests.repos import RepoHandle
from tests.treecompare import describe_tree
from vault.format import layout
from vault.format.pack import parse_header
from vault.jobs import compromise


def _pack_epochs(repo: RepoHandle) -> set[int]:
    return {
        parse_header(repo.storage.get(key, offset=0, length=24), pack_name=key)[0]
        for key in repo.keys(layout.DATA)
    }


def _patient_identifiers(archive: Path) -> set[str]:
    found = set()
    for path in archive.rglob("*.dcm"):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        found |= {str(ds.PatientName), str(ds.PatientID), str(ds.StudyInstanceUID)}
    return {i for i in found if i}


def test_a_compromised_epoch_is_re_encrypted_destroyed_and_its_facts_listed(
    repo: RepoHandle, vault: RunCli, archive: Path, tmp_path: Path
) -> None:
    assert vault("backup", "-r", repo, archive).code == 0
    first = vault("snapshots", "-r", repo, "--json").json()[0]["id"]
    assert vault("key", "rotate", "-r", repo).code == 0
    (archive / "later.txt").write_text("written under epoch 2\n")
    assert vault("backup", "-r", repo, archive).code == 0
    assert _pack_epochs(repo) == {1, 2}
    sheet = tmp_path / "facts.html"
    done = vault(
        "key", "compromised", "1", "-r", repo, "--note", "backup laptop stolen",
        "--fact-sheet", sheet, "--json",
    )  # fmt: skip
    assert done.code == 0, done.err
    doc = done.json()
    facts = doc["facts"]
    # Both snapshots hold data sealed under epoch 1 (the second reuses its chunks); the
    # studies are named by catalog id.
    assert {s["id"] for s in facts["snapshots"]} == {
        s["id"] for s in vault("snapshots", "-r", repo, "--json").json()
    }
    assert first in {s["id"] for s in facts["snapshots"]}
    assert facts["packs"] >= 1 and facts["study_catalog_ids"]
    assert {s["kind"] for s in facts["slots"]} == {"passphrase", "recovery"}
    assert doc["erase_certificate"]["verdict"] == "complete"
    # Nothing is sealed under the compromised key any more, and nothing was lost.
    assert _pack_epochs(repo) == {2}
    listing = vault("key", "list", "-r", repo, "--json").json()
    one = next(e for e in listing["epochs"] if e["id"] == 1)
    assert one["state"] == "destroyed" and one["compromised"]
    assert vault("check", "-r", repo, "--read-data").code == 0
    out = tmp_path / "out"
    assert vault("restore", first, "-r", repo, "--target", out, "--verify").code == 0
    # The audit log keeps the report and its facts; the sheet and the log hold no patient data.
    events = vault("audit", "-r", repo, "--json").json()["events"]
    reported = next(e for e in events if e["action"] == "key-compromised")
    assert reported["details"]["epochs"] == [1]
    assert reported["details"]["note"] == "backup laptop stolen"
    assert [e["action"] for e in events].index("key-erase") > [e["action"] for e in events].index(
        "key-compromised"
    )
    text = sheet.read_text()
    assert "breach-assessment fact sheet" in text and "backup laptop stolen" in text
    assert facts["study_catalog_ids"][0] in text and first[:12] in text
    identifiers = _patient_identifiers(archive)
    assert identifiers and not any(i in text or i in json.dumps(reported) for i in identifiers)


def test_a_compromised_current_epoch_is_rotated_away_so_nothing_new_is_sealed_under_it(
    repo: RepoHandle, vault: RunCli, archive: Path, tmp_path: Path
) -> None:
    assert vault("backup", "-r", repo, archive).code == 0
    done = vault("key", "compromised", "1", "-r", repo, "--fact-sheet", tmp_path / "f.md")
    assert done.code == 0, done.err
    assert "# Key compromise: breach-assessment fact sheet" in (tmp_path / "f.md").read_text()
    (archive / "new.txt").write_text("after the report\n")
    assert vault("backup", "-r", repo, archive).code == 0
    assert 1 not in _pack_epochs(repo)
    epochs = vault("key", "list", "-r", repo, "--json").json()["epochs"]
    assert [e["state"] for e in epochs] == ["destroyed", "current"]


def test_an_interrupted_compromise_workflow_fails_status_until_it_is_finished(
    repo: RepoHandle, vault: RunCli, archive: Path
) -> None:
    assert vault("backup", "-r", repo, archive).code == 0
    opened = repo.open(PASSWORD)
    # Killed after marking the key and before re-encryption: the state the keyring keeps.
    compromise.mark_compromised(opened, {1}, datetime.now(UTC).isoformat(timespec="seconds"))
    st = vault("status", "-r", repo, "--json")
    assert st.code == 1
    doc = st.json()
    assert doc["keys"]["compromised_epochs"] == [1]
    assert any(
        f["level"] == "FAIL" and "epoch 1 was reported compromised" in f["message"]
        for f in doc["findings"]
    )
    # A backup in between seals under the new epoch, never under the compromised one.
    (archive / "meanwhile.txt").write_text("x\n")
    assert vault("backup", "-r", repo, archive).code == 0
    newest = max(_pack_epochs(repo))
    assert newest == 2
    assert vault("key", "rotate", "--reencrypt", "-r", repo).code == 0
    after = vault("status", "-r", repo, "--json").json()
    assert after["keys"]["compromised_epochs"] == []
    assert not any("compromised" in f["message"] for f in after["findings"])


def test_a_compromised_master_key_replaces_it_every_slot_and_every_data_key(
    tmp_path: Path, vault: RunCli, archive: Path
) -> None:
    repo = tmp_path / "r"
    old_recovery_file = tmp_path / "recovery.txt"
    assert vault("init", "-r", repo, "--recovery-key-file", old_recovery_file).code == 0
    colleague = tmp_path / "colleague"
    colleague.write_text("a colleague's long passphrase 7\n")
    colleague.chmod(0o600)
    assert vault("key", "add", "-r", repo, "--new-password-file", colleague).code == 0
    assert vault("backup", "-r", repo, archive).code == 0
    new_recovery_file = tmp_path / "new-recovery.txt"
    new_passphrase = tmp_path / "new-pw"
    new_passphrase.write_text("a brand new passphrase nobody saw 91\n")
    new_passphrase.chmod(0o600)
    done = vault(
        "key", "compromised", "--master", "-r", repo, "--json",
        "--recovery-key-file", new_recovery_file, "--new-password-file", new_passphrase,
    )  # fmt: skip
    assert done.code == 0, done.err
    assert done.json()["facts"]["scope"] == "master"
    old_recovery = old_recovery_file.read_text().strip()
    new_recovery = new_recovery_file.read_text().strip()
    assert new_recovery not in done.out  # never in JSON
    assert vault("snapshots", "-r", repo, password=old_recovery).code == 12
    assert vault("snapshots", "-r", repo, password="a colleague's long passphrase 7").code == 12
    assert vault("snapshots", "-r", repo, password=new_recovery).code == 0
    # The secret that reported it may be the leaked one: it opens nothing any more.
    assert vault("snapshots", "-r", repo).code == 12
    new = "a brand new passphrase nobody saw 91"
    assert vault("snapshots", "-r", repo, password=new).code == 0
    listing = vault("key", "list", "-r", repo, "--json", password=new).json()
    masters = listing["master_keys"]
    assert [(m["id"], m["state"]) for m in masters] == [(1, "compromised"), (2, "current")]
    assert masters[0]["compromised"] and masters[0]["deactivated"]
    assert [e["state"] for e in listing["epochs"]] == ["destroyed", "current"]
    out = tmp_path / "out"
    restored = vault("restore", "latest", "-r", repo, "--target", out, "--verify", password=new)
    assert restored.code == 0
    assert describe_tree(out / archive.relative_to("/")) == describe_tree(archive)


def test_a_workflow_interrupted_at_any_step_stays_a_fail_until_finished(
    repo: RepoHandle, vault: RunCli, archive: Path
) -> None:
    """Killed after the marking, during the re-encryption (epochs `retiring`), or with
    --master after the master key was replaced but before the marking: status names the
    command that finishes it, and that command clears the FAIL."""
    assert vault("backup", "-r", repo, archive).code == 0
    opened = repo.open(PASSWORD)
    compromise.mark_compromised(opened, {1}, datetime.now(UTC).isoformat(timespec="seconds"))
    opened.keyring.set_state({1}, "retiring")  # the state re-encryption's first step saves
    opened.save_keyring()
    doc = vault("status", "-r", repo, "--json").json()
    (finding,) = [f for f in doc["findings"] if "reported compromised" in f["message"]]
    assert finding["level"] == "FAIL" and "vault key rotate --reencrypt" in finding["message"]
    assert vault("key", "rotate", "--reencrypt", "-r", repo).code == 0
    assert not any(
        "compromised" in f["message"]
        for f in vault("status", "-r", repo, "--json").json()["findings"]
    )


def test_a_master_rotation_for_a_compromise_flags_every_older_epoch(
    repo: RepoHandle, vault: RunCli, archive: Path
) -> None:
    from vault.jobs.rotate import rotate_master
    from vault.repo.keys import Secret

    assert vault("backup", "-r", repo, archive).code == 0
    opened = repo.open(PASSWORD)
    rotate_master(opened, Secret.from_passphrase(PASSWORD), compromised=True)
    doc = vault("status", "-r", repo, "--json").json()
    assert doc["keys"]["compromised_epochs"] == [1]
    assert any("vault key retire 1" in f["message"] for f in doc["findings"])
    assert vault("key", "retire", "1", "-r", repo).code == 0
    assert vault("status", "-r", repo, "--json").json()["keys"]["compromised_epochs"] == []


def test_the_compromised_key_must_be_named_and_still_exist(repo: RepoHandle, vault: RunCli) -> None:
    neither = vault("key", "compromised", "-r", repo)
    assert neither.code == 2 and "name the compromised key" in neither.err
    both = vault("key", "compromised", "1", "--master", "-r", repo)
    assert both.code == 2
    assert vault("key", "compromised", "7", "-r", repo).code == 2
    assert vault("key", "compromised", "1", "-r", repo).code == 0
    again = vault("key", "compromised", "1", "-r", repo)
    assert again.code == 2 and "already destroyed" in again.err


def test_the_master_key_has_an_age_held_against_its_usage_period(
    repo: RepoHandle, vault: RunCli, tmp_path: Path
) -> None:
    opened = repo.open(PASSWORD)
    old = (datetime.now(UTC) - timedelta(days=400)).isoformat(timespec="seconds")
    master = opened.keyring.masters[0]
    opened.keyring.masters = [type(master)(master.id, old, master.state)]
    opened.save_keyring()
    doc = vault("status", "-r", repo, "--json").json()
    assert doc["keys"]["master_key"]["age_days"] == 400
    assert doc["keys"]["master_key"]["rotation"] == "overdue"
    assert any(
        f["level"] == "WARN" and "master key is 400 days old" in f["message"]
        for f in doc["findings"]
    )
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "keys.toml").write_text("[keys]\nmax_master_age_days = 800\n")
    refused = vault("status", "-r", repo, "--policy-dir", policies)
    assert refused.code == 2 and "at most 730" in refused.err
    # A master rotation starts a new, young master key.
    assert vault("key", "rotate", "--master", "-r", repo).code == 0
    after = vault("status", "-r", repo, "--json").json()["keys"]["master_key"]
    assert after["id"] == 2 and after["age_days"] == 0 and after["rotation"] == "ok"
