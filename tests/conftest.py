"""Shared fixtures: a cheap KDF, an in-process CLI runner, and generated sample archives."""

from __future__ import annotations

import importlib.util
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.faultproxy import FaultProxy
from tests.repos import RepoHandle
from tests.s3server import S3Server, start_server
from tests.waiting import Changes, DirectoryChanges
from vault.cli.main import main
from vault.storage import LocalStorage, open_storage

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
def _cheap_kdf(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """The one test hook: new passphrase slots use a cheap Argon2id. Each test also gets its
    own local record of the repositories it has seen (vault.repo.seen)."""
    monkeypatch.setenv("VAULT_TEST_FAST_KDF", "1")
    monkeypatch.setenv("VAULT_STATE_DIR", str(tmp_path_factory.mktemp("vault-state")))
    for name in (
        "VAULT_REPO",
        "VAULT_PASSWORD_FILE",
        "VAULT_PASSWORD",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_S3",
        "AWS_PROFILE",
    ):
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
        code = main([str(a) for a in argv])
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    return run


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """One SeaweedFS server per test run, on loopback, stopped by process group."""
    server = start_server(tmp_path_factory.mktemp("seaweedfs"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Point boto3 (in this process and in subprocesses) at the test server."""
    env = s3_server.env()
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


SHARED_BUCKET = "vault-tests"


def new_bucket(server: S3Server, *, object_lock: bool = False) -> str:
    """A new bucket. SeaweedFS gives every bucket its own volumes, so tests share one bucket
    under fresh prefixes (`fresh_s3_url`) and make buckets only where the bucket itself matters."""
    name = f"vault-test-{uuid.uuid4().hex[:16]}"
    server.client().create_bucket(Bucket=name, ObjectLockEnabledForBucket=object_lock)
    return name


def fresh_s3_url(server: S3Server) -> str:
    client = server.client()
    try:
        client.head_bucket(Bucket=SHARED_BUCKET)
    except Exception:
        client.create_bucket(Bucket=SHARED_BUCKET)
    return f"s3://{SHARED_BUCKET}/{uuid.uuid4().hex[:16]}"


@pytest.fixture
def empty_repo(request: pytest.FixtureRequest, tmp_path: Path) -> RepoHandle:
    """A repository location, not yet initialized: local by default; modules parametrize
    `repo`/`empty_repo` indirectly with "s3" to run the same test against the S3 server."""
    backend = getattr(request, "param", "local")
    if backend == "local":
        path = tmp_path / "repo"
        return RepoHandle(str(path), LocalStorage(path), "local", path=path)
    server: S3Server = request.getfixturevalue("s3_server")
    env = request.getfixturevalue("s3_env")
    url = fresh_s3_url(server)
    return RepoHandle(url, open_storage(url), "s3", env=env)


@pytest.fixture
def repo(empty_repo: RepoHandle, vault: RunCli) -> RepoHandle:
    """An initialized repository (local unless the module parametrizes it with "s3")."""
    result = vault("init", "--repo", empty_repo.url)
    assert result.code == 0, result.err
    return empty_repo


@pytest.fixture
def repo_changes(
    repo: RepoHandle, request: pytest.FixtureRequest
) -> Iterator[tuple[Changes, dict[str, str]]]:
    """Something to wait on while a vault subprocess writes to `repo`, and the environment
    that subprocess needs: inotify for a local repository, the fault proxy's request feed
    (the subprocess talks through it) for S3."""
    if repo.path is not None:
        watcher = DirectoryChanges(repo.path)
        try:
            yield watcher, {}
        finally:
            watcher.close()
        return
    server: S3Server = request.getfixturevalue("s3_server")
    host, port = server.endpoint.removeprefix("http://").split(":")
    proxy = FaultProxy(host, int(port))
    try:
        yield proxy.changes, {"AWS_ENDPOINT_URL_S3": proxy.endpoint}
    finally:
        proxy.close()


BOTH_BACKENDS = pytest.mark.parametrize("empty_repo", ["local", "s3"], indirect=True)


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


@pytest.fixture
def proxy(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultProxy]:
    """A fault proxy in front of the server; boto3 talks to the proxy, with few retries so
    failures arrive in seconds."""
    host, port = s3_server.endpoint.removeprefix("http://").split(":")
    fault_proxy = FaultProxy(host, int(port))
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", fault_proxy.endpoint)
    monkeypatch.setenv("VAULT_S3_MAX_ATTEMPTS", "4")
    try:
        yield fault_proxy
    finally:
        fault_proxy.close()
