"""The `vault key …` commands: slots, epochs, rotation, re-encryption, master-key rotation."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable

from vault import ids, keys, secrets_input
from vault.cli_support import (
    open_repo,
    opt,
    usage,
)
from vault.errors import UsageError
from vault.output import emit_json, table
from vault.repository import Repository


def add_key_parsers(
    common: argparse.ArgumentParser, command: Callable[..., argparse.ArgumentParser]
) -> None:
    """Register `vault key …`; `command` adds a top-level subcommand (from cli.build_parser)."""
    p = command("key", "manage who can open the repository", lambda a: usage("key"))
    key_sub = p.add_subparsers(dest="key_command", metavar="ACTION", required=True)

    def key_command(name: str, help_text: str, func: Callable[..., int]) -> argparse.ArgumentParser:
        kp = key_sub.add_parser(name, parents=[common], help=help_text, description=help_text)
        kp.set_defaults(func=func)
        return kp

    key_command("list", "list key slots and data-key epochs", cmd_key_list)
    kp = key_command("add", "add a passphrase slot, or a key-file slot for machines", cmd_key_add)
    what = kp.add_mutually_exclusive_group()
    what.add_argument("--new-password-file", metavar="FILE", help="the new passphrase's file")
    what.add_argument(
        "--new-key-file",
        metavar="FILE",
        help="create FILE (mode 0600) holding a new random key and add a slot for it",
    )
    kp = key_command("remove", "remove a key slot", cmd_key_remove)
    kp.add_argument("slot", metavar="ID", help="slot id or unique prefix")
    kp.add_argument("--force", action="store_true", help="allow removing the slot in use")
    kp = key_command("passwd", "change the passphrase of the slot in use", cmd_key_passwd)
    kp.add_argument("--new-password-file", metavar="FILE", help="the new passphrase's file")


def cmd_key_list(args: argparse.Namespace) -> int:
    repo = open_repo(args)
    slots = sorted(repo.slots(), key=lambda s: s.created)
    epochs = repo.keyring.epochs
    if opt(args, "json"):
        emit_json(
            {
                "slots": [
                    {
                        "id": s.id,
                        "kind": s.kind,
                        "created": s.created,
                        "kdf": {k: v for k, v in s.kdf.items() if k != "salt"},
                        "in_use": s.id == repo.slot_id,
                    }
                    for s in slots
                ],
                "epochs": [{"id": e.id, "created": e.created, "state": e.state} for e in epochs],
            }
        )
        return 0
    rows = [
        [("*" if s.id == repo.slot_id else " ") + ids.short(s.id), s.kind, s.created, s.kdf["name"]]
        for s in slots
    ]
    print(table(["SLOT", "KIND", "CREATED", "KDF"], rows))
    print("(* = the slot that opened the repository)")
    print()
    print(table(["EPOCH", "STATE", "CREATED"], [[str(e.id), e.state, e.created] for e in epochs]))
    return 0


def cmd_key_add(args: argparse.Namespace) -> int:
    repo = open_repo(args)
    if args.new_key_file:
        text = keys.new_key_file_text()
        try:
            fd = os.open(args.new_key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise UsageError(f"{args.new_key_file} already exists; choose a new file") from None
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        secret = keys.Secret(keys.KEYFILE, keys.parse_key_file(text, name=args.new_key_file))
    else:
        secret = keys.Secret.from_passphrase(secrets_input.new_passphrase(args.new_password_file))
    slot = repo.add_slot(secret)
    if opt(args, "json"):
        emit_json({"id": slot.id, "kind": slot.kind, "created": slot.created})
    else:
        print(f"added key slot {ids.short(slot.id)} ({slot.kind})")
    return 0


def _resolve_slot(repo: Repository, prefix: str) -> keys.KeySlot:
    matches = [s for s in repo.slots() if s.id.startswith(prefix.lower())] if prefix else []
    if not matches:
        raise UsageError(f"no key slot matches {prefix!r}")
    if len(matches) > 1:
        raise UsageError(f"key slot prefix {prefix!r} is ambiguous")
    return matches[0]


def cmd_key_remove(args: argparse.Namespace) -> int:
    repo = open_repo(args)
    slot = _resolve_slot(repo, args.slot)
    if len(repo.slots()) <= 1:
        raise UsageError("refusing to remove the last key slot: the repository would be lost")
    if slot.id == repo.slot_id and not args.force:
        raise UsageError(f"slot {ids.short(slot.id)} is the one in use; pass --force to remove it")
    repo.remove_slot(slot.id)
    if opt(args, "json"):
        emit_json({"removed": slot.id})
    else:
        print(f"removed key slot {ids.short(slot.id)} ({slot.kind})")
    return 0


def cmd_key_passwd(args: argparse.Namespace) -> int:
    repo = open_repo(args)
    current = next(s for s in repo.slots() if s.id == repo.slot_id)
    if current.kind != keys.PASSPHRASE:
        raise UsageError(
            "the repository was opened with a recovery key or key file; "
            "use `vault key add` to add a passphrase instead"
        )
    passphrase = secrets_input.new_passphrase(args.new_password_file)
    new_slot = repo.add_slot(keys.Secret.from_passphrase(passphrase))
    repo.remove_slot(current.id)  # only after the new slot is durable
    if opt(args, "json"):
        emit_json({"id": new_slot.id, "replaced": current.id})
    else:
        print(
            f"passphrase changed: slot {ids.short(current.id)} replaced by {ids.short(new_slot.id)}"
        )
    return 0
