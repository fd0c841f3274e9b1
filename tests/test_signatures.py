"""Audit events and drill records are signed by the key slot that opened the repository, with
a key only that slot's secret unwraps: a holder of another slot (who has the master key and can
seal anything) cannot write in its name; `audit --verify`, `drill history --verify` and `check`
catch it. Repositories from before signing (the golden one) still verify."""

from __future__ import annotations

import base64
import json
from dataclasses import asdict, replace
from pathlib import Path

from tests.conftest import PASSWORD, RunCli
from tests.repos import RepoHandle
from vault.format import sealing
from vault.repo import audit, chain

COLLEAGUE = "the colleague's own long passphrase"


def _colleague(repo: RepoHandle, vault: RunCli, tmp_path: Path) -> str:
    secret = tmp_path / "colleague"
    secret.write_text(COLLEAGUE + "\n")
    secret.chmod(0o600)
    done = vault(
        "key", "add", "-r", repo, "--new-password-file", secret, "--name", "colleague", "--json"
    )
    assert done.code == 0, done.err
    return str(done.json()["id"])


def test_every_new_event_and_drill_record_is_signed_and_verifies(
    repo: RepoHandle, vault: RunCli, archive: Path, tmp_path: Path
) -> None:
    assert vault("backup", "-r", repo, archive).code == 0
    assert vault("drill", "-r", repo, "--target", tmp_path / "d").code == 0
    events = vault("audit", "-r", repo, "--json").json()["events"]
    assert events and all(e["signature"] for e in events)
    assert vault("audit", "-r", repo, "--verify").code == 0
    assert vault("drill", "history", "-r", repo, "--verify").code == 0
    assert vault("check", "-r", repo).code == 0


def test_an_event_forged_in_another_slots_name_is_caught(
    repo: RepoHandle, vault: RunCli, archive: Path, tmp_path: Path
) -> None:
    colleague = _colleague(repo, vault, tmp_path)
    assert vault("backup", "-r", repo, archive, password=COLLEAGUE).code == 0
    # The original slot's holder rewrites the colleague's backup event: authentic sealing, a
    # consistent chain (the next event is rewritten too), but it cannot sign as the colleague.
    r = repo.open(PASSWORD)
    keys = repo.keys("audit/")
    target = next(k for k in keys if audit._load(r, k)[0].slot == colleague)
    event, _ = audit._load(r, target)
    forged = replace(event, details={**event.details, "files": 0}, signature="")
    payload = json.dumps(asdict(forged), sort_keys=True, separators=(",", ":")).encode()
    repo.write(target, r.seal(sealing.Kind.AUDIT, target.rsplit("/", 1)[1], payload))
    verified = vault("audit", "-r", repo, "--verify")
    assert verified.code == 1
    assert f"names slot {colleague[:8]} but is not signed by it" in verified.err
    # A signature copied from another event does not fit either.
    other = audit._load(r, keys[0])[0]
    forged = replace(forged, signature=other.signature)
    payload = json.dumps(asdict(forged), sort_keys=True, separators=(",", ":")).encode()
    repo.write(target, r.seal(sealing.Kind.AUDIT, target.rsplit("/", 1)[1], payload))
    verified = vault("audit", "-r", repo, "--verify")
    assert verified.code == 1 and "is not signed by the slot it names" in verified.err
    assert vault("check", "-r", repo).code == 1


def test_a_removed_slots_events_still_verify_from_the_event_that_introduced_it(
    repo: RepoHandle, vault: RunCli, archive: Path, tmp_path: Path
) -> None:
    colleague = _colleague(repo, vault, tmp_path)
    assert vault("backup", "-r", repo, archive, password=COLLEAGUE).code == 0
    assert vault("key", "remove", colleague[:12], "-r", repo).code == 0
    assert vault("audit", "-r", repo, "--verify").code == 0
    r = repo.open(PASSWORD)
    introduced = [
        e
        for e in chain.read(r, "audit/", sealing.Kind.AUDIT, "audit event").records
        if e["action"] == "key-add"
    ]
    assert base64.b64decode(introduced[0]["details"]["signing_public"])


def test_a_signing_key_swapped_in_a_slot_object_and_a_slotless_event_are_caught(
    repo: RepoHandle, vault: RunCli, archive: Path, tmp_path: Path
) -> None:
    colleague = _colleague(repo, vault, tmp_path)
    assert vault("backup", "-r", repo, archive, password=COLLEAGUE).code == 0
    # The clear public key in keys/<id> is not trusted: the introducing event's is.
    doc = json.loads(repo.read(f"keys/{colleague}"))
    from vault.format import crypto

    _, attacker_public = crypto.signing_keypair()
    doc["signing"]["public"] = base64.b64encode(attacker_public).decode()
    repo.write(f"keys/{colleague}", json.dumps(doc).encode())
    verified = vault("audit", "-r", repo, "--verify")
    assert verified.code == 1 and "other than the one its audit event recorded" in verified.err
    assert "audit event" not in verified.err.split("keys/")[0]  # genuine events still verify


def test_an_event_naming_no_slot_after_signing_began_is_caught(
    repo: RepoHandle, vault: RunCli, archive: Path
) -> None:
    assert vault("backup", "-r", repo, archive).code == 0
    r = repo.open(PASSWORD)
    from vault.repo import signing

    def build(seq: int, prev: str) -> dict[str, object]:
        event = audit.AuditEvent(
            seq=seq, time="2026-01-01T00:00:00+00:00", actor="nobody", host="h",
            action="restore", result="PASS", prev=prev,
        )
        return asdict(event)

    chain.append(r, "audit/", sealing.Kind.AUDIT, build)  # sealed right, but anonymous
    verified = vault("audit", "-r", repo, "--verify")
    assert verified.code == 1 and "names no key slot this repository knows" in verified.err
    assert signing.INTRODUCING
