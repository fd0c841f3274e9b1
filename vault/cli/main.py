"""The command line: parse arguments, run a job, print results, map errors to exit codes.

`main(argv) -> int` is the only place an exception becomes an exit code (vault.errors). JSON
goes to stdout as one document; messages, warnings and progress go to stderr.

Each command's parser lives with its implementation, and a run imports only the module of the
command it runs: importing every command module cost each run about 0.1 s and 4 MiB before it
did any work (`vault --help` and a mistyped command still build the whole parser).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import importlib
import os
import resource
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import NoReturn

from vault import __version__
from vault.cli.support import ENVIRONMENT, EXIT_CODES, common_options, opt, sigterm_interrupts
from vault.errors import VaultError

Adder = Callable[..., None]

# In `vault --help` order: the commands each adder defines, its module and function, and
# whether it takes the common options (for sub-actions of its own) besides `command`.
SECTIONS: tuple[tuple[tuple[str, ...], str, str, bool], ...] = (
    (("init",), "vault.cli.init", "add_init_parser", False),
    (("object-lock",), "vault.cli.upkeep", "add_object_lock_parser", True),
    (("backup", "snapshots", "tag", "ls"), "vault.cli.snapshots", "add_snapshot_parsers", False),
    (("restore",), "vault.cli.restore", "add_restore_parser", False),
    (("studies", "export", "audit"), "vault.cli.studies", "add_study_parsers", False),
    (("drill",), "vault.cli.drill", "add_drill_parsers", True),
    (("forget", "prune"), "vault.cli.maintenance", "add_maintenance_parsers", False),
    (("status", "report"), "vault.cli.status", "add_status_parsers", False),
    (("schedule",), "vault.cli.schedule", "add_schedule_parsers", True),
    (("repair",), "vault.cli.repair", "add_repair_parsers", True),
    (("pacs",), "vault.cli.pacs", "add_pacs_parsers", True),
    (("check", "unlock"), "vault.cli.upkeep", "add_check_parsers", False),
    (("key",), "vault.cli.keys", "add_key_parsers", True),
    (("copy",), "vault.cli.replicas", "add_replica_parsers", False),
    (("serve", "console"), "vault.cli.console", "add_console_parsers", True),
)


class _NotACommand(Exception):
    pass


class _Peek(argparse.ArgumentParser):
    """Finds the command's name without printing anything: on any doubt the whole parser
    parses, and says what is wrong the way it always has."""

    def error(self, message: str) -> NoReturn:
        raise _NotACommand(message)


def requested_command(argv: Sequence[str]) -> str | None:
    peek = _Peek(add_help=False, parents=[common_options()])
    peek.add_argument("-h", "--help", action="store_true")  # before the command: the overview
    peek.add_argument("command", nargs="?")
    peek.add_argument("rest", nargs=argparse.REMAINDER)
    try:
        args, _ = peek.parse_known_args(list(argv))
    except _NotACommand:
        return None
    command = args.command
    return command if isinstance(command, str) and not args.help else None


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or with `only` of the section defining that one."""
    common = common_options()
    parser = argparse.ArgumentParser(
        prog="vault",
        parents=[common],
        description="Encrypted, deduplicating backups of dental imaging archives.",
        epilog=ENVIRONMENT + "\n\n" + EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"vault {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, help_text: str, func: Callable[..., int]) -> argparse.ArgumentParser:
        p = sub.add_parser(
            name,
            parents=[common],
            help=help_text,
            description=help_text,
            epilog=EXIT_CODES,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.set_defaults(func=func)
        return p

    for names, module, adder, takes_common in SECTIONS:
        if only is not None and only not in names:
            continue
        add: Adder = getattr(importlib.import_module(module), adder)
        if takes_common:
            add(common, command)
        else:
            add(command)
    return parser


# -- entry points -------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    given = sys.argv[1:] if argv is None else list(argv)
    command = requested_command(given)
    known = any(command in names for names, *_ in SECTIONS)
    parser = build_parser(command if known else None)
    try:
        args = parser.parse_args(given)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return int(exc.code or 0)
    debug = bool(opt(args, "debug"))
    try:
        with sigterm_interrupts():
            return int(args.func(args))
    except VaultError as exc:
        if debug:
            traceback.print_exc()
        print(f"vault: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("vault: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `vault ls … | head`: the reader left; not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:
        if debug:
            traceback.print_exc()
        where = f"{os.fsdecode(exc.filename)}: " if exc.filename else ""
        print(f"vault: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        if debug:
            traceback.print_exc()
        print(
            f"vault: internal error: {exc.__class__.__name__} (run with --debug for details)",
            file=sys.stderr,
        )
        return 1


_M_ARENA_MAX = -8  # glibc mallopt parameter


def _one_malloc_arena() -> None:
    """glibc gives every thread its own heap arena; with the backup's compression, upload and
    walk threads each keeping freed pages, peak memory grew by ~25 MiB (docs/benchmarks.md).
    One arena costs no measurable speed here: the threads spend their time in zstd and I/O."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).mallopt(_M_ARENA_MAX, 1)


_PR_SET_DUMPABLE = 4


def no_core_dumps() -> None:
    """A crash must never write keys to disk: no core file (RLIMIT_CORE 0), and on Linux not
    dumpable at all (no core through a pipe handler, no ptrace by other processes of the same
    user, /proc/<pid>/mem closed to them)."""
    with contextlib.suppress(OSError, ValueError):
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)


def main_entry() -> None:
    no_core_dumps()
    _one_malloc_arena()
    sys.exit(main())
