#!/usr/bin/env python3
"""Make the golden repository under tests/data/golden-v1 with today's format (version 1).

Two snapshots of the fixed inputs in tests/golden.py (the second corrects a patient name, adds
a study and removes a file), a catalog in each, a data-key rotation between them (so the two
snapshots are sealed under different epochs), audit events (a study search and a study
restore) and a drill record. A cheap KDF (the test hook) keeps opening it fast.

Run it only when a new format version is introduced, and then into a new directory
(tests/data/golden-vN): the existing golden repositories are what later code must keep reading,
so they are never regenerated. tests/test_golden.py opens every one of them.

    .venv/bin/python scripts/make_golden_repo.py [--out DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.golden import (  # noqa: E402
    GOLDEN_REPO,
    PASSPHRASE,
    PATIENT_ID,
    SNAPSHOT_TIMES,
    STUDY_UID,
    write_inputs,
)
from vault.cli.main import main as vault  # noqa: E402

# A fixed source path, so the snapshots name the same paths whoever made them.
SOURCE = Path("/tmp/vault-golden-inputs/archive")


def run(*argv: str | Path) -> None:
    code = vault([str(a) for a in argv])
    if code != 0:
        raise SystemExit(f"vault {' '.join(map(str, argv))} exited {code}")


def make(out: Path) -> None:
    if out.exists():
        raise SystemExit(f"{out} exists; golden repositories are never regenerated in place")
    os.environ.update(
        VAULT_TEST_FAST_KDF="1",
        VAULT_TEST_SUITE="1",
        VAULT_PASSWORD=PASSPHRASE,
        VAULT_REPO=str(out),
    )
    shutil.rmtree(SOURCE.parent, ignore_errors=True)
    with tempfile.TemporaryDirectory() as scratch:
        # The drill's local copy stays in the scratch directory, and its RPO target is wide
        # enough for snapshots with fixed times in the past (so the record says PASS).
        os.environ["XDG_DATA_HOME"] = scratch
        policies = Path(scratch) / "policies"
        policies.mkdir()
        (policies / "drill.toml").write_text("[drill]\nrpo_hours = 1000000\n")
        run("init")
        write_inputs(SOURCE, 1)
        run("backup", SOURCE, "--time", SNAPSHOT_TIMES[0], "--tag", "golden")
        run("key", "rotate")
        shutil.rmtree(SOURCE)
        write_inputs(SOURCE, 2)
        run("backup", SOURCE, "--time", SNAPSHOT_TIMES[1], "--tag", "golden")
        run("studies", "--patient", PATIENT_ID)
        run("restore", "latest", "--study", STUDY_UID, "--target", Path(scratch) / "study")
        run(
            "drill", "--sample", "1", "--seed", "1", "--operator", "Golden fixture",
            "--policy-dir", policies,
        )
    shutil.rmtree(SOURCE.parent)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"golden repository in {out}: {size / 1024:.0f} KiB", file=sys.stderr)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=GOLDEN_REPO)
    make(parser.parse_args().out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
