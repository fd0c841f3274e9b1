"""`vault key compromised EPOCH | --master`: the key-compromise workflow, end to end."""

from __future__ import annotations

import argparse
import os
import socket
import sys
from pathlib import Path

from vault.cli import secrets_input
from vault.cli.key_workflows import (
    Erase,
    exclusive,
    print_erase,
    print_master_rotation,
    require_second_factor,
    run_master_rotation,
    run_reencrypt,
)
from vault.cli.output import emit_json
from vault.cli.support import open_repo, opt, record_audit
from vault.errors import UsageError
from vault.evidence import breach_facts, pack_render
from vault.jobs import compromise
from vault.repo.keys import Secret
from vault.whoami import os_user

HELP = (
    "report a key as compromised: nothing new is sealed under it, everything it sealed is "
    "re-encrypted under a new epoch and the key destroyed, and a breach-assessment fact sheet "
    "lists what it sealed and who held it"
)


def add_arguments(kp: argparse.ArgumentParser, certificate_help: str, recovery_help: str) -> None:
    kp.add_argument("epoch", type=int, nargs="?", metavar="EPOCH", help="the data-key epoch")
    kp.add_argument(
        "--master",
        action="store_true",
        help="the master key instead (it opens every data key): also replaces the master key, "
        "removes every other slot and issues a new recovery key",
    )
    kp.add_argument(
        "--note",
        metavar="TEXT",
        default="",
        help="what happened, for the record (no patient information)",
    )
    kp.add_argument(
        "--fact-sheet",
        metavar="FILE",
        help="write the breach-assessment fact sheet to FILE (HTML; Markdown if FILE ends in "
        ".md); it is always recorded in the audit log",
    )
    kp.add_argument(
        "--new-password-file",
        metavar="FILE",
        help="with --master: the new passphrase for your slot (asked for when not given); the "
        "secret you opened with may be the leaked one, so it is not kept",
    )
    kp.add_argument("--certificate", metavar="FILE", help=certificate_help)
    kp.add_argument("--recovery-key-file", metavar="FILE", help="with --master: " + recovery_help)


def cmd_key_compromised(args: argparse.Namespace) -> int:
    if (args.epoch is None) == (not args.master):
        raise UsageError(
            "name the compromised key: a data-key EPOCH (`vault key list`), or --master"
        )
    if (args.recovery_key_file or args.new_password_file) and not args.master:
        raise UsageError(
            "--recovery-key-file and --new-password-file go with --master (only it replaces "
            "every secret)"
        )
    _check_writable(args.fact_sheet)
    repo = open_repo(args)
    require_second_factor(args, repo)
    new_secret = None
    if args.master:
        # Every secret that opened the old master key may be the leaked one, the caller's too.
        new_secret = Secret.from_passphrase(secrets_input.new_passphrase(args.new_password_file))
    with exclusive(repo, "key compromised") as held:
        epochs = compromise.epochs_to_report(repo, args.epoch, master=args.master)
        facts = compromise.assess(repo, epochs, master=args.master)
        rotation = None
        if args.master:
            # First, so that the epoch the marking starts is kept only under the new master key.
            assert new_secret is not None
            rotation = run_master_rotation(args, repo, new_secret, compromised=True, held=held)
        compromise.mark_compromised(repo, epochs, facts.reported)
        held.reseal(repo.keyring)
        record_audit(
            repo,
            "key-compromised",
            result="PASS",
            details={
                "scope": facts.scope,
                "epochs": sorted(epochs),
                "note": args.note,
                "facts": facts.to_json(),
            },
        )
        erase: Erase = run_reencrypt(args, repo, epochs, held=held)
    sheet = breach_facts.fact_sheet(
        facts,
        repository_id=repo.config.repository_id,
        location=repo.storage.location(),
        reported_by=f"{os_user()}@{socket.gethostname()}",
        note=args.note,
        erase=erase.certificate,
        new_epoch=erase.result.current,
    )
    if args.fact_sheet:
        path = Path(args.fact_sheet)
        render = pack_render.as_markdown if path.suffix == ".md" else pack_render.as_html
        path.write_text(render(sheet, breach_facts.INTRO), encoding="utf-8")
    if opt(args, "json"):
        emit_json(
            {
                "facts": facts.to_json(),
                "erase_certificate": erase.certificate,
                "current_epoch": erase.result.current,
                "fact_sheet": args.fact_sheet,
                "recovery_key_file": str(rotation[1]) if rotation and rotation[1] else None,
            }
        )
        return 0
    what = "the master key" if args.master else f"key epoch {args.epoch}"
    print(
        f"{what} marked compromised: {facts.packs:,} packs, {len(facts.snapshots):,} snapshots "
        f"and {len(facts.study_catalog_ids):,} studies were sealed under it"
    )
    if rotation is not None:
        print_master_rotation(*rotation)
    print_erase(erase, args)
    if args.fact_sheet:
        print(f"breach-assessment fact sheet written to {args.fact_sheet}")
    else:
        print(
            "the breach-assessment facts are in the audit log (`vault audit --json`); "
            "--fact-sheet FILE writes them as a page",
            file=sys.stderr,
        )
    return 0


def _check_writable(fact_sheet: str | None) -> None:
    """Refuse a fact-sheet path that cannot be written before the workflow starts, not after
    an hour of re-encryption."""
    if not fact_sheet:
        return
    path = Path(fact_sheet)
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir() or not parent.is_dir() or not os.access(parent, os.W_OK):
        raise UsageError(f"cannot write the fact sheet to {path}: no such writable directory")
