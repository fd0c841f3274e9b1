"""Plumbing shared by the command-line modules: common options, opening the repository,
progress, time formats. No command lives here."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from vault.cli import secrets_input
from vault.cli.output import TqdmProgress
from vault.errors import UsageError, VaultError
from vault.progress import NoProgress, Progress
from vault.repo import audit, break_glass
from vault.repo.keys import RECOVERY, Secret
from vault.repo.location import ensure_exists
from vault.repo.repository import Repository
from vault.storage import CountingStorage, open_storage

ENVIRONMENT = """environment:
  VAULT_REPO           the repository, when --repo is not given
  VAULT_PASSWORD_FILE  file whose first line is the passphrase
  VAULT_PASSWORD       the passphrase itself (prefer a file or --password-command)"""

EXIT_CODES = """exit codes:
  0  success                     10  repository does not exist
  1  failure (check/restore)     11  repository is locked
  2  usage or configuration      12  wrong passphrase or key
  3  backup saved, but some source files could not be read
130  interrupted (SIGINT or SIGTERM); what was uploaded is kept for the next run"""


def common_options() -> argparse.ArgumentParser:
    """Options accepted before or after the command (SUPPRESS keeps either from clobbering)."""
    p = argparse.ArgumentParser(add_help=False)
    s = argparse.SUPPRESS
    p.add_argument(
        "-r",
        "--repo",
        default=s,
        help="repository: a directory, file://PATH or s3://BUCKET/PREFIX (default: $VAULT_REPO)",
    )
    p.add_argument(
        "--password-file",
        default=s,
        metavar="FILE",
        help="read the passphrase from the first line of FILE",
    )
    p.add_argument(
        "--password-command",
        default=s,
        metavar="CMD",
        help="run CMD and use the first line it prints as the passphrase",
    )
    p.add_argument("--key-file", default=s, metavar="FILE", help="open with a key file")
    p.add_argument(
        "--two-factor",
        action="store_true",
        default=s,
        help="open a two-factor slot: --key-file and a passphrase (file, command or prompt)",
    )
    p.add_argument("--json", action="store_true", default=s, help="print one JSON document")
    p.add_argument("-q", "--quiet", action="store_true", default=s, help="no progress bars")
    p.add_argument("--debug", action="store_true", default=s, help="show tracebacks")
    p.add_argument(
        "--allow-insecure-http",
        action="store_true",
        default=s,
        help="allow a plain-http S3 endpoint that is not on loopback (not for patient data)",
    )
    return p


def percent_arg(text: str) -> float:
    try:
        value = float(text.rstrip("%"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a percentage") from None
    if not 0 < value <= 100:
        raise argparse.ArgumentTypeError("the percentage must be in (0, 100]")
    return value


def usage(what: str) -> int:
    raise UsageError(f"`vault {what}` needs an action; see `vault {what} --help`")


def opt(args: argparse.Namespace, name: str, default: Any = None) -> Any:
    return getattr(args, name, default)


def repo_url(args: argparse.Namespace) -> str:
    url = opt(args, "repo") or os.environ.get("VAULT_REPO")
    if not url:
        raise UsageError("no repository given: pass --repo or set VAULT_REPO")
    return str(url)


def secret_sources(args: argparse.Namespace) -> secrets_input.SecretSources:
    return secrets_input.SecretSources(
        opt(args, "password_file"),
        opt(args, "password_command"),
        opt(args, "key_file"),
        bool(opt(args, "two_factor")),
    )


def open_storage_for(args: argparse.Namespace) -> CountingStorage:
    url = repo_url(args)
    return CountingStorage(
        open_storage(url, allow_insecure_http=bool(opt(args, "allow_insecure_http")))
    )


def request_stats(repo: Repository) -> dict[str, Any]:
    storage = repo.storage
    return storage.stats() if isinstance(storage, CountingStorage) else {}


def open_repo(args: argparse.Namespace) -> Repository:
    return open_with_secret(args)[0]


def open_with_secret(args: argparse.Namespace) -> tuple[Repository, Secret]:
    storage = open_storage_for(args)
    # Fail on a missing repository before asking for a passphrase nobody can use.
    version = ensure_exists(storage)
    secret = secrets_input.existing_secret(secret_sources(args))
    repo = Repository.open(storage, secret, version=version)
    if repo.slot_kind == RECOVERY:
        record_break_glass(repo, str(opt(args, "command", "") or ""))
    return repo, secret


def record_break_glass(repo: Repository, command: str) -> None:
    """An open with the recovery key is break-glass: an audit event, and a pending entry that
    keeps `status` at WARN until someone acknowledges it (`vault audit acknowledge SEQ`)."""
    print(
        "vault: warning: opened with the RECOVERY KEY (break-glass): this is recorded in the "
        "audit log and `vault status` warns until it is acknowledged",
        file=sys.stderr,
    )
    try:
        break_glass.record(repo, "break-glass-open", {"command": command})
    except VaultError as exc:
        print(f"vault: warning: could not record the break-glass open: {exc}", file=sys.stderr)


def progress_for(args: argparse.Namespace) -> Progress:
    if opt(args, "json") or opt(args, "quiet") or not sys.stderr.isatty():
        return NoProgress()
    return TqdmProgress()


def iso_utc(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def local_time(t: datetime) -> str:
    return t.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def record_audit(repo: Repository, action: str, **fields: Any) -> None:
    """Append an audit event; a failure to log is reported but does not undo the work."""
    try:
        audit.record(repo, action, **fields)
    except VaultError as exc:
        print(f"vault: warning: could not record the audit event: {exc}", file=sys.stderr)


def audit_forget(repo: Repository) -> Callable[[list[str]], None]:
    """What `forget` and `repair snapshots --forget` announce before deleting: the ids, not
    just the count, so `check` tells a snapshot forgotten by vault from one deleted behind its
    back (snapshot ids are random, never patient data)."""
    return lambda snapshot_ids: record_audit(
        repo,
        "forget",
        result="PASS",
        details={"removed": len(snapshot_ids), "snapshots": snapshot_ids},
    )


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """SIGTERM (systemd stopping the service, the scheduler stopping a job) unwinds like Ctrl-C,
    so locks are released and exit code 130 is returned instead of dying mid-statement."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def sigterm_sets(stop: threading.Event) -> Iterator[None]:
    """Within: SIGTERM only sets `stop`, for a job that ends itself at a safe point."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
