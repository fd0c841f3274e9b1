"""Old repositories stay readable: every golden repository under tests/data/ (made once, by
scripts/make_golden_repo.py, with the format version of its day) is opened by today's code, and
every snapshot restores byte for byte to the fixed inputs of tests/golden.py.

A failure here means a change broke the reading of repositories that practices already hold:
fix the code, never the golden repository (docs/format.md, "Compatibility")."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import RunCli
from tests.golden import PASSPHRASE, PATIENT_ID, SECOND_STUDY_UID, STUDY_UID, write_inputs
from tests.treecompare import describe_tree

GOLDEN = sorted((Path(__file__).parent / "data").glob("golden-v*"))


def test_a_golden_repository_is_committed() -> None:
    assert GOLDEN, "tests/data/golden-v1 is missing"


@pytest.fixture(params=GOLDEN, ids=[p.name for p in GOLDEN])
def golden(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """A copy of one golden repository: opening it writes locks and usage records, and the
    committed one must never change."""
    repo = tmp_path / "repo"
    shutil.copytree(request.param, repo)
    return repo


def test_every_snapshot_of_a_golden_repository_restores_byte_identical(
    vault: RunCli, golden: Path, tmp_path: Path
) -> None:
    listed = vault("--repo", golden, "snapshots", "--json", password=PASSPHRASE)
    assert listed.code == 0, listed.err
    snapshots = sorted(listed.json(), key=lambda s: s["time"])
    assert len(snapshots) == 2
    for version, snapshot in enumerate(snapshots, start=1):
        target = tmp_path / f"restored-{version}"
        restored = vault(
            "--repo", golden, "restore", snapshot["id"], "--target", target, "--verify",
            password=PASSPHRASE,
        )
        assert restored.code == 0, restored.err
        expected = tmp_path / f"expected-{version}"
        write_inputs(expected, version)
        (source,) = snapshot["paths"]
        got = describe_tree(os.fsencode(target) + os.fsencode(source))
        assert got == describe_tree(expected), f"snapshot {version} differs from its inputs"


def test_a_golden_repository_passes_check_read_data_and_its_chains_verify(
    vault: RunCli, golden: Path
) -> None:
    checked = vault("--repo", golden, "check", "--read-data", password=PASSPHRASE)
    assert checked.code == 0, checked.out + checked.err
    audit = vault("--repo", golden, "audit", "--verify", "--json", password=PASSPHRASE)
    assert audit.code == 0, audit.err
    actions = [e["action"] for e in audit.json()["events"]]
    assert actions[:5] == ["backup", "backup", "studies-search", "restore", "drill"]
    drills = vault("--repo", golden, "drill", "history", "--verify", password=PASSPHRASE)
    assert drills.code == 0, drills.err
    assert "chain intact: 1 record(s)" in drills.out


def test_a_golden_repository_keeps_its_catalogs_and_key_epochs(
    vault: RunCli, golden: Path
) -> None:
    found = vault(
        "--repo", golden, "studies", "--patient", PATIENT_ID, "--json", password=PASSPHRASE
    )
    assert found.code == 0, found.err
    studies = {s["study_instance_uid"]: s for s in found.json()}
    assert set(studies) == {STUDY_UID, SECOND_STUDY_UID}
    assert len(studies[STUDY_UID]["snapshots"]) == 2  # in both snapshots' catalogs
    assert studies[STUDY_UID]["files"] == 4
    keys = vault("--repo", golden, "key", "list", "--json", password=PASSPHRASE)
    assert keys.code == 0, keys.err
    epochs = keys.json()["epochs"]
    assert [e["id"] for e in epochs] == [1, 2]
    assert all(e["packs"] > 0 for e in epochs), "each snapshot is sealed under its own epoch"
