"""What every command pays before it starts: the libraries only some commands need are not
loaded by the command line itself (each is megabytes resident, and a restore's peak memory is
measured against restic's)."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import subprocess
import sys

import pytest

from vault.cli.main import SECTIONS, build_parser, requested_command

# Each: (module, why only some commands need it). zxcvbn's word lists are 13 MiB resident,
# tqdm 7 MiB, ssl/smtplib 6 MiB; boto3 and pydicom are larger still.
ON_DEMAND = {
    "zxcvbn": "setting a passphrase",
    "tqdm": "a progress bar on a terminal",
    "smtplib": "an alert by e-mail",
    "ssl": "an alert by e-mail, or S3",
    "urllib.request": "an alert by webhook",
    "boto3": "an S3 repository",
    "pydicom": "reading DICOM headers (backup, studies)",
    "pynetdicom": "speaking DICOM to a PACS",
}


def test_the_command_line_loads_no_library_a_command_may_not_need() -> None:
    # Every command's module, as `vault --help` loads them.
    probe = (
        "import json, sys; from vault.cli.main import build_parser; build_parser(); "
        f"print(json.dumps([m for m in {sorted(ON_DEMAND)!r} if m in sys.modules]))"
    )
    loaded = json.loads(
        subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, check=True
        ).stdout
    )
    assert loaded == [], {m: ON_DEMAND[m] for m in loaded}


def _cli_modules_after(argv: list[str]) -> set[str]:
    probe = (
        "import contextlib, io, json, sys; from vault.cli.main import main\n"
        f"with contextlib.redirect_stdout(io.StringIO()): main({argv!r})\n"
        "print(json.dumps([m for m in sys.modules if m.startswith('vault.cli.')]))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout.splitlines()[-1]))


def test_a_command_loads_only_its_own_command_module() -> None:
    modules = {module for _, module, _, _ in SECTIONS}
    loaded = _cli_modules_after(["--repo", "ls", "unlock", "--help"])  # a repo named "ls"
    assert "vault.cli.upkeep" in loaded
    # What `unlock` needs comes along; no other command's module does.
    assert not (modules - {"vault.cli.upkeep"}) & loaded, sorted(loaded & modules)
    assert modules <= _cli_modules_after(["--help"])  # the overview lists every command


@pytest.mark.parametrize("command", [n for names, *_ in SECTIONS for n in names])
def test_the_parser_of_one_command_is_the_whole_parsers(command: str) -> None:
    def help_of(parser: argparse.ArgumentParser) -> str:
        out = io.StringIO()
        with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
            parser.parse_args([command, "--help"])
        return out.getvalue()

    assert help_of(build_parser(command)) == help_of(build_parser())
    assert requested_command(["--repo", command, "--json", command, "x"]) == command
    # Help asked before the command is the overview of every command, not of one section.
    assert requested_command(["-h", command]) is None
    assert requested_command(["--json", "--help", command]) is None
