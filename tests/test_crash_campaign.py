"""The crash campaign, shortened: one random SIGKILL per job on a local repository, each
followed by check --read-data, a byte-identical restore of the first snapshot and a re-run.
(`scripts/crash_campaign.py` runs 50 per job on local and S3 repositories.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_shortened_crash_campaign_survives_every_kill(tmp_path: Path) -> None:
    out = tmp_path / "reliability.md"
    out.write_text("# Reliability\n\nkept\n\n<!-- crash:start -->\n<!-- crash:end -->\n")
    result = subprocess.run(
        [
            sys.executable,
            "scripts/crash_campaign.py",
            "--iterations",
            "1",
            "--backends",
            "local",
            "--seed",
            "7",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    text = out.read_text()
    assert "kept" in text
    for job in ("backup", "prune", "reencrypt", "restore"):
        row = next(line for line in text.splitlines() if line.startswith(f"| local | {job} |"))
        assert "| 1 of 1 |" in row, row
