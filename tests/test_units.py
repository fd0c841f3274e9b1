"""The shipped systemd units run commands vault accepts, and systemd accepts the units."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from vault.cli.main import build_parser

UNITS = Path(__file__).resolve().parent.parent / "scripts" / "systemd"


def _exec_start(unit: Path) -> list[str]:
    lines = [ln for ln in unit.read_text().splitlines() if ln.startswith("ExecStart=")]
    assert len(lines) == 1, unit
    return shlex.split(lines[0].removeprefix("ExecStart="))


@pytest.mark.parametrize("unit", sorted(UNITS.glob("*.service")), ids=lambda p: p.name)
def test_service_runs_a_valid_vault_command(unit: Path) -> None:
    argv = [a.replace("%i", "backup") for a in _exec_start(unit)]
    assert argv[0].endswith("/vault")
    args = build_parser().parse_args(argv[1:])
    assert args.func.__name__ == "cmd_schedule_run"


def test_every_timer_starts_a_job_vault_knows() -> None:
    from vault.ops.jobrunner import JOBS

    timers = sorted(UNITS.glob("*.timer"))
    assert len(timers) >= 5
    for timer in timers:
        unit = next(ln for ln in timer.read_text().splitlines() if ln.startswith("Unit="))
        job = unit.removeprefix("Unit=vault-job@").removesuffix(".service")
        assert job in JOBS, timer.name
        assert "Persistent=true" in timer.read_text()  # a run missed while off starts at boot


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_accepts_the_units() -> None:
    units = [str(p) for p in sorted(UNITS.iterdir())]
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *units], capture_output=True, text=True
    )
    # The one complaint expected on a test machine: vault is not installed at /usr/local/bin.
    complaints = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if line.strip() and "/usr/local/bin/vault is not executable" not in line
    ]
    assert complaints == []
