"""On a remote repository each request is a round trip (25-80 ms from a practice to a cloud
region): reads that do not depend on each other go out together, not one after another.

Each test holds the first request of a kind at the fault proxy until a second of the same
kind arrives. Code that waits for each answer before asking again never sends the second while
the first is held, and the hold ends only at its timeout: the test fails.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import RunCli, fresh_s3_url
from tests.faultproxy import Fault, FaultProxy
from tests.s3server import S3Server
from tests.waiting import wait_until

HOLD = 30.0  # seconds: far longer than any of these commands takes when the reads overlap


@contextmanager
def held_until(
    proxy: FaultProxy, hold: str, then: str, *, after: int = 0
) -> Iterator[threading.Event]:
    """Hold the first GET whose path holds `hold` (after letting `after` such GETs pass) until
    another GET whose path holds `then` arrives; the event is set if one arrived meanwhile."""
    start = len(proxy.arrived)
    overlapped = threading.Event()
    proxy.inject(
        Fault("delay", seconds=HOLD), times=1, method="GET", path_contains=hold, after=after
    )

    def arrived(part: str) -> int:
        return sum(1 for m, p in proxy.arrived[start:] if m == "GET" and part in p)

    # The held one is the (after + 1)th `hold`; another `then` must come after it.
    needed = after + 2 if hold == then else 1

    def watch() -> None:
        if wait_until(
            lambda: arrived(hold) > after and arrived(then) >= needed, proxy.changes, timeout=HOLD
        ):
            overlapped.set()
        proxy.release()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield overlapped
    finally:
        proxy.release()
        watcher.join()


def _repo_and_source(s3_server: S3Server, vault: RunCli, tmp_path: Path) -> tuple[str, Path]:
    url = fresh_s3_url(s3_server)
    assert vault("init", "-r", url).code == 0
    source = tmp_path / "s"
    source.mkdir()
    return url, source


def test_snapshots_are_read_together(
    proxy: FaultProxy, s3_server: S3Server, vault: RunCli, tmp_path: Path
) -> None:
    url, source = _repo_and_source(s3_server, vault, tmp_path)
    for night in range(4):
        (source / f"night{night}.bin").write_bytes(random.Random(night).randbytes(2000))
        assert vault("backup", "-r", url, source).code == 0
    with held_until(proxy, "/snapshots/", "/snapshots/") as overlapped:
        listed = vault("snapshots", "-r", url, "--json")
    assert listed.code == 0, listed.err
    assert len(listed.json()) == 4
    assert overlapped.is_set(), "snapshot objects were read one after another"


def test_opening_reads_the_keyring_config_and_key_slots_together(
    proxy: FaultProxy, s3_server: S3Server, vault: RunCli
) -> None:
    url = fresh_s3_url(s3_server)
    assert vault("init", "-r", url).code == 0
    start = len(proxy.arrived)
    with held_until(proxy, "/keyring", "/keys/") as overlapped:
        assert vault("snapshots", "-r", url).code == 0
    assert overlapped.is_set(), "the key slots waited for the keyring"
    with held_until(proxy, "/keys/", "/keys/") as slots_overlapped:
        assert vault("snapshots", "-r", url).code == 0
    assert slots_overlapped.is_set(), "key slots were read one after another"
    versions = [p for m, p in proxy.arrived[start:] if m == "GET" and p.endswith("/version")]
    assert len(versions) == 2  # once per open, not twice


def test_the_ranges_of_one_pack_are_fetched_together(
    proxy: FaultProxy, s3_server: S3Server, vault: RunCli, tmp_path: Path
) -> None:
    url, source = _repo_and_source(s3_server, vault, tmp_path)
    # 12 MiB that do not compress: one pack, read in ranges of at most 8 MiB on S3.
    (source / "volume.bin").write_bytes(random.Random(3).randbytes(12 * 1024 * 1024))
    assert vault("backup", "-r", url, source).code == 0
    bucket, prefix = url.removeprefix("s3://").split("/", 1)
    packs = s3_server.client().list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/data/")
    sizes = sorted(o["Size"] for o in packs.get("Contents", []))
    assert len(sizes) == 2 and sizes[-1] > 12 * 1024 * 1024  # the tree's pack and the data's
    target = tmp_path / "out"
    # The first data GET is the tree's pack; the next two are the ranges of the data pack.
    with held_until(proxy, "/data/", "/data/", after=1) as overlapped:
        restored = vault("restore", "latest", "-r", url, "--target", target)
    assert restored.code == 0, restored.err
    data = (source / "volume.bin").read_bytes()
    assert (target / source.relative_to("/") / "volume.bin").read_bytes() == data
    assert overlapped.is_set(), "the ranges of one pack were fetched one after another"
