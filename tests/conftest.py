"""Shared fixtures: a cheap KDF, an in-process CLI runner, and generated sample archives."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from vault import cli

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "correct horse battery staple"


def _load_sample_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "make_sample_archive", ROOT / "scripts" / "make_sample_archive.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["make_sample_archive"] = module
    spec.loader.exec_module(module)
    return module


sample_archive = _load_sample_module()


@pytest.fixture(autouse=True)
def _cheap_kdf(monkeypatch: pytest.MonkeyPatch) -> None:
    """The one test hook: new passphrase slots use a cheap Argon2id."""
    monkeypatch.setenv("VAULT_TEST_FAST_KDF", "1")
    for name in ("VAULT_REPO", "VAULT_PASSWORD_FILE", "VAULT_PASSWORD"):
        monkeypatch.delenv(name, raising=False)


@dataclass
class Run:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        import json

        return json.loads(self.out)


RunCli = Callable[..., Run]


@pytest.fixture
def vault(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> RunCli:
    """Run `vault ARGS` in-process with the test passphrase; returns exit code and output."""

    def run(*argv: str, password: str | None = PASSWORD) -> Run:
        if password is None:
            monkeypatch.delenv("VAULT_PASSWORD", raising=False)
        else:
            monkeypatch.setenv("VAULT_PASSWORD", password)
        capsys.readouterr()
        code = cli.main([str(a) for a in argv])
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    return run


@pytest.fixture
def repo(tmp_path: Path, vault: RunCli) -> Path:
    path = tmp_path / "repo"
    result = vault("init", "--repo", path)
    assert result.code == 0, result.err
    return path


@pytest.fixture(scope="session")
def archive_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("template") / "archive"
    sample_archive.generate(root, seed=3, scale=0.3)
    return root


@pytest.fixture
def archive(tmp_path: Path, archive_template: Path) -> Path:
    """A fresh copy of a small generated dental archive (DICOM, photos, a dump file)."""
    import shutil

    target = tmp_path / "archive"
    shutil.copytree(archive_template, target, symlinks=True)
    return target
