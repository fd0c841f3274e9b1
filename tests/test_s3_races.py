"""Objects that vanish between a LIST and the GET that follows: deleted for real, on the server,
by the proxy's "before" hook at the moment the GET arrives. A reader without a lock meets this
when another client forgets a snapshot; a locked job only when something outside vault deleted
the object — then it fails naming it, and the repair or the next run completes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.conftest import RunCli, fresh_s3_url
from tests.faultproxy import Fault, FaultProxy
from tests.s3server import S3Server
from tests.treecompare import describe_tree


def _deleter(server: S3Server, deleted: list[str]) -> Callable[[str], None]:
    """Deletes the object a proxied request names (path style: /bucket/key?query)."""
    client = server.client()

    def delete(path: str) -> None:
        bucket, key = path.split("?", 1)[0].lstrip("/").split("/", 1)
        client.delete_object(Bucket=bucket, Key=key)
        deleted.append(key)

    return delete


def _two_snapshots(vault: RunCli, url: str, archive: Path) -> list[str]:
    assert vault("init", "-r", url).code == 0
    assert vault("backup", "-r", url, archive, "--tag", "first").code == 0
    assert vault("backup", "-r", url, archive, "--tag", "second").code == 0
    return [s["id"] for s in vault("snapshots", "-r", url, "--json").json()]


def test_a_snapshot_forgotten_while_listing_is_left_out_not_an_error(
    proxy: FaultProxy, s3_server: S3Server, vault: RunCli, archive: Path
) -> None:
    url = fresh_s3_url(s3_server)
    first, second = _two_snapshots(vault, url, archive)
    deleted: list[str] = []
    proxy.inject(
        Fault("before", before=_deleter(s3_server, deleted)),
        method="GET",
        path_contains=f"snapshots/{first}",
    )
    listed = vault("snapshots", "-r", url, "--json")
    assert listed.code == 0, listed.err
    assert deleted and deleted[0].endswith(first)
    assert [s["id"] for s in listed.json()] == [second]


def test_an_index_object_deleted_under_a_restore_is_named_and_repair_brings_it_back(
    proxy: FaultProxy, s3_server: S3Server, vault: RunCli, archive: Path, tmp_path: Path
) -> None:
    url = fresh_s3_url(s3_server)
    _two_snapshots(vault, url, archive)
    deleted: list[str] = []
    proxy.inject(
        Fault("before", before=_deleter(s3_server, deleted)), method="GET", path_contains="index/"
    )
    failed = vault("restore", "latest", "-r", url, "--target", tmp_path / "lost")
    assert failed.code == 1
    assert len(deleted) == 1 and deleted[0].rsplit("/", 2)[-2:] == ["index", deleted[0][-64:]]
    assert deleted[0][-64:] in failed.err and "does not exist" in failed.err
    assert "Traceback" not in failed.err and len(failed.err.strip().splitlines()) == 1

    # Check names the damage and points at the repair; the repair rebuilds the index from the
    # packs' trailers; then everything restores byte for byte.
    checked = vault("check", "-r", url)
    assert checked.code == 1 and "vault repair index" in checked.out
    assert vault("repair", "index", "-r", url).code == 0
    assert vault("check", "-r", url, "--read-data").code == 0
    target = tmp_path / "out"
    restored = vault("restore", "latest", "-r", url, "--target", target, "--verify")
    assert restored.code == 0, restored.err
    assert describe_tree(target / archive.relative_to("/")) == describe_tree(archive)


def test_a_backup_meeting_a_vanished_index_fails_cleanly_and_the_next_run_completes(
    proxy: FaultProxy, s3_server: S3Server, vault: RunCli, archive: Path, tmp_path: Path
) -> None:
    url = fresh_s3_url(s3_server)
    before = _two_snapshots(vault, url, archive)
    deleted: list[str] = []
    proxy.inject(
        Fault("before", before=_deleter(s3_server, deleted)), method="GET", path_contains="index/"
    )
    failed = vault("backup", "-r", url, archive)
    assert failed.code == 1 and len(deleted) == 1
    assert deleted[0][-64:] in failed.err and "Traceback" not in failed.err
    assert [s["id"] for s in vault("snapshots", "-r", url, "--json").json()] == before
    # The parent's trees are unreachable now: the next backup reads every file again instead
    # of failing, and its snapshot is complete on its own.
    backed = vault("backup", "-r", url, archive, "--json")
    assert backed.code == 0, backed.err
    assert backed.json()["stats"]["files_unchanged"] == 0
    target = tmp_path / "out"
    restored = vault("restore", "latest", "-r", url, "--target", target, "--verify")
    assert restored.code == 0, restored.err
    assert describe_tree(target / archive.relative_to("/")) == describe_tree(archive)
