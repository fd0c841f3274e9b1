"""`vault serve` (the web console) and `vault console user add | remove | list | unlock`.

The command line opens the repositories (key file, password file or command, as for every
command) and hands them to the console, which never reads a secret itself. Managing users
needs no web stack; serving needs the optional extra (`pip install 'vault-backup[console]'`).
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from vault.cli import secrets_input
from vault.cli.output import emit_json, table
from vault.cli.support import open_storage_for, opt, repo_url, secret_sources, usage
from vault.console.signins import SignInLog
from vault.console.users import ROLES, NewUser, UserStore
from vault.errors import UsageError
from vault.policy.console import (
    ConsolePolicy,
    ConsoleRepository,
    default_state_dir,
    load_console_policy,
    split_listen,
)
from vault.repo.keys import Secret
from vault.repo.location import ensure_exists
from vault.repo.repository import Repository
from vault.storage import open_storage
from vault.storage.counting import CountingStorage
from vault.whoami import os_user

EXTRA = "pip install 'vault-backup[console]'"


def add_console_parsers(
    common: argparse.ArgumentParser, command: Callable[..., argparse.ArgumentParser]
) -> None:
    s = command(
        "serve",
        "the web console: fleet status, studies, restores, drills, evidence (HTTPS, "
        "127.0.0.1:8443 by default)",
        cmd_serve,
    )
    s.add_argument(
        "--config",
        metavar="FILE",
        help="console.toml: the repositories to serve "
        "and how each is opened (see policies/console.toml); without it, the one "
        "repository of --repo/$VAULT_REPO",
    )
    s.add_argument(
        "--listen", metavar="HOST:PORT", help="default: console.toml's, else 127.0.0.1:8443"
    )
    s.add_argument(
        "--policy-dir",
        metavar="DIR",
        help="without --config: the repository's policy "
        "directory (drill.toml, keys.toml, pacs.toml; default: $VAULT_POLICY_DIR)",
    )
    s.add_argument(
        "--restore-root",
        metavar="DIR",
        help="without --config: directory restores "
        "go into new folders under DIR (default: none, restores to a PACS only)",
    )
    s.add_argument(
        "--state-dir",
        metavar="DIR",
        help="without --config: users, sign-in log and "
        f"certificate (default: {default_state_dir()})",
    )

    c = command("console", "manage the web console's user accounts", lambda a: usage("console"))
    sub = c.add_subparsers(dest="console_command", metavar="ACTION", required=True)
    u = sub.add_parser("user", parents=[common], help="add, remove, list or unlock console users")
    users = u.add_subparsers(dest="user_command", metavar="ACTION", required=True)

    def user_parser(
        name: str, help_text: str, func: Callable[[argparse.Namespace], int]
    ) -> argparse.ArgumentParser:
        p = users.add_parser(name, parents=[common], help=help_text, description=help_text)
        p.set_defaults(func=func)
        p.add_argument(
            "--config", metavar="FILE", help="console.toml (its state_dir holds the users)"
        )
        p.add_argument("--state-dir", metavar="DIR", help=f"default: {default_state_dir()}")
        return p

    a = user_parser(
        "add", "make an account; prints its one-time password and TOTP enrolment URI", cmd_user_add
    )
    a.add_argument("name")
    a.add_argument(
        "--role",
        required=True,
        choices=ROLES,
        help="viewer: status, drills, evidence, no patient data; operator: also "
        "search and restore; admin: also users, keys, policies",
    )
    a.add_argument("--no-totp", action="store_true", help="a viewer without a second factor")
    a.add_argument(
        "--break-glass",
        action="store_true",
        help="the emergency-access admin account: every sign-in with it is recorded "
        "in each repository's audit log and keeps `vault status` at WARN until "
        "acknowledged (see docs/console.md)",
    )
    r = user_parser(
        "remove", "delete an account (its sessions end at their next request)", cmd_user_remove
    )
    r.add_argument("name")
    user_parser("list", "the accounts, their roles and state", cmd_user_list)
    k = user_parser("unlock", "clear an account's lockout after failed sign-ins", cmd_user_unlock)
    k.add_argument("name")


def _state_dir(args: argparse.Namespace) -> Path:
    if opt(args, "config"):
        return load_console_policy(Path(args.config)).state_path()
    return Path(args.state_dir) if opt(args, "state_dir") else default_state_dir()


def _account_changed(args: argparse.Namespace, outcome: str, detail: str) -> None:
    """An account change in the console's log, as the console's admin pages write them, with
    the local user who ran the command as the one who made it. After the change is shown: a
    log that cannot be written must not hide a one-time password already made."""
    try:
        SignInLog(_state_dir(args)).add(f"cli:{os_user()}", "command line", outcome, detail)
    except OSError as exc:
        print(f"vault: warning: could not write the console's log: {exc.strerror}", file=sys.stderr)


def cmd_user_add(args: argparse.Namespace) -> int:
    store = UserStore(_state_dir(args))
    made = store.add(args.name, args.role, with_totp=not args.no_totp, break_glass=args.break_glass)
    _show_new_user(args, store, made)
    _account_changed(args, "USER-ADDED", f"{made.user.name} as {made.user.role}")
    return 0


def _show_new_user(args: argparse.Namespace, store: UserStore, made: NewUser) -> None:
    if opt(args, "json"):
        emit_json(
            {
                "name": made.user.name,
                "role": made.user.role,
                "one_time_password": made.one_time_password,
                "totp_uri": made.totp_uri,
                "break_glass": made.user.break_glass,
            }
        )
        return
    print(f"console user {made.user.name} ({made.user.role}) added to {store.path}")
    print(f"one-time password:  {made.one_time_password}")
    if made.totp_uri:
        print(f"TOTP enrolment URI: {made.totp_uri}")
        print("  (enter it in an authenticator app; sign-ins ask for its 6-digit code)")
    print("The password works once: the first sign-in asks for a new one. This is shown once.")


def cmd_user_remove(args: argparse.Namespace) -> int:
    UserStore(_state_dir(args)).remove(args.name)
    _account_changed(args, "USER-REMOVED", args.name)
    print(f"console user {args.name} removed")
    return 0


def cmd_user_unlock(args: argparse.Namespace) -> int:
    UserStore(_state_dir(args)).unlock(args.name)
    _account_changed(args, "USER-UNLOCKED", args.name)
    print(f"console user {args.name} unlocked")
    return 0


def cmd_user_list(args: argparse.Namespace) -> int:
    found = sorted(UserStore(_state_dir(args)).users().values(), key=lambda u: u.name)
    if opt(args, "json"):
        emit_json(
            [
                {
                    "name": u.name,
                    "role": u.role,
                    "totp": bool(u.totp_secret),
                    "break_glass": u.break_glass,
                    "locked": u.locked_until > 0,
                    "must_change_password": u.must_change,
                    "created": u.created,
                }
                for u in found
            ]
        )
        return 0
    rows = [
        [
            u.name,
            u.role,
            "TOTP" if u.totp_secret else "-",
            "locked" if u.locked_until else ("new" if u.must_change else "active"),
            "emergency access" if u.break_glass else "",
        ]
        for u in found
    ]
    print(table(["NAME", "ROLE", "2ND FACTOR", "STATE", ""], rows))
    return 0


# -- serving --------------------------------------------------------------------------------


def _policy(args: argparse.Namespace) -> tuple[ConsolePolicy, bool]:
    """(the console's settings, whether they came from a file)."""
    if opt(args, "config"):
        for flag in ("policy_dir", "restore_root", "state_dir", "repo"):
            if opt(args, flag):
                raise UsageError(
                    f"--{flag.replace('_', '-')} goes without --config (console.toml says it)"
                )
        policy = load_console_policy(Path(args.config))
        if not policy.repositories:
            raise UsageError(f"{args.config}: no [[repository]] to serve")
        return policy, True
    url = repo_url(args)
    entry = ConsoleRepository(name="main", url=url, policy_dir=opt(args, "policy_dir") or "")
    return ConsolePolicy(
        restore_root=opt(args, "restore_root") or "",
        state_dir=opt(args, "state_dir") or "",
        repositories=(entry,),
    ), False


def _opener(
    args: argparse.Namespace, from_file: bool
) -> Callable[[ConsoleRepository], tuple[Repository, Secret]]:
    known: dict[str, Secret] = {}

    def open_one(entry: ConsoleRepository) -> tuple[Repository, Secret]:
        if from_file:
            storage = CountingStorage(open_storage(entry.url))
            sources = secrets_input.SecretSources(
                entry.password_file or None, entry.password_command or None, entry.key_file or None
            )
        else:
            storage = open_storage_for(args)
            sources = secret_sources(args)
        version = ensure_exists(storage)
        secret = known.get(entry.name) or secrets_input.existing_secret(sources)
        repo = Repository.open(storage, secret, version=version)
        known[entry.name] = secret
        return repo, secret

    return open_one


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        from vault.console.served import Served
        from vault.console.server import certificate, serve
        from vault.console.web import Console
    except ImportError:
        raise UsageError(f"the console needs its web stack, an optional extra: {EXTRA}") from None
    policy, from_file = _policy(args)
    host, port = split_listen(args.listen) if opt(args, "listen") else policy.host_port()
    if not _loopback(host):
        print(
            f"vault: warning: the console listens on {host}, beyond this machine: put it "
            "behind a firewall that admits only the practice's network",
            file=sys.stderr,
        )
    state = policy.state_path()
    store = UserStore(state)
    opener = _opener(args, from_file)
    served = {}
    for entry in policy.repositories:
        one = Served(entry, opener)
        try:
            one.open()
            print(
                f"vault: opened {entry.name} ({entry.url if from_file else 'the repository'})",
                file=sys.stderr,
            )
        except UsageError:
            raise
        except Exception as exc:  # shown as FAIL in the fleet; the others are served
            print(f"vault: warning: cannot open {entry.name}: {exc}", file=sys.stderr)
        served[entry.name] = one
    cert = certificate(policy.certificate, policy.private_key, state, host)
    if cert.generated:
        print(f"vault: made a self-signed certificate in {cert.certfile}", file=sys.stderr)
    if not store.users():
        print(
            "vault: warning: no console users yet: `vault console user add NAME --role admin"
            + (f" --config {args.config}`" if from_file else "`"),
            file=sys.stderr,
        )
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    console = Console(policy, served, store, SignInLog(state), fingerprint=cert.fingerprint)
    shown = f"[{host}]" if ":" in host else host

    def ready() -> None:
        print(f"vault console listening on https://{shown}:{port}/", flush=True)
        print(f"certificate SHA-256 fingerprint {cert.fingerprint}", flush=True)

    for one in served.values():
        if one.repo is not None:
            one.warm_up()
    serve(console, host, port, cert, ready)
    return 0


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
