"""Where passphrases come from: flags, environment, a command, or the terminal.

Order for opening a repository: --key-file, --password-command, --password-file,
VAULT_PASSWORD_FILE, VAULT_PASSWORD, then an interactive prompt when stdin is a terminal.
Secrets are never echoed, logged or put into error messages. Password and key files must be
private to their owner (no group or other permission bits), as ssh insists for private keys.
"""

from __future__ import annotations

import getpass
import os
import shlex
import socket
import stat
import subprocess
import sys
from dataclasses import dataclass

from vault.errors import UsageError
from vault.policy.passphrase import weakness
from vault.repo.keys import KEYFILE, Secret, in_test_suite, parse_key_file


@dataclass(frozen=True)
class SecretSources:
    password_file: str | None = None
    password_command: str | None = None
    key_file: str | None = None
    two_factor: bool = False  # open a two-factor slot: the key file and a passphrase


def read_secret_file(path: str, what: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            mode = os.fstat(handle.fileno()).st_mode
            # Like ssh with private keys: a secret others can read is not a secret any more.
            if stat.S_ISREG(mode) and mode & 0o077:
                raise UsageError(
                    f"{what} {path} is accessible to group or others (mode "
                    f"{stat.S_IMODE(mode):04o}); run `chmod 600 {path}`"
                )
            text = handle.read()
    except OSError as exc:
        raise UsageError(f"cannot read {what} {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{what} {path} is not UTF-8 text") from None
    return text


def _first_line(text: str) -> str:
    return text.splitlines()[0] if text.strip() else ""


def _run_command(command: str) -> str:
    try:
        done = subprocess.run(shlex.split(command), capture_output=True, text=True, check=False)
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot run the password command: {exc.__class__.__name__}") from None
    if done.returncode != 0:
        raise UsageError(f"the password command exited with status {done.returncode}")
    return _first_line(done.stdout)


def _nonempty(text: str, where: str) -> str:
    if not text:
        raise UsageError(f"the passphrase from {where} is empty")
    return text


def existing_secret(sources: SecretSources) -> Secret:
    if sources.two_factor:
        if not sources.key_file:
            raise UsageError("--two-factor needs --key-file FILE (and a passphrase)")
        key_file = parse_key_file(
            read_secret_file(sources.key_file, "key file"), name=sources.key_file
        )
        text = lookup_passphrase(sources)
        if text is None:
            text = prompt("Passphrase (with the key file): ")
        return Secret.two_factor(text, key_file)
    if sources.key_file:
        return Secret(
            KEYFILE,
            parse_key_file(read_secret_file(sources.key_file, "key file"), name=sources.key_file),
        )
    text = lookup_passphrase(sources)
    if text is None:
        text = prompt("Passphrase for the repository: ")
    return Secret.from_passphrase(text)


def lookup_passphrase(sources: SecretSources) -> str | None:
    if sources.password_command:
        return _nonempty(_run_command(sources.password_command), "the password command")
    if sources.password_file:
        return _nonempty(
            _first_line(read_secret_file(sources.password_file, "password file")),
            sources.password_file,
        )
    env_file = os.environ.get("VAULT_PASSWORD_FILE")
    if env_file:
        return _nonempty(_first_line(read_secret_file(env_file, "password file")), env_file)
    env = os.environ.get("VAULT_PASSWORD")
    if env is not None:
        return _nonempty(env, "VAULT_PASSWORD")
    return None


def prompt(label: str) -> str:
    if not sys.stdin.isatty():
        raise UsageError(
            "no passphrase given: set VAULT_PASSWORD_FILE or VAULT_PASSWORD, or pass "
            "--password-file or --password-command"
        )
    text = getpass.getpass(label)
    if not text:
        raise UsageError("an empty passphrase is not allowed")
    return text


WEAK_PASSPHRASE_ENV = "VAULT_TEST_WEAK_PASSPHRASE"  # the test suite's override, nowhere else


def new_passphrase(
    path: str | None, sources: SecretSources | None = None, context: tuple[str, ...] = ()
) -> str:
    """A passphrase for a new slot: from `path`, else the configured sources, else typed twice;
    refused when an offline guesser would find it too soon (vault.policy.passphrase)."""
    chosen = _new_passphrase(path, sources)
    problem = weakness(chosen, (socket.gethostname(), "vault", "backup", "dental", *context))
    if problem and not (os.environ.get(WEAK_PASSPHRASE_ENV) == "1" and in_test_suite()):
        raise UsageError(problem)
    return chosen


def _new_passphrase(path: str | None, sources: SecretSources | None) -> str:
    if path:
        return _nonempty(_first_line(read_secret_file(path, "password file")), path)
    if sources is not None:
        found = lookup_passphrase(sources)
        if found is not None:
            return found
    first = prompt("New passphrase: ")
    if prompt("Repeat the new passphrase: ") != first:
        raise UsageError("the two passphrases differ")
    return first
