"""The C-STORE sender's retries against a real DICOM server that misbehaves on purpose:
pynetdicom's own storage SCP on loopback, answering "out of resources" and refusing a second
association, which Orthanc cannot be made to do. The pauses are recorded, not slept."""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid
from pynetdicom import AE, evt

from tests.orthanc import free_port
from vault.pacs.store import Instance, read_instance, store
from vault.policy.pacs import parse_written_endpoint

CT = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT = "1.2.840.10008.1.2.1"


def _instances(folder: Path, count: int) -> list[Instance]:
    folder.mkdir()
    found = []
    for number in range(count):
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        path = folder / f"CT{number}.dcm"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds.save_as(path, enforce_file_format=True)
        instance = read_instance(path, f"study/{number + 1}")
        assert isinstance(instance, Instance)
        found.append(instance)
    return found


class Scp:
    """A storage SCP whose first answer to each instance is `first` (then success)."""

    def __init__(self, first: int, max_associations: int = 10, always: bool = False) -> None:
        self.first, self.always, self.port = first, always, free_port()
        self.stored: set[str] = set()
        self.answered: set[str] = set()
        self.lock = threading.Lock()
        self.ae = AE(ae_title="SCP")
        self.ae.maximum_associations = max_associations
        self.ae.add_supported_context(CT, [EXPLICIT])

    def handle(self, event: evt.Event) -> int:
        uid = str(event.request.AffectedSOPInstanceUID)
        with self.lock:
            if self.always:
                return self.first
            if uid not in self.answered:
                self.answered.add(uid)
                if self.first != 0:
                    return self.first
            self.stored.add(uid)
        return 0x0000

    def __enter__(self) -> Scp:
        handlers = [(evt.EVT_C_STORE, self.handle)]
        self.server = self.ae.start_server(
            ("127.0.0.1", self.port), block=False, evt_handlers=handlers
        )
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()


@pytest.fixture
def instances(tmp_path: Path) -> Iterator[list[Instance]]:
    yield _instances(tmp_path / "study", 6)


def _uids(instances: list[Instance]) -> set[str]:
    return {str(pydicom.dcmread(i.path, stop_before_pixels=True).SOPInstanceUID) for i in instances}


def test_out_of_resources_is_retried_after_a_pause_and_everything_is_stored(
    instances: list[Instance],
) -> None:
    pauses: list[float] = []
    with Scp(first=0xA700) as scp:
        endpoint = replace(parse_written_endpoint(f"SCP@127.0.0.1:{scp.port}"), associations=1)
        result = store(endpoint, instances, pause=pauses.append)
    assert result.failures == [] and len(result.stored) == len(instances)
    assert scp.stored == _uids(instances)
    assert pauses and set(pauses) <= {1.0, 2.0, 4.0} and result.retries == len(pauses)


def test_a_pacs_that_stays_out_of_resources_is_named_as_such(instances: list[Instance]) -> None:
    pauses: list[float] = []
    with Scp(first=0xA702, always=True) as scp:
        endpoint = replace(parse_written_endpoint(f"SCP@127.0.0.1:{scp.port}"), associations=1)
        result = store(endpoint, instances, pause=pauses.append)
    assert pauses == [1.0, 2.0, 4.0]
    assert len(result.failures) == len(instances)
    assert all("out of resources" in why for _, why in result.failures)


def test_a_pacs_taking_one_association_at_a_time_gets_the_rest_over_one(
    instances: list[Instance],
) -> None:
    pauses: list[float] = []
    with Scp(first=0x0000, max_associations=1) as scp:

        def pause(seconds: float) -> None:
            # The backoff, recorded; instead of sleeping it, wait for what the real pause
            # waits for: the SCP's one association ending (each is a thread: joined).
            pauses.append(seconds)
            for busy in scp.ae.active_associations:
                busy.join(timeout=30)

        endpoint = parse_written_endpoint(f"SCP@127.0.0.1:{scp.port}")  # two associations
        assert endpoint.associations == 2
        result = store(endpoint, instances, pause=pause)
    assert result.failures == [], result.failures
    assert scp.stored == _uids(instances) and pauses


def test_a_permanent_refusal_is_not_retried(instances: list[Instance]) -> None:
    pauses: list[float] = []
    with Scp(first=0x0000) as scp:
        scp.ae.require_called_aet = True  # answers only to its own AE title
        endpoint = replace(parse_written_endpoint(f"WRONG@127.0.0.1:{scp.port}"), associations=1)
        result = store(endpoint, instances, pause=pauses.append)
    assert pauses == [] and result.unsent == set()
    assert len(result.failures) == len(instances)
    assert all("permanently" in why for _, why in result.failures)
