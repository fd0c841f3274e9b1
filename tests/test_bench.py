"""scripts/bench.py at a tiny size: the comparison runs end to end and writes its report.

Speed is never asserted here (DESIGN: benchmarks report ratios, tests check behaviour); this
only proves the benchmark a user runs still works, with the real restic and borg."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(
    shutil.which("restic") is None
    or shutil.which("borg") is None
    or not Path("/usr/bin/time").exists(),
    reason="restic, borg and GNU time are installed by scripts/test.sh on Debian; not here",
)
def test_benchmark_smoke_run_writes_the_comparison(tmp_path: Path) -> None:
    out = tmp_path / "benchmarks.md"
    out.write_text(
        "# Benchmarks\n\nhand-written text\n\n<!-- bench:peers:start -->\nold\n"
        "<!-- bench:peers:end -->\n\nmore text\n"
    )
    result = subprocess.run(
        [
            sys.executable,
            "scripts/bench.py",
            "--size-gb",
            "0.02",
            "--runs",
            "1",
            "--no-s3",
            "--volume-gb",
            "0.01",
            # The runs over a shaped link, on a tiny archive and a fast link.
            "--network-size-gb",
            "0.02",
            "--round-trips-ms",
            "5",
            "--up-mbit",
            "1000",
            "--down-mbit",
            "1000",
            # One more archive shape, the quickest to generate.
            "--shapes",
            "small",
            "--shape-size-gb",
            "0.005",
            "--no-drop-caches",
            "--work",
            str(tmp_path / "work"),
            "--out",
            str(out),
            "--json",
            str(tmp_path / "r.json"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    text = out.read_text()
    assert "hand-written text" in text and "more text" in text and "\nold\n" not in text
    assert "| initial backup | MB/s |" in text and "vault vs restic" in text
    assert "| one large CBCT volume restore | MB/s |" in text
    assert "<!-- bench:network:start -->" in text and "| 5 ms | full restore | vault |" in text
    doc = json.loads((tmp_path / "r.json").read_text())
    # Peak memory is each tool's own: a bench that once held more must not show through (it
    # did: every tool reported the bench's 2.9 GB). Tools on a tiny archive stay far below.
    for name, tool in doc["local"].items():
        assert 20e6 < tool["full_restore_peak_rss_bytes"] < 400e6, (name, tool)
    assert set(doc["local"]) == {"vault", "restic", "borg"}
    # The other shape ran every tool and has its own table and goals.
    assert set(doc["shapes"]["small"]["local"]) == {"vault", "restic", "borg"}
    assert "<!-- bench:shapes:start -->" in text and "### small:" in text
    assert "| single-study restore (the largest study) | s |" in text
    # Over the link every step of both tools ran, and what crossed it was counted.
    steps = {(run["tool"], step) for run in doc["network"]["runs"] for step in run["steps"]}
    assert {tool for tool, _ in steps} == {"vault", "restic"} and len(steps) == 8
    for run in doc["network"]["runs"]:
        assert run["steps"]["initial_backup"]["bytes_up"] > 0
        assert run["steps"]["full_restore"]["bytes_down"] > 0
    for tool in doc["local"].values():
        # The header edit and the new study were deduplicated by every tool: far less than the
        # archive was added again.
        assert tool["nightly_change_repo_growth_bytes"] < doc["archive"]["bytes"] / 2
