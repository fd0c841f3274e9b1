"""Nothing readable about patients in the repository; secrets never reach output."""

from __future__ import annotations

import os
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from tests.conftest import BOTH_BACKENDS, PASSWORD, RunCli
from tests.repos import RepoHandle
from vault.errors import IntegrityError

MARKERS = [
    b"ZQXMARKERNAME",
    b"ZQXMARKERCONTENT",
    b"ZQXPATIENTNAME",
    b"ZQXPATIENT-4242",
    b"ZQXACCESSION",
    b"1.2.826.0.1.3680043.8.498.777",
]


def _dicom_with_markers(path: Path) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientName = "ZQXPATIENTNAME^JANE"
    ds.PatientID = "ZQXPATIENT-4242"
    ds.AccessionNumber = "ZQXACCESSION"
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.777"
    ds.Modality = "OT"
    ds.Rows, ds.Columns = 64, 64
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.SamplesPerPixel, ds.PixelRepresentation = 1, 0
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = bytes(range(256)) * 32
    ds.save_as(path, enforce_file_format=True)


def _all_repository_bytes(repo: RepoHandle) -> list[tuple[str, bytes]]:
    """Every object through the backend's own interface (for S3: the bucket as the provider
    sees it), plus every file under a local repository's directory, temp files included."""
    out = list(repo.all_objects())
    if repo.path is not None:
        for dirpath, _, filenames in os.walk(repo.path):
            for name in filenames:
                full = Path(dirpath) / name
                out.append((str(full.relative_to(repo.path)), full.read_bytes()))
    return out


@BOTH_BACKENDS
def test_no_marker_from_names_contents_or_dicom_headers_appears_in_the_repository(
    tmp_path: Path, repo: RepoHandle, vault: RunCli
) -> None:
    source = tmp_path / "ZQXMARKERNAME-dir"
    source.mkdir()
    (source / "ZQXMARKERNAME.txt").write_bytes(b"ZQXMARKERCONTENT " * 5000)
    # Repetitive content compresses: markers must not survive in compressed-but-unsealed form.
    (source / "notes.txt").write_bytes(b"ZQXMARKERCONTENT\n")
    _dicom_with_markers(source / "ZQXMARKERNAME.dcm")
    assert pydicom.dcmread(source / "ZQXMARKERNAME.dcm").PatientID == "ZQXPATIENT-4242"
    assert vault("backup", "-r", repo, source).code == 0
    objects = _all_repository_bytes(repo)
    assert len(objects) >= 6
    for name, data in objects:
        for marker in MARKERS:
            assert marker not in data, f"{marker!r} found in {name}"
            assert marker.decode() not in name
            assert marker.lower() not in data.lower()


@BOTH_BACKENDS
def test_generated_archive_leaves_no_patient_identifier_or_file_name_in_storage(
    repo: RepoHandle, vault: RunCli, archive: Path
) -> None:
    identifiers: set[bytes] = set()
    for path in archive.rglob("*"):
        identifiers.add(path.name.encode())
    for path in archive.rglob("*.dcm"):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        for value in (
            ds.PatientName,
            ds.PatientID,
            ds.StudyInstanceUID,
            ds.SOPInstanceUID,
            ds.get("AccessionNumber", ""),
            ds.get("PatientBirthDate", ""),
        ):
            if str(value):
                identifiers.add(str(value).encode())
    identifiers = {i for i in identifiers if len(i) >= 6}  # short names match random bytes
    assert any(b"DEMO" in i for i in identifiers)
    assert vault("backup", "-r", repo, archive).code == 0
    objects = _all_repository_bytes(repo)
    for name, data in objects:
        for identifier in identifiers:
            assert identifier not in data, f"{identifier!r} found in {name}"
            assert identifier.decode() not in name


@BOTH_BACKENDS
def test_wrong_passphrase_exits_12_with_one_line_and_no_secret(
    repo: RepoHandle, vault: RunCli
) -> None:
    wrong = "not-the-passphrase-Zq81"
    result = vault("snapshots", "-r", repo, password=wrong)
    assert result.code == 12
    assert wrong not in result.err + result.out
    assert PASSWORD not in result.err + result.out
    assert "Traceback" not in result.err
    assert len(result.err.strip().splitlines()) == 1
    assert "does not open" in result.err


def test_missing_repository_exits_10(tmp_path: Path, vault: RunCli) -> None:
    result = vault("snapshots", "-r", tmp_path / "nowhere")
    assert result.code == 10
    assert "no vault repository" in result.err
    assert len(result.err.strip().splitlines()) == 1


def test_missing_passphrase_without_terminal_is_a_usage_error(
    repo: RepoHandle, vault: RunCli
) -> None:
    result = vault("snapshots", "-r", repo, password=None)
    assert result.code == 2
    assert "VAULT_PASSWORD_FILE" in result.err


def test_password_file_and_command_open_the_repository(
    tmp_path: Path, repo: RepoHandle, vault: RunCli
) -> None:
    pw_file = tmp_path / "pw"
    pw_file.write_text(PASSWORD + "\n")
    pw_file.chmod(0o644)
    loose = vault("snapshots", "-r", repo, "--password-file", pw_file, password=None)
    assert loose.code == 2 and "chmod 600" in loose.err and PASSWORD not in loose.err
    pw_file.chmod(0o600)
    assert vault("snapshots", "-r", repo, "--password-file", pw_file, password=None).code == 0
    command = f"cat {pw_file}"
    assert vault("snapshots", "-r", repo, "--password-command", command, password=None).code == 0


def test_recovery_key_opens_the_repository(tmp_path: Path, vault: RunCli) -> None:
    repo = tmp_path / "r"
    key_file = tmp_path / "recovery.txt"
    doc = vault("init", "-r", repo, "--json", "--recovery-key-file", key_file).json()
    assert doc["recovery_key_file"] == str(key_file)
    assert key_file.stat().st_mode & 0o777 == 0o600
    recovery = key_file.read_text().strip()
    assert recovery.startswith("VRK1-")
    assert vault("snapshots", "-r", repo, password=recovery.lower()).code == 0
    broken = recovery[:7] + ("A" if recovery[7] != "A" else "B") + recovery[8:]
    typo = vault("snapshots", "-r", repo, password=broken)
    assert typo.code == 12 and "typo" in typo.err


def test_key_slot_files_are_private(repo: RepoHandle) -> None:
    assert repo.path is not None
    slots = list((repo.path / "keys").iterdir())
    assert len(slots) == 2
    for slot in slots:
        assert slot.stat().st_mode & 0o777 == 0o600


def test_unsafe_names_in_a_tree_refuse_the_whole_tree_on_restore(
    tmp_path: Path, repo: RepoHandle
) -> None:
    from datetime import UTC, datetime

    from vault.format.pack import BlobType
    from vault.format.snapshot import Snapshot
    from vault.format.tree import DIR, FILE, Node, Tree
    from vault.jobs.restore.restorer import RestoreOptions, restore
    from vault.repo.writer import BlobWriter

    r = repo.open(PASSWORD)
    writer = BlobWriter(r)
    content = b"escaped!"
    chunk = writer.add(BlobType.DATA, content).hex()
    import hashlib

    def file_node(name: bytes) -> Node:
        return Node(
            name=name,
            type=FILE,
            mode=0o644,
            uid=0,
            gid=0,
            mtime_ns=0,
            size=len(content),
            chunks=(chunk,),
            sha256=hashlib.sha256(content).hexdigest(),
        )

    inner = writer.add(BlobType.TREE, Tree((file_node(b"ok.txt"),)).to_bytes()).hex()
    root = Tree(
        (
            file_node(b".."),
            file_node(b"a/b"),
            file_node(b"ok.txt"),
            Node(name=b"..", type=DIR, mode=0o755, uid=0, gid=0, mtime_ns=0, subtree=inner),
        )
    )
    root_id = writer.add(BlobType.TREE, root.to_bytes()).hex()
    writer.flush()
    writer.close()
    snap = Snapshot(
        id="ab" * 32, time=datetime.now(UTC), host="h", username="u", paths=("/x",), tree=root_id
    )
    r.save_snapshot(snap)
    target = tmp_path / "deep" / "target"
    # Names a file system cannot hold mean a crafted (or damaged) tree: it does not decode, and
    # nothing of it is written (tests/test_malicious_repository.py has the whole class).
    with pytest.raises(IntegrityError, match="malformed: unsafe entry name"):
        restore(r, snap, RestoreOptions(target))
    assert not (tmp_path / "deep" / "ok.txt").exists()
    assert not (target / "ok.txt").exists()


def test_key_file_slot_opens_the_repository_and_removal_revokes_it(
    tmp_path: Path, repo: RepoHandle, vault: RunCli
) -> None:
    key_file = tmp_path / "machine.vaultkey"
    added = vault("key", "add", "-r", repo, "--new-key-file", key_file, "--json")
    assert added.code == 0, added.err
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert vault("snapshots", "-r", repo, "--key-file", key_file, password=None).code == 0
    key_file.chmod(0o640)
    group_readable = vault("snapshots", "-r", repo, "--key-file", key_file, password=None)
    assert group_readable.code == 2 and "group or others" in group_readable.err
    key_file.chmod(0o600)
    slot_id = added.json()["id"]
    assert vault("key", "remove", slot_id[:10], "-r", repo).code == 0
    assert vault("snapshots", "-r", repo, "--key-file", key_file, password=None).code == 12


def test_passwd_replaces_the_slot_in_use(tmp_path: Path, repo: RepoHandle, vault: RunCli) -> None:
    new = tmp_path / "new-pw"
    new.write_text("a brand new passphrase\n")
    new.chmod(0o600)
    assert vault("key", "passwd", "-r", repo, "--new-password-file", new).code == 0
    assert vault("snapshots", "-r", repo).code == 12
    assert vault("snapshots", "-r", repo, password="a brand new passphrase").code == 0
    listing = vault("key", "list", "-r", repo, "--json", password="a brand new passphrase").json()
    assert sorted(s["kind"] for s in listing["slots"]) == ["passphrase", "recovery"]


def test_key_remove_refuses_the_slot_in_use_without_force(repo: RepoHandle, vault: RunCli) -> None:
    listing = vault("key", "list", "-r", repo, "--json").json()
    in_use = next(s["id"] for s in listing["slots"] if s["in_use"])
    result = vault("key", "remove", in_use, "-r", repo)
    assert result.code == 2 and "--force" in result.err
    assert len(vault("key", "list", "-r", repo, "--json").json()["slots"]) == 2


def test_the_recovery_key_never_goes_into_json_output(tmp_path: Path, vault: RunCli) -> None:
    # No terminal here: --json without a file to write the key to is refused before anything
    # is created.
    refused = vault("init", "-r", tmp_path / "r", "--json")
    assert refused.code == 2 and "--recovery-key-file" in refused.err
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir())
    key_file = tmp_path / "recovery.txt"
    made = vault("init", "-r", tmp_path / "r", "--json", "--recovery-key-file", key_file)
    assert made.code == 0, made.err
    recovery = key_file.read_text().strip()
    assert recovery not in made.out + made.err and "VRK1" not in made.out
    again = vault("init", "-r", tmp_path / "r2", "--recovery-key-file", key_file)
    assert again.code == 2 and "exists" in again.err  # never overwrites a key file
    rotated_file = tmp_path / "new-recovery.txt"
    refused = vault("key", "rotate", "--master", "-r", tmp_path / "r", "--json")
    assert refused.code == 2 and "--recovery-key-file" in refused.err
    assert vault("snapshots", "-r", tmp_path / "r", password=recovery).code == 0  # unchanged
    rotated = vault(
        "key", "rotate", "--master", "-r", tmp_path / "r", "--json",
        "--recovery-key-file", rotated_file,
    )
    assert rotated.code == 0, rotated.err
    new_recovery = rotated_file.read_text().strip()
    assert new_recovery not in rotated.out + rotated.err and "VRK1" not in rotated.out
    assert rotated_file.stat().st_mode & 0o777 == 0o600
    assert vault("snapshots", "-r", tmp_path / "r", password=new_recovery).code == 0


def test_a_running_vault_writes_no_core_dump(tmp_path: Path, repo: RepoHandle) -> None:
    """Seen from outside, while vault runs: the password command is vault's child, so it can
    read its parent's limits (core size 0) and dumpable flag (0: no core via a pipe handler,
    no ptrace by other processes of the user)."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    report = tmp_path / "parent.txt"
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import os, sys\n"
        "ppid = os.getppid()\n"
        "limits = open(f'/proc/{ppid}/limits').read()\n"
        "core = [l for l in limits.splitlines() if l.startswith('Max core file size')][0]\n"
        f"open({str(report)!r}, 'w').write(core + '\\n')\n"
        f"print({PASSWORD!r})\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "vault", "snapshots", "-r", str(repo),
         "--password-command", f"{sys.executable} {probe}"],
        env={k: v for k, v in os.environ.items() if k != "VAULT_PASSWORD"},
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    assert report.read_text().split()[4:6] == ["0", "0"]  # soft and hard limit


def test_no_core_dumps_makes_the_process_undumpable() -> None:
    import subprocess
    import sys

    code = (
        "import ctypes; from vault.cli.main import no_core_dumps; no_core_dumps(); "
        "print(ctypes.CDLL(None).prctl(3, 0, 0, 0, 0))"  # PR_GET_DUMPABLE
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "0", done.stderr
