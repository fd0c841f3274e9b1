"""vault speaking DICOM to a real PACS: Orthanc (Debian's package) and DCMTK's storescp, both
started on loopback by the tests. `vault pacs echo` says why an association fails; `vault
restore --study … --to-pacs` sends a study's instances as they were backed up (mixed transfer
syntaxes, no transcoding), names refused instances by catalog id, and survives a PACS that
goes away mid-study."""

from __future__ import annotations

import json
import threading
import warnings
import zlib
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from tests.certs import PrivateCA
from tests.conftest import PASSWORD, RunCli
from tests.orthanc import STORESCP, Orthanc, StoreSCP, have_orthanc
from tests.repos import RepoHandle

pytestmark = pytest.mark.skipif(
    not have_orthanc() or STORESCP is None,
    reason="Orthanc and DCMTK are installed by scripts/test.sh (root, apt-get); not here",
)

# One study, eight instances: five transfer syntaxes (explicit and implicit little endian,
# explicit big endian, JPEG 2000, RLE, JPEG-LS, deflated) and three SOP classes (MR, CT,
# secondary capture), all pydicom's own real test files given one study and new instances.
SOURCES = [
    "MR_small.dcm",
    "MR_small_implicit.dcm",
    "MR_small_bigendian.dcm",
    "MR_small_jp2klossless.dcm",
    "MR_small_RLE.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
    "image_dfl.dcm",
    "CT_small.dcm",
]
MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4"


def make_study(root: Path, names: list[str] = SOURCES) -> tuple[str, dict[str, Path]]:
    """Write the study under root/<patient folder>/; returns its UID and files by SOP instance."""
    study_uid = generate_uid()
    folder = root / "Pacient Novak Jana" / "CBCT 2026"
    folder.mkdir(parents=True)
    files = {}
    for number, name in enumerate(names, start=1):
        ds = pydicom.dcmread(get_testdata_file(name))
        instance = generate_uid()
        ds.StudyInstanceUID = study_uid
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = instance
        ds.PatientID = "PID-4711"
        ds.PatientName = "Novak^Jana"
        if ds.file_meta.TransferSyntaxUID.is_compressed:
            # Encapsulated pixel data is OB (PS3.5 A.4); some of pydicom's files say OW, which
            # Orthanc corrects as it stores. vault would send either as it is.
            ds["PixelData"].VR = "OB"
        path = folder / f"IMG{number:04d}.dcm"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds.save_as(path, enforce_file_format=True)
        files[instance] = path
    return study_uid, files


def split_file(file_bytes: bytes) -> tuple[bytes, bytes]:
    """A DICOM file's meta group and its data set (the part sent on the wire; by PS3.10 each
    receiver writes its own meta group)."""
    assert file_bytes[128:132] == b"DICM"
    end = 144 + int.from_bytes(file_bytes[140:144], "little")
    return file_bytes[132:end], file_bytes[end:]


def data_set_bytes(file_bytes: bytes) -> bytes:
    return split_file(file_bytes)[1]


def as_orthanc_keeps_it(file_bytes: bytes) -> bytes:
    """The data set, inflated when deflated: Orthanc inflates a Deflated data set as it
    receives it and deflates it again its own way (storescp --bit-preserving keeps it)."""
    meta, data = split_file(file_bytes)
    if b"1.2.840.10008.1.2.1.99" in meta:
        return zlib.decompressobj(-zlib.MAX_WBITS).decompress(data)
    return data


@pytest.fixture
def orthanc(tmp_path: Path) -> Any:
    server = Orthanc(tmp_path / "orthanc").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def backed_up(tmp_path: Path, repo: RepoHandle, vault: RunCli) -> tuple[str, dict[str, Path], str]:
    """A repository holding the mixed study: (study UID, files by SOP instance, catalog id)."""
    study_uid, files = make_study(tmp_path / "archive")
    assert vault("backup", "-r", repo, tmp_path / "archive").code == 0
    found = vault("studies", "-r", repo, "--json")
    assert found.code == 0, found.err
    catalog_id = json.loads(found.out)[0]["catalog_id"]
    return study_uid, files, catalog_id


def test_echo_says_ok_and_why_not(orthanc: Orthanc, vault: RunCli, tmp_path: Path) -> None:
    ok = vault("pacs", "echo", orthanc.endpoint, "--json")
    assert ok.code == 0, ok.err
    assert json.loads(ok.out)["outcome"] == "PASS"

    wrong_title = vault("pacs", "echo", f"NOTORTHANC@127.0.0.1:{orthanc.dicom_port}")
    assert wrong_title.code == 1
    assert "rejected the association" in wrong_title.err and "NOTORTHANC" in wrong_title.err
    assert "internal error" not in wrong_title.err

    closed = StoreSCP(tmp_path / "closed").port  # a free port nobody listens on
    wrong_port = vault("pacs", "echo", f"ORTHANC@127.0.0.1:{closed}")
    assert wrong_port.code == 1 and "nothing listens on" in wrong_port.err

    plain_off_loopback = vault("pacs", "echo", "ORTHANC@192.0.2.10:104")
    assert plain_off_loopback.code == 2 and "plain DICOM" in plain_off_loopback.err

    unknown = vault("pacs", "echo", "main-pacs")
    assert unknown.code == 2 and "AET@HOST:PORT" in unknown.err


def test_echo_names_a_calling_ae_title_the_pacs_does_not_know(
    tmp_path: Path, vault: RunCli
) -> None:
    strict = Orthanc(tmp_path / "strict", known_modalities={"vault": "VAULT"},
                     allow_any_caller=False).start()  # fmt: skip
    try:
        policies = tmp_path / "policies"
        policies.mkdir()
        (policies / "pacs.toml").write_text(
            f'calling_ae_title = "INTRUDER"\n[[endpoint]]\nname = "strict"\n'
            f'ae_title = "ORTHANC"\nhost = "127.0.0.1"\nport = {strict.dicom_port}\n'
        )
        refused = vault("pacs", "echo", "strict", "--policy-dir", policies)
        assert refused.code == 1 and "INTRUDER" in refused.err, refused.err
        (policies / "pacs.toml").write_text(
            f'calling_ae_title = "VAULT"\n[[endpoint]]\nname = "strict"\n'
            f'ae_title = "ORTHANC"\nhost = "127.0.0.1"\nport = {strict.dicom_port}\n'
        )
        assert vault("pacs", "echo", "strict", "--policy-dir", policies).code == 0
    finally:
        strict.stop()


def test_a_study_arrives_in_orthanc_as_it_was_backed_up(
    orthanc: Orthanc, backed_up: tuple[str, dict[str, Path], str], repo: RepoHandle,
    vault: RunCli,
) -> None:  # fmt: skip
    study_uid, files, catalog_id = backed_up
    sent = vault("restore", "latest", "-r", repo, "--study", catalog_id, "--to-pacs",
                 orthanc.endpoint, "--json")  # fmt: skip
    assert sent.code == 0, sent.err
    doc = json.loads(sent.out)
    assert doc["outcome"] == "PASS" and doc["stored"] == len(files) == doc["instances"]
    received = orthanc.received_by_sop_instance()
    assert set(received) == set(files)
    for instance, path in files.items():
        assert as_orthanc_keeps_it(received[instance]) == as_orthanc_keeps_it(path.read_bytes())
    # Nothing of the patient in what vault printed or recorded.
    audit = vault("audit", "-r", repo, "--json")
    for text in (sent.out, sent.err, audit.out):
        for secret in ("Novak", "PID-4711", study_uid, *files, "Pacient"):
            assert secret not in text
    assert "restore-to-pacs" in audit.out


def test_storescp_receives_every_transfer_syntax_bit_for_bit(
    tmp_path: Path, backed_up: tuple[str, dict[str, Path], str], repo: RepoHandle,
    vault: RunCli,
) -> None:  # fmt: skip
    _, files, catalog_id = backed_up
    receiver = StoreSCP(tmp_path / "scp").start()
    try:
        sent = vault("restore", "latest", "-r", repo, "--study", catalog_id, "--to-pacs",
                     receiver.endpoint, "--json")  # fmt: skip
    finally:
        receiver.stop()
    assert sent.code == 0, sent.err
    got = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID: p for p in receiver.files()}
    assert set(got) == set(files)
    syntaxes = set()
    for instance, path in files.items():
        original = path.read_bytes()
        assert data_set_bytes(got[instance].read_bytes()) == data_set_bytes(original)
        syntaxes.add(pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)
    assert len(syntaxes) == 7  # every syntax went as it was, none transcoded


def test_a_refused_sop_class_is_named_by_catalog_id_and_the_rest_is_stored(
    tmp_path: Path, backed_up: tuple[str, dict[str, Path], str], repo: RepoHandle,
    vault: RunCli,
) -> None:  # fmt: skip
    _, files, catalog_id = backed_up
    # A storescp that accepts every SOP class but MR Image Storage.
    profile = tmp_path / "storescp.cfg"
    profile.write_text(_storescp_profile_without(MR_STORAGE))
    receiver = StoreSCP(tmp_path / "scp", profile=profile).start()
    try:
        sent = vault("restore", "latest", "-r", repo, "--study", catalog_id, "--to-pacs",
                     receiver.endpoint, "--json")  # fmt: skip
    finally:
        receiver.stop()
    assert sent.code == 1, sent.err
    doc = json.loads(sent.out)
    mr = [p for p in files.values() if pydicom.dcmread(p, stop_before_pixels=True).SOPClassUID
          == MR_STORAGE]  # fmt: skip
    assert len(doc["failures"]) == len(mr) and doc["stored"] == len(files) - len(mr)
    for failure in doc["failures"]:
        assert failure["instance"].startswith(catalog_id + "/")
        assert "MR Image Storage" in failure["reason"]
    assert len(receiver.files()) == len(files) - len(mr)


def _storescp_profile_without(refused: str) -> str:
    """A DCMTK association negotiation profile: the SOP classes of the test study but one,
    each in every transfer syntax the study uses."""
    syntaxes = ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.2",
                "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.80",
                "1.2.840.10008.1.2.1.99"]  # fmt: skip
    classes = ["1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.7", MR_STORAGE]
    kept = [c for c in classes if c != refused]
    lines = ["[[TransferSyntaxes]]", "[All]"]
    lines += [f"TransferSyntax{n} = {ts}" for n, ts in enumerate(syntaxes, start=1)]
    lines += ["[[PresentationContexts]]", "[Kept]"]
    lines += [f"PresentationContext{n} = {c}\\All" for n, c in enumerate(kept, start=1)]
    lines += ["[[Profiles]]", "[Vault]", "PresentationContexts = Kept"]
    return "\n".join(lines) + "\n"


def test_a_pacs_that_goes_away_mid_study_is_reported_and_a_rerun_completes(
    tmp_path: Path, repo: RepoHandle, vault: RunCli, orthanc: Orthanc
) -> None:
    study_root = tmp_path / "archive"
    # Many small instances, so Orthanc dies with some stored and some not.
    _, files = make_study(study_root, ["CT_small.dcm"] * 60)
    assert vault("backup", "-r", repo, study_root).code == 0
    catalog_id = json.loads(vault("studies", "-r", repo, "--json").out)[0]["catalog_id"]
    killed = threading.Event()

    def kill_after_some() -> None:
        # Orthanc writes each instance it stores under its storage directory.
        from tests.waiting import DirectoryChanges, wait_until

        changes = DirectoryChanges(orthanc.root / "storage")
        try:
            wait_until(lambda: _stored_files(orthanc) >= 10, changes, timeout=120)
        finally:
            changes.close()
        orthanc.kill()
        killed.set()

    killer = threading.Thread(target=kill_after_some)
    killer.start()
    sent = vault("restore", "latest", "-r", repo, "--study", catalog_id, "--to-pacs",
                 orthanc.endpoint, "--json")  # fmt: skip
    killer.join()
    assert killed.is_set()
    assert sent.code == 1, sent.out
    doc = json.loads(sent.out)
    assert 0 < doc["stored"] < len(files) and doc["retries"] > 0
    assert doc["stored"] + len(doc["failures"]) == len(files)
    assert all("not sent" in f["reason"] for f in doc["failures"])
    # The PACS comes back (same storage): a rerun sends the study again and all of it is there.
    orthanc.start()
    again = vault("restore", "latest", "-r", repo, "--study", catalog_id, "--to-pacs",
                  orthanc.endpoint, "--json")  # fmt: skip
    assert again.code == 0, again.err
    assert set(orthanc.received_by_sop_instance()) == set(files)


def _stored_files(orthanc: Orthanc) -> int:
    storage = orthanc.root / "storage"
    return sum(1 for p in storage.rglob("*") if p.is_file()) if storage.exists() else 0


def test_dicom_tls_verifies_the_pacs_and_refuses_a_wrong_ca(
    tmp_path: Path, vault: RunCli, backed_up: tuple[str, dict[str, Path], str], repo: RepoHandle
) -> None:
    _, files, catalog_id = backed_up
    ca = PrivateCA(tmp_path / "ca")
    server = ca.issue("orthanc", ["127.0.0.1", "localhost"])
    other = PrivateCA(tmp_path / "other", name="someone else CA")
    tls = {"certificate": str(server.cert), "key": str(server.key), "trusted": str(ca.pem)}
    tls_orthanc = Orthanc(tmp_path / "tls-orthanc", tls=tls).start()
    try:
        policies = tmp_path / "policies"
        policies.mkdir()

        def write(ca_file: Path) -> None:
            (policies / "pacs.toml").write_text(
                f'[[endpoint]]\nname = "secure"\nae_title = "ORTHANC"\nhost = "127.0.0.1"\n'
                f'port = {tls_orthanc.dicom_port}\n[endpoint.tls]\nca_file = "{ca_file}"\n'
            )

        write(other.pem)
        wrong = vault("pacs", "echo", "secure", "--policy-dir", policies)
        assert wrong.code == 1 and "certificate did not verify" in wrong.err, wrong.err
        refused = vault("restore", "latest", "-r", repo, "--study", catalog_id, "--to-pacs",
                        "secure", "--policy-dir", policies)  # fmt: skip
        assert refused.code == 1 and "certificate did not verify" in refused.err
        assert tls_orthanc.instances() == []

        write(ca.pem)
        assert vault("pacs", "echo", "secure", "--policy-dir", policies).code == 0
        sent = vault("restore", "latest", "-r", repo, "--study", catalog_id, "--to-pacs",
                     "secure", "--policy-dir", policies, "--json")  # fmt: skip
        assert sent.code == 0, sent.err
        assert json.loads(sent.out)["tls"] is True
        assert set(tls_orthanc.received_by_sop_instance()) == set(files)
        # Plain DICOM to the TLS port gets a clear error, not a hang or a traceback.
        plain = vault("pacs", "echo", f"ORTHANC@127.0.0.1:{tls_orthanc.dicom_port}")
        assert plain.code == 1 and "internal error" not in plain.err
    finally:
        tls_orthanc.stop()


def test_to_pacs_usage_errors(vault: RunCli, repo: RepoHandle, tmp_path: Path) -> None:
    no_study = vault("restore", "latest", "-r", repo, "--to-pacs", "ORTHANC@127.0.0.1:4242")
    assert no_study.code == 2 and "--study" in no_study.err
    both = vault("restore", "latest", "-r", repo, "--study", "x", "--to-pacs",
                 "ORTHANC@127.0.0.1:4242", "--target", tmp_path / "t")  # fmt: skip
    assert both.code == 2 and "--target" in both.err
    nowhere = vault("restore", "latest", "-r", repo)
    assert nowhere.code == 2 and "--target" in nowhere.err


def test_a_drill_into_a_standby_pacs_proves_the_study_is_there_whole(
    orthanc: Orthanc, backed_up: tuple[str, dict[str, Path], str], repo: RepoHandle,
    vault: RunCli, tmp_path: Path,
) -> None:  # fmt: skip
    study_uid, files, catalog_id = backed_up
    run = vault("drill", "-r", repo, "--sample", "1", "--into-pacs", orthanc.endpoint, "--json",
                "--record-dir", tmp_path / "records")  # fmt: skip
    assert run.code == 0, run.out + run.err
    record = json.loads(run.out)
    check = next(i["pacs"] for i in record["items"] if i["id"] == catalog_id)
    assert check["result"] == "PASS"
    assert check["instances_expected"] == check["instances_found"] == len(files)
    assert check["series_found"] == check["series_expected"] >= 1
    assert check["studies_found"] == 1 and check["instances_extra"] == 0
    assert set(orthanc.received_by_sop_instance()) == set(files)
    report = vault("drill", "report", "-r", repo, "--format", "md")
    assert f"{len(files)} of {len(files)} instances" in report.out
    for text in (run.out, report.out):
        assert study_uid not in text and "Novak" not in text and "PID-4711" not in text
        assert not any(instance in text for instance in files)


def test_a_drill_fails_when_the_pacs_does_not_hold_what_it_was_sent(
    backed_up: tuple[str, dict[str, Path], str], repo: RepoHandle, vault: RunCli,
    tmp_path: Path,
) -> None:  # fmt: skip
    """storescp stores but answers no C-FIND: the application check cannot be proven, and
    the drill says FAIL instead of PASS over a restore nobody could read back."""
    _, files, catalog_id = backed_up
    receiver = StoreSCP(tmp_path / "scp").start()
    try:
        run = vault("drill", "-r", repo, "--sample", "1", "--into-pacs", receiver.endpoint,
                    "--json", "--record-dir", tmp_path / "records")  # fmt: skip
    finally:
        receiver.stop()
    assert run.code == 1
    record = json.loads(run.out)
    check = next(i["pacs"] for i in record["items"] if i["id"] == catalog_id)
    assert check["result"] == "FAIL" and check["stored"] == len(files)
    assert record["result"] == "FAIL"
    assert any("C-FIND" in reason or "accepts none" in reason
               for reason in record["failure_reasons"])  # fmt: skip


def _upload(orthanc: Orthanc, path: Path) -> None:
    orthanc.rest("/instances", data=path.read_bytes())


def test_a_backup_from_orthanc_restores_as_the_pacs_sent_it_and_nightlies_fetch_only_new(
    repo: RepoHandle, vault: RunCli, tmp_path: Path
) -> None:
    # A second receiver the PACS also knows: what Orthanc sends it, written bit for bit, is
    # what Orthanc sends anyone (DCMTK re-encodes some data sets as it sends them, e.g. it
    # drops trailing padding), so it is what vault's backup must restore.
    witness = StoreSCP(tmp_path / "witness").start()
    orthanc = Orthanc(tmp_path / "orthanc", known_modalities={"witness": witness.ae_title})
    orthanc.modality_ports = {"witness": witness.port}
    orthanc.start()
    try:
        _backup_from_orthanc(orthanc, witness, repo, vault, tmp_path)
    finally:
        orthanc.stop()
        witness.stop()


def _backup_from_orthanc(
    orthanc: Orthanc, witness: StoreSCP, repo: RepoHandle, vault: RunCli, tmp_path: Path
) -> None:
    study_uid, files = make_study(tmp_path / "modality")
    later = files.popitem()  # one instance arrives after the first night
    for path in files.values():
        _upload(orthanc, path)
    staging = tmp_path / "staging"
    first = vault("backup", "-r", repo, "--from-pacs", orthanc.endpoint, "--staging", staging,
                  "--json")  # fmt: skip
    assert first.code == 0, first.err
    doc = json.loads(first.out)
    assert doc["pacs"]["studies"] == 1 and doc["pacs"]["instances_fetched"] == len(files)
    assert doc["stats"]["files"] == len(files)
    # The clear-text staging copy is gone; vault's folder keeps only its marker.
    own = staging / f"vault-pacs-ORTHANC_127.0.0.1_{orthanc.dicom_port}"
    assert [p.name for p in staging.iterdir()] == [own.name]
    assert [p.name for p in own.iterdir()] == [".vault-staging"]
    # Nothing of the patient in the snapshot's paths: keyed names only.
    listing = vault("ls", "-r", repo, "latest", "--json").out
    assert study_uid not in listing and not any(uid in listing for uid in files)

    # The second night: nothing new, nothing fetched, and the snapshot still holds it all.
    second = json.loads(vault("backup", "-r", repo, "--from-pacs", orthanc.endpoint,
                              "--staging", staging, "--json").out)  # fmt: skip
    assert second["pacs"]["instances_fetched"] == 0 and second["pacs"]["studies_already_held"] == 1
    assert second["stats"]["files"] == len(files) and second["stats"]["bytes_added"] == 0

    # A third night, after one more instance arrived: only that one is fetched.
    _upload(orthanc, later[1])
    third = json.loads(vault("backup", "-r", repo, "--from-pacs", orthanc.endpoint,
                             "--staging", staging, "--json").out)  # fmt: skip
    assert third["pacs"]["instances_fetched"] == 1
    assert third["stats"]["files"] == len(files) + 1

    # Restored, every data set is the one the PACS sends, byte for byte.
    target = tmp_path / "restored"
    assert vault("restore", "latest", "-r", repo, "--target", target, "--verify").code == 0
    restored = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID: p
                for p in target.rglob("*.dcm")}  # fmt: skip
    orthanc.rest("/modalities/witness/store", data=json.dumps(orthanc.instances()).encode())
    sent = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID: p
            for p in witness.files()}  # fmt: skip
    assert set(restored) == set(sent) == {*files, later[0]}
    for uid, path in restored.items():
        assert data_set_bytes(path.read_bytes()) == data_set_bytes(sent[uid].read_bytes())
    studies = json.loads(vault("studies", "-r", repo, "--json").out)
    assert len(studies) == 1 and studies[0]["files"] == len(files) + 1


def test_the_nightly_schedule_backs_up_a_pacs_named_in_backup_toml(
    orthanc: Orthanc, repo: RepoHandle, vault: RunCli, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    _, files = make_study(tmp_path / "modality", SOURCES[:3])
    for path in files.values():
        _upload(orthanc, path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # the default staging
    policies = tmp_path / "policies"
    policies.mkdir()
    secret = tmp_path / "passphrase"
    secret.write_text(PASSWORD + "\n")
    secret.chmod(0o600)
    (policies / "backup.toml").write_text(
        f'[backup]\nrepository = "{repo}"\npassword_file = "{secret}"\n'
        'pacs_sources = ["standby"]\ntags = ["nightly"]\n'
    )
    (policies / "schedule.toml").write_text("[schedule]\nretry_after_minutes = 0\n[alerts]\n")
    (policies / "pacs.toml").write_text(
        f'[[endpoint]]\nname = "standby"\nae_title = "ORTHANC"\nhost = "127.0.0.1"\n'
        f"port = {orthanc.dicom_port}\n"
    )
    run = vault("schedule", "run", "--policy-dir", policies, "--once", "backup", password=None)
    assert run.code == 0, run.err
    snapshots = json.loads(vault("snapshots", "-r", repo, "--json").out)
    assert len(snapshots) == 1 and set(snapshots[0]["tags"]) == {"pacs", "nightly"}
    studies = json.loads(vault("studies", "-r", repo, "--json").out)
    assert len(studies) == 1 and studies[0]["files"] == len(files)
    staging = tmp_path / "cache" / "vault" / "pacs" / "vault-pacs-standby"
    assert [p.name for p in staging.iterdir()] == [".vault-staging"]


def test_a_backup_by_c_move_to_vaults_own_storage_scp(
    repo: RepoHandle, vault: RunCli, tmp_path: Path
) -> None:
    """For a PACS that serves C-MOVE only: it connects back to vault's storage SCP (while the
    move runs, from the PACS's AE title only); one that does not know vault as a destination
    is named as such, and the snapshot says it is partial."""
    move_port = StoreSCP(tmp_path / "unused").port  # a free port
    orthanc = Orthanc(tmp_path / "orthanc", known_modalities={"vault": "VAULT"},
                      modality_ports={"vault": move_port}).start()  # fmt: skip
    try:
        _, files = make_study(tmp_path / "modality", SOURCES[:4])
        for path in files.values():
            _upload(orthanc, path)
        policies = tmp_path / "policies"
        policies.mkdir()

        def endpoint(calling: str) -> None:
            (policies / "pacs.toml").write_text(
                f'calling_ae_title = "{calling}"\n[[endpoint]]\nname = "old-pacs"\n'
                f'ae_title = "ORTHANC"\nhost = "127.0.0.1"\nport = {orthanc.dicom_port}\n'
                f'retrieve = "move"\nmove_port = {move_port}\n'
            )

        endpoint("STRANGER")  # a move destination Orthanc does not know
        refused = vault("backup", "-r", repo, "--from-pacs", "old-pacs", "--policy-dir",
                        policies, "--staging", tmp_path / "staging", "--json")  # fmt: skip
        assert refused.code == 3, refused.err
        assert "move destination" in refused.err
        assert json.loads(refused.out)["pacs"]["instances_fetched"] == 0

        endpoint("VAULT")
        moved = vault("backup", "-r", repo, "--from-pacs", "old-pacs", "--policy-dir", policies,
                      "--staging", tmp_path / "staging", "--json")  # fmt: skip
        assert moved.code == 0, moved.err
        assert json.loads(moved.out)["pacs"]["instances_fetched"] == len(files)
        target = tmp_path / "restored"
        assert vault("restore", "latest", "-r", repo, "--target", target).code == 0
        restored = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID
                    for p in target.rglob("*.dcm")}  # fmt: skip
        assert restored == set(files)
    finally:
        orthanc.stop()


def test_every_study_of_a_patient_goes_into_the_pacs(
    orthanc: Orthanc, repo: RepoHandle, vault: RunCli, tmp_path: Path
) -> None:
    _, first = make_study(tmp_path / "a", SOURCES[:2])
    _, second = make_study(tmp_path / "b", SOURCES[2:4])
    assert vault("backup", "-r", repo, tmp_path / "a", tmp_path / "b").code == 0
    sent = vault("restore", "latest", "-r", repo, "--patient", "PID-4711", "--to-pacs",
                 orthanc.endpoint, "--json")  # fmt: skip
    assert sent.code == 0, sent.err
    doc = json.loads(sent.out)
    assert len(doc["studies"]) == 2 and doc["stored"] == 4
    assert set(orthanc.received_by_sop_instance()) == {*first, *second}


def test_a_file_of_the_study_that_cannot_go_as_stored_is_skipped_with_a_note(
    orthanc: Orthanc, repo: RepoHandle, vault: RunCli, tmp_path: Path
) -> None:
    study_uid, files = make_study(tmp_path / "a", SOURCES[:2])
    # A bare data set of the same study, as old systems wrote them: no file meta group, so it
    # cannot be sent without re-encoding, and vault sends only what it can send unchanged.
    bare = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    bare.StudyInstanceUID = study_uid
    bare.SOPInstanceUID = generate_uid()
    del bare.file_meta
    bare.preamble = None  # no preamble, no "DICM": the data set alone
    folder = next(iter(files.values())).parent
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pydicom.dcmwrite(folder / "OLD0001", bare, implicit_vr=True, little_endian=True)
    assert vault("backup", "-r", repo, tmp_path / "a").code == 0
    studies = json.loads(vault("studies", "-r", repo, "--json").out)
    assert studies[0]["files"] == 3
    sent = vault("restore", "latest", "-r", repo, "--study", studies[0]["catalog_id"],
                 "--to-pacs", orthanc.endpoint)  # fmt: skip
    assert sent.code == 0, sent.err
    assert "not sent: not a DICOM file with a file meta group" in sent.err
    assert "OLD0001" not in sent.err and "sent 2 of 2 instances" in sent.out
    assert set(orthanc.received_by_sop_instance()) == set(files)


def test_a_staging_directory_holding_other_files_is_refused_and_left_alone(
    orthanc: Orthanc, repo: RepoHandle, vault: RunCli, tmp_path: Path
) -> None:
    staging = tmp_path / "shared"
    own = staging / f"vault-pacs-ORTHANC_127.0.0.1_{orthanc.dicom_port}"
    own.mkdir(parents=True)
    keep = own / "letter.txt"
    keep.write_text("not vault's")
    run = vault("backup", "-r", repo, "--from-pacs", orthanc.endpoint, "--staging", staging)
    assert run.code == 2 and "did not stage" in run.err
    assert keep.read_text() == "not vault's"
    other = staging / "unrelated.txt"
    other.write_text("beside vault's folder")
    keep.unlink()
    assert vault("backup", "-r", repo, "--from-pacs", orthanc.endpoint, "--staging",
                 staging).code == 0  # fmt: skip
    assert other.read_text() == "beside vault's folder"  # only vault's own folder is touched
