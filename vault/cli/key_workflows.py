"""The steps `vault key rotate`, `retire` and `compromised` share: opening a repository for a
key command (second factor where keys.toml asks), re-encryption with its erase certificate,
and master-key rotation with the one delivery of its new recovery key."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from vault import ids
from vault.cli import recovery_key
from vault.cli.support import open_repo, opt, progress_for, record_audit
from vault.errors import UsageError
from vault.evidence import erase_certificate
from vault.jobs.rotate import MasterRotation, ReencryptResult, reencrypt, rotate_master
from vault.policy.files import load_key_policy, policy_dir
from vault.repo import jobstate, keys, signing
from vault.repo.keys import Secret
from vault.repo.lock import Lock
from vault.repo.repository import Repository
from vault.units import human_bytes
from vault.whoami import os_user

CERTIFICATE_HELP = (
    "with an erase: also write the erase certificate (JSON, NIST SP 800-88) to FILE; it is "
    "always recorded in the audit log"
)


def key_command_repo(args: argparse.Namespace) -> Repository:
    """The repository opened for a key command, refused when keys.toml asks for a second
    factor and the slot that opened it has none (the recovery key is accepted: break-glass)."""
    repo = open_repo(args)
    require_second_factor(args, repo)
    return repo


def require_second_factor(args: argparse.Namespace, repo: Repository) -> None:
    policy = load_key_policy(policy_dir(opt(args, "policy_dir")))
    if policy.require_two_factor_for_key_commands and repo.slot_kind not in (
        keys.TWO_FACTOR,
        keys.RECOVERY,
    ):
        raise UsageError(
            "keys.toml requires a two-factor slot for key commands: open with --key-file FILE "
            "--two-factor (the key file on its removable media, and its passphrase)"
        )


def exclusive(repo: Repository, operation: str) -> Lock:
    return Lock(repo.storage, repo.keyring, exclusive=True, operation=operation)


@dataclass
class Erase:
    result: ReencryptResult
    certificate: dict[str, Any]
    seconds: float


def run_reencrypt(
    args: argparse.Namespace, repo: Repository, epochs: set[int] | None, *, held: Lock
) -> Erase:
    """Re-encrypt and destroy `epochs` (None: all, or resume an interrupted run); the caller
    holds `held`, the exclusive lock. The certificate is recorded in the audit log and
    written to --certificate."""
    started = datetime.now(UTC)
    result = reencrypt(repo, epochs=epochs, progress=progress_for(args), held_lock=held)
    seconds = (datetime.now(UTC) - started).total_seconds()
    cert = erase_certificate.certificate(
        result,
        repository_id=repo.config.repository_id,
        location=repo.storage.location(),
        operator=os_user(),
        when=datetime.now(UTC),
        replicas=_replicas_sharing_keys(repo),
    )
    record_audit(repo, "key-erase", result="PASS", details={"certificate": cert})
    if getattr(args, "certificate", None):
        try:
            Path(args.certificate).write_text(json.dumps(cert, indent=2) + "\n", encoding="utf-8")
        except OSError as exc:
            raise UsageError(
                f"the erase is done and its certificate is in the audit log, but "
                f"{args.certificate} could not be written: {exc.strerror or exc}"
            ) from None
    return Erase(result, cert, seconds)


def _replicas_sharing_keys(repo: Repository) -> tuple[str, ...]:
    """Where this repository's replicas are: they hold its data keys until their next copy.
    (An independent repository a copy went into has keys of its own.)"""
    known = (jobstate.load(repo, jobstate.REPLICAS) or {}).get("replicas", {})
    # Only places a copy into a replica passed for (the mode is recorded then): not a
    # mistyped destination one failed copy left in the record.
    return tuple(sorted(p for p, e in known.items() if e.get("mode") == "replica"))


def erase_json(erase: Erase) -> dict[str, Any]:
    result = erase.result
    return {
        "erase_certificate": erase.certificate,
        "destroyed_epochs": result.retired,
        "current_epoch": result.current,
        "resumed": result.resumed,
        "packs_rewritten": result.packs_rewritten,
        "blobs_rewritten": result.blobs_rewritten,
        "bytes_read": result.bytes_read,
        "bytes_written": result.bytes_written,
        "objects_resealed": result.objects_resealed,
        "index_objects_replaced": result.index_objects_replaced,
        "packs_deleted": result.packs_deleted,
        "duration_seconds": round(erase.seconds, 3),
    }


def print_erase(erase: Erase, args: argparse.Namespace) -> None:
    result, cert = erase.result, erase.certificate
    if result.resumed:
        print("resumed an interrupted re-encryption")
    print(
        f"re-encrypted {result.packs_rewritten} packs ({human_bytes(result.bytes_read)} read, "
        f"{human_bytes(result.bytes_written)} written) and {result.objects_resealed} other "
        f"objects under epoch {result.current} in {erase.seconds:.1f}s"
    )
    epochs = ", ".join(str(e["id"]) for e in cert["epochs_destroyed"])
    checked = cert["locations_checked"]
    if cert["verdict"] == "complete":
        print(
            f"destroyed the keys of epoch(s) {epochs}; old versions of the keyring and key "
            f"slots deleted: {checked['old_versions_deleted']} (storage versioning: "
            f"{checked['storage_versioning']}). What only those epochs sealed can no longer be "
            "decrypted from this repository (cryptographic erase)"
        )
    else:
        replicas = [r for r in cert["not_erased"] if r["object"].startswith("replica ")]
        versions = [r for r in cert["not_erased"] if r not in replicas]
        print(
            f"vault: warning: the erase is INCOMPLETE: the keys of epoch(s) {epochs} are gone "
            "from the current keyring, but copies that hold them remain",
            file=sys.stderr,
        )
        if versions:
            print(
                f"  {len(versions)} old version(s) of the keyring or key slots (first: "
                f"{versions[0]['object']}: {versions[0]['reason']}); run the erase again once "
                "they can be deleted",
                file=sys.stderr,
            )
        for replica in replicas:
            print(
                f"  {replica['object']}: its next `vault copy --to` erases the keys there",
                file=sys.stderr,
            )
    for outside in cert["outside_vault_view"]:
        print(f"not checked: {outside}")
    where = f" and in {args.certificate}" if getattr(args, "certificate", None) else ""
    print(f"erase certificate {cert['certificate_id']} recorded in the audit log{where}")


def run_master_rotation(
    args: argparse.Namespace,
    repo: Repository,
    secret: Secret,
    *,
    compromised: bool = False,
    held: Lock | None = None,
) -> tuple[MasterRotation, Path | None]:
    """A new master key; its recovery key is shown or written before any other I/O (the only
    copy there will ever be). Takes the exclusive lock unless the caller holds it."""
    output = recovery_key.RecoveryKeyOutput(args, json_output=bool(opt(args, "json")))
    try:
        if held is not None:
            result = rotate_master(repo, secret, compromised=compromised)
        else:
            with exclusive(repo, "key rotate --master"):
                result = rotate_master(repo, secret, compromised=compromised)
    except BaseException:
        output.abandon()
        raise
    heading = "NEW RECOVERY KEY (the old one no longer works; print this and store it off-site):"
    output.deliver(result.recovery_key, heading)
    if held is not None:
        held.reseal(repo.keyring)  # the lock's epoch is unchanged, but keep it fresh
    record_audit(
        repo,
        "key-rotate-master",
        result="PASS",
        details={
            "slot": result.new_slot,
            "replaced": result.replaced_slot,
            "removed_slots": [i for i, _ in result.removed_slots],
            "master_key": repo.keyring.current_master.id,
            "previous_master_compromised": compromised,
            **signing.introduce(repo, result.new_slot),
            **signing.introduce_recovery(repo),
        },
    )
    return result, output.path


def master_json(result: MasterRotation, path: Path | None) -> dict[str, Any]:
    return {
        "slot_in_use": result.new_slot,
        "replaced_slot": result.replaced_slot,
        "recovery_key_file": str(path) if path else None,
        "removed_slots": [{"id": i, "kind": k} for i, k in result.removed_slots],
    }


def print_master_rotation(result: MasterRotation, path: Path | None) -> None:
    print(
        f"new master key in place; your slot {ids.short(result.replaced_slot)} is now "
        f"{ids.short(result.new_slot)}"
    )
    if path:
        print(f"NEW RECOVERY KEY written to {path} (mode 0600); the old one no longer works")
    if result.removed_slots:
        print(f"removed {len(result.removed_slots)} other slot(s) that wrapped the old master key:")
        for slot_id, kind in result.removed_slots:
            print(f"  {ids.short(slot_id)}  {kind}")
        print("re-add every other person or machine that needs access with `vault key add`")
