"""The `vault key …` commands: slots, epochs, rotation, re-encryption, master-key rotation."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from vault import ids
from vault.cli import compromise, recovery_key, secrets_input
from vault.cli.key_workflows import (
    CERTIFICATE_HELP,
    erase_json,
    exclusive,
    key_command_repo,
    master_json,
    print_erase,
    print_master_rotation,
    require_second_factor,
    run_master_rotation,
    run_reencrypt,
)
from vault.cli.output import emit_json, table
from vault.cli.support import (
    open_repo,
    open_with_secret,
    opt,
    record_audit,
    usage,
)
from vault.errors import UsageError
from vault.jobs.rotate import rotate_epoch
from vault.repo import keys, signing, unlock
from vault.repo.keyring import Epoch
from vault.repo.keyusage import EpochUsage, epoch_usage
from vault.repo.repository import Repository
from vault.repo.seen import LastSlots
from vault.units import human_bytes


def add_key_parsers(
    common: argparse.ArgumentParser, command: Callable[..., argparse.ArgumentParser]
) -> None:
    """Register `vault key …`; `command` adds a top-level subcommand (from cli.build_parser)."""
    p = command("key", "manage who can open the repository", lambda a: usage("key"))
    key_sub = p.add_subparsers(dest="key_command", metavar="ACTION", required=True)

    def key_command(name: str, help_text: str, func: Callable[..., int]) -> argparse.ArgumentParser:
        kp = key_sub.add_parser(name, parents=[common], help=help_text, description=help_text)
        kp.set_defaults(func=func)
        if name != "list":
            kp.add_argument(
                "--policy-dir", metavar="DIR", help="directory with keys.toml ($VAULT_POLICY_DIR)"
            )
        return kp

    key_command("list", "list key slots and data-key epochs", cmd_key_list)
    kp = key_command("add", "add a passphrase slot, or a key-file slot for machines", cmd_key_add)
    kp.add_argument("--new-password-file", metavar="FILE", help="the new passphrase's file")
    kp.add_argument(
        "--new-key-file",
        metavar="FILE",
        help="create FILE (mode 0600) holding a new random key and add a slot for it; with "
        "--new-two-factor the slot needs both this key file and a new passphrase",
    )
    kp.add_argument(
        "--new-two-factor",
        action="store_true",
        help="the new slot needs both --new-key-file (keep it on removable media) and a new "
        "passphrase: a second factor for people",
    )
    kp.add_argument(
        "--name",
        metavar="TEXT",
        default="",
        help='who or what holds the slot, e.g. "J. Smith, office manager"; kept sealed and '
        "named in every audit event the slot opens",
    )
    kp = key_command("remove", "remove a key slot", cmd_key_remove)
    kp.add_argument("slot", metavar="ID", help="slot id or unique prefix")
    kp.add_argument("--force", action="store_true", help="allow removing the slot in use")
    kp = key_command("passwd", "change the passphrase of the slot in use", cmd_key_passwd)
    kp.add_argument("--new-password-file", metavar="FILE", help="the new passphrase's file")
    kp = key_command(
        "rotate",
        "start a new data-key epoch (cheap); --reencrypt also rewrites old data and destroys "
        "old keys; --master replaces the master key",
        cmd_key_rotate,
    )
    what = kp.add_mutually_exclusive_group()
    what.add_argument(
        "--reencrypt",
        action="store_true",
        help="rewrite everything sealed under older epochs, then destroy their keys "
        "(resumes an interrupted run)",
    )
    what.add_argument(
        "--master",
        action="store_true",
        help="new master key: rewraps the slot in use, prints a new recovery key, removes the "
        "other slots",
    )
    kp.add_argument("--epoch", type=int, metavar="ID", help="with --reencrypt: retire only ID")
    kp.add_argument("--certificate", metavar="FILE", help=CERTIFICATE_HELP)
    kp.add_argument(
        "--recovery-key-file", metavar="FILE", help="with --master: " + recovery_key.OPTION_HELP
    )
    kp = key_command(
        "retire", "re-encrypt what epoch ID sealed, then destroy its key", cmd_key_retire
    )
    kp.add_argument("epoch", type=int, metavar="ID", help="the data-key epoch to retire")
    kp.add_argument("--certificate", metavar="FILE", help=CERTIFICATE_HELP)
    kp = key_command("compromised", compromise.HELP, compromise.cmd_key_compromised)
    compromise.add_arguments(kp, CERTIFICATE_HELP, recovery_key.OPTION_HELP)


def _age_days(created: str, now: datetime) -> int:
    return max(0, (now - datetime.fromisoformat(created)).days)


def cmd_key_list(args: argparse.Namespace) -> int:
    repo = open_repo(args)
    slots = sorted(repo.slots(), key=lambda s: s.created)
    unusable = unlock.unusable_slots(repo.storage)
    epochs = repo.keyring.epochs
    usage_by_epoch = epoch_usage(repo)
    now = datetime.now(UTC)
    infos = {s.id: repo.slot_info(s.id) for s in slots}

    def epoch_doc(e: Epoch) -> dict[str, Any]:
        used = usage_by_epoch.get(e.id, EpochUsage())
        return {
            "id": e.id,
            "state": e.state,
            "created": e.created,
            "age_seconds": int((now - datetime.fromisoformat(e.created)).total_seconds()),
            "destroyed": e.retired or None,
            "compromised": e.compromised or None,
            "packs": used.packs,
            "pack_bytes": used.pack_bytes,
            "other_objects": used.objects,
        }

    if opt(args, "json"):
        emit_json(
            {
                "slots": [
                    {
                        "id": s.id,
                        "kind": s.kind,
                        "created": s.created,
                        "kdf": {k: v for k, v in s.kdf.items() if k != "salt"},
                        "weak": keys.weak_slot(s),
                        "in_use": s.id == repo.slot_id,
                        "created_host": infos[s.id].get("created_host"),
                        "last_used": infos[s.id].get("last_used"),
                        "last_used_host": infos[s.id].get("last_used_host"),
                    }
                    for s in slots
                ],
                "epochs": [epoch_doc(e) for e in epochs],
                "master_keys": [
                    {
                        "id": m.id,
                        "state": m.state,
                        "created": m.created,
                        "created_inferred": m.inferred,
                        "deactivated": m.deactivated or None,
                        "compromised": m.compromised or None,
                    }
                    for m in repo.keyring.masters
                ],
                "unusable_slots": [{"id": i, "problem": p} for i, p in unusable],
            }
        )
        return 0
    rows = [
        [
            ("*" if s.id == repo.slot_id else " ") + ids.short(s.id),
            s.kind + (" (WEAK KDF)" if keys.weak_slot(s) else ""),
            s.created,
            infos[s.id].get("created_host", "?"),
            (infos[s.id].get("last_used", "") + " " + infos[s.id].get("last_used_host", "")).strip()
            or "-",
        ]
        for s in slots
    ]
    print(table(["SLOT", "KIND", "CREATED", "CREATED ON", "LAST USED (BACKUP)"], rows))
    print("(* = the slot that opened the repository)")
    print()
    rows = []
    for e in epochs:
        doc = epoch_doc(e)
        rows.append(
            [
                str(e.id),
                e.state + (f" (compromised {e.compromised[:10]})" if e.compromised else ""),
                e.created,
                f"{_age_days(e.created, now)} d",
                str(doc["packs"]),
                human_bytes(doc["pack_bytes"]),
                str(doc["other_objects"]),
            ]
        )
    print(table(["EPOCH", "STATE", "CREATED", "AGE", "PACKS", "PACK BYTES", "OTHER OBJECTS"], rows))
    print()
    rows = [
        [
            str(m.id),
            m.state + (f" (compromised {m.compromised[:10]})" if m.compromised else ""),
            m.created + (" (inferred)" if m.inferred else ""),
            f"{_age_days(m.created, now)} d",
            m.deactivated or "-",
        ]
        for m in repo.keyring.masters
    ]
    print(table(["MASTER KEY", "STATE", "CREATED", "AGE", "DEACTIVATED"], rows))
    weak = [s for s in slots if keys.weak_slot(s)]
    if weak:
        print(
            f"vault: warning: {len(weak)} slot(s) marked WEAK KDF use test-strength Argon2id: "
            "whoever copies one can guess its passphrase fast; replace them "
            "(`vault key passwd`, or `vault key add` then `vault key remove`)",
            file=sys.stderr,
        )
    for slot_id, problem in unusable:
        print(
            f"vault: warning: {problem}: opening never tries it; `vault key remove "
            f"{ids.short(slot_id)}` deletes it",
            file=sys.stderr,
        )
    return 0


def cmd_key_add(args: argparse.Namespace) -> int:
    two_factor = bool(args.new_two_factor)
    if two_factor and not args.new_key_file:
        raise UsageError("a two-factor slot needs --new-key-file FILE (on removable media)")
    if args.new_key_file and args.new_password_file and not two_factor:
        raise UsageError("give --new-key-file or --new-password-file (both: add --new-two-factor)")
    repo = key_command_repo(args)
    if two_factor:
        # The new slot's passphrase first: a weak one must not leave a key file behind.
        passphrase = secrets_input.new_passphrase(args.new_password_file)
        material = _create_key_file(args.new_key_file)
        secret = keys.Secret.two_factor(passphrase, material)
    elif args.new_key_file:
        secret = keys.Secret(keys.KEYFILE, _create_key_file(args.new_key_file))
    else:
        secret = keys.Secret.from_passphrase(secrets_input.new_passphrase(args.new_password_file))
    slot = repo.add_slot(secret, name=args.name)
    details = {
        "slot": slot.id,
        "kind": slot.kind,
        "name": args.name,
        "signing_public": signing.public_key(repo, slot.id),
    }
    record_audit(repo, "key-add", result="PASS", details=details)
    if opt(args, "json"):
        emit_json({"id": slot.id, "kind": slot.kind, "created": slot.created})
    else:
        print(f"added key slot {ids.short(slot.id)} ({slot.kind})")
    return 0


def _create_key_file(path: str) -> bytes:
    """A new key file at `path` (mode 0600, never over an existing file); its 32 bytes."""
    text = keys.new_key_file_text()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise UsageError(f"{path} already exists; choose a new file") from None
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    return keys.parse_key_file(text, name=path)


def _resolve_slot(repo: Repository, prefix: str) -> keys.KeySlot | str:
    """The slot a prefix names, or the id of an unusable one."""
    wanted = prefix.lower()
    usable = [s for s in repo.slots() if s.id.startswith(wanted)] if prefix else []
    unusable = (
        [i for i, _ in unlock.unusable_slots(repo.storage) if i.startswith(wanted)]
        if prefix
        else []
    )
    matches: list[keys.KeySlot | str] = [*usable, *unusable]
    if not matches:
        raise UsageError(f"no key slot matches {prefix!r}")
    if len(matches) > 1:
        raise UsageError(f"key slot prefix {prefix!r} is ambiguous")
    return matches[0]


def cmd_key_remove(args: argparse.Namespace) -> int:
    repo = key_command_repo(args)
    slot = _resolve_slot(repo, args.slot)
    if isinstance(slot, str):  # unusable: it opens nothing, so removing it locks no one out
        repo.remove_slot(slot)
        record_audit(repo, "key-remove", result="PASS", details={"slot": slot, "kind": "unusable"})
        if opt(args, "json"):
            emit_json({"removed": slot})
        else:
            print(f"removed unusable key slot {ids.short(slot)}")
        return 0
    if len(repo.slots()) <= 1:
        raise UsageError("refusing to remove the last key slot: the repository would be lost")
    if slot.id == repo.slot_id and not args.force:
        raise UsageError(f"slot {ids.short(slot.id)} is the one in use; pass --force to remove it")
    name = repo.slot_info(slot.id).get("name", "")
    repo.remove_slot(slot.id)
    details = {"slot": slot.id, "kind": slot.kind, "name": name}
    record_audit(repo, "key-remove", result="PASS", details=details)
    if opt(args, "json"):
        emit_json({"removed": slot.id})
    else:
        print(f"removed key slot {ids.short(slot.id)} ({slot.kind})")
    return 0


def cmd_key_passwd(args: argparse.Namespace) -> int:
    repo = key_command_repo(args)
    current = next(s for s in repo.slots() if s.id == repo.slot_id)
    if current.kind != keys.PASSPHRASE:
        raise UsageError(
            "the repository was opened with a recovery key or key file; "
            "use `vault key add` to add a passphrase instead"
        )
    passphrase = secrets_input.new_passphrase(args.new_password_file)
    name = repo.slot_info(current.id).get("name", "")
    new_slot = repo.add_slot(keys.Secret.from_passphrase(passphrase), name=name)
    repo.remove_slot(current.id)  # only after the new slot is durable
    repo.use_new_slot(new_slot.id)
    LastSlots().remember(repo.storage.location(), new_slot.id)
    record_audit(
        repo,
        "key-passwd",
        result="PASS",
        details={
            "slot": new_slot.id,
            "replaced": current.id,
            "signing_public": signing.public_key(repo, new_slot.id),
        },
    )
    if opt(args, "json"):
        emit_json({"id": new_slot.id, "replaced": current.id})
    else:
        print(
            f"passphrase changed: slot {ids.short(current.id)} replaced by {ids.short(new_slot.id)}"
        )
    return 0


def cmd_key_rotate(args: argparse.Namespace) -> int:
    if args.epoch is not None and not args.reencrypt:
        raise UsageError("--epoch goes with --reencrypt (or use `vault key retire ID`)")
    if args.master:
        return _rotate_master(args)
    if args.reencrypt:
        return _reencrypt(args, args.epoch)
    repo = key_command_repo(args)
    with exclusive(repo, "key rotate"):
        new = rotate_epoch(repo)
    record_audit(repo, "key-rotate", result="PASS", details={"current_epoch": new.id})
    if opt(args, "json"):
        emit_json({"current_epoch": new.id, "created": new.created})
    else:
        print(
            f"key epoch {new.id} is now current: everything written from now on is sealed "
            "under it; older data stays readable under its own epoch"
        )
    return 0


def cmd_key_retire(args: argparse.Namespace) -> int:
    return _reencrypt(args, args.epoch)


def _reencrypt(args: argparse.Namespace, epoch: int | None) -> int:
    repo = key_command_repo(args)
    repo.keyring.refuse_on_replica("re-encrypt and erase keys")
    with exclusive(repo, "key re-encrypt") as held:
        erase = run_reencrypt(args, repo, None if epoch is None else {epoch}, held=held)
    if opt(args, "json"):
        emit_json(erase_json(erase))
    else:
        print_erase(erase, args)
    return 0


def _rotate_master(args: argparse.Namespace) -> int:
    repo, secret = open_with_secret(args)
    require_second_factor(args, repo)
    result, path = run_master_rotation(args, repo, secret)
    if opt(args, "json"):
        emit_json(master_json(result, path))
    else:
        print_master_rotation(result, path)
    return 0
