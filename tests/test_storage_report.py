"""init reports what the storage offers and records the provider's Business Associate
Agreement acknowledgement; the evidence pack shows both (HIPAA 164.308(b), 164.312(e))."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import RunCli, fresh_s3_url
from tests.s3server import S3Server


def _pack(vault: RunCli, repo: str | Path, tmp_path: Path) -> str:
    out = tmp_path / "evidence.md"
    vault("report", "-r", repo, "--format", "md", "--out", out)
    return out.read_text()


def test_a_local_repository_reports_its_storage_and_needs_no_baa(
    tmp_path: Path, vault: RunCli
) -> None:
    made = vault("init", "-r", tmp_path / "repo")
    assert made.code == 0 and "conditional writes" in made.out and "not applicable" in made.out
    text = _pack(vault, tmp_path / "repo", tmp_path)
    assert "Storage and its provider" in text and "local directory" in text
    assert "Business Associate Agreement:** not applicable" in text


def test_an_s3_repository_records_whether_the_providers_baa_was_acknowledged(
    s3_server: S3Server, s3_env: dict[str, str], vault: RunCli, tmp_path: Path
) -> None:
    acknowledged = fresh_s3_url(s3_server)
    made = vault("init", "-r", acknowledged, "--baa-acknowledged")
    assert made.code == 0 and "agreement acknowledged" in made.out
    assert "plain http" in made.out and "loopback" in made.out  # the test server's transport
    text = _pack(vault, acknowledged, tmp_path)
    assert "Business Associate Agreement:** acknowledged at set-up" in text
    not_acknowledged = fresh_s3_url(s3_server)
    made = vault("init", "-r", not_acknowledged)  # no terminal here: nobody was asked
    assert made.code == 0 and "NOT acknowledged" in made.out
    text = _pack(vault, not_acknowledged, tmp_path)
    assert "Business Associate Agreement:** NOT acknowledged" in text
