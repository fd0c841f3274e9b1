"""The fault campaign, shortened: one run of two S3 fault classes and one damaged copy per
object kind and damage. (`scripts/fault_campaign.py` runs 20 per class and 10 per cell.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_shortened_fault_campaign_finds_everything_and_survives_every_fault(
    tmp_path: Path,
) -> None:
    out = tmp_path / "reliability.md"
    out.write_text("# Reliability\n\nkept\n\n<!-- faults:start -->\nold\n<!-- faults:end -->\n")
    result = subprocess.run(
        [
            sys.executable,
            "scripts/fault_campaign.py",
            "--iterations",
            "1",
            "--corruptions",
            "1",
            "--classes",
            "wrong Content-Length,mid-body",
            "--seed",
            "5",
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
    assert "kept" in text and "old" not in text
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    faults = {r.split(" | ")[0][2:]: r for r in rows if "Content-Length" in r or "mid-body" in r}
    assert set(faults) == {"wrong Content-Length", "connection reset mid-body"}
    assert all(r.endswith("| 0 |") for r in faults.values())  # nothing wrong, all recovered
    matrix = [r for r in rows if r.startswith(("| data-pack", "| snapshot", "| key-slot"))]
    assert len(matrix) == 3 and all("MISSED" not in r for r in matrix)
    assert "0 missed" in text
