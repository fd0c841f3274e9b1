#!/usr/bin/env python3
"""Sending one CT study into a PACS: vault's `restore --to-pacs` against DCMTK's storescu.

Generates (seeded) a study of SLICES 512x512 16-bit slices (600: about 300 MB), backs it up
into a scratch repository, then sends it with vault and with storescu into two fresh, equal
receivers of each kind: Orthanc (Debian's, default settings; storage on /dev/shm when it is
there) and DCMTK's storescp (writing files). Prints the times and the ratio; the receivers
and the senders run with TCP_NODELAY where they allow it (DCMTK reads it from the
environment). Needs Orthanc, DCMTK and numpy (the test extra).

    python scripts/bench_pacs.py [--slices 600] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.orthanc import STORESCU, Orthanc, StoreSCP  # noqa: E402

PASSWORD = "bench-pass-phrase-long-enough-1"


def make_study(folder: Path, slices: int) -> int:
    import numpy as np
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    base = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    study, series = generate_uid(), generate_uid()
    for number in range(slices):
        ds = base.copy()
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.Rows = ds.Columns = 512
        ds.InstanceNumber = number + 1
        pixels = rng.normal(1000, 200, (512, 512)).clip(0, 4095).astype(np.uint16)
        ds.PixelData = pixels.tobytes()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds.save_as(folder / f"CT{number:04d}.dcm", enforce_file_format=True)
    return sum(p.stat().st_size for p in folder.iterdir())


def vault(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vault", *args], env=env, capture_output=True,
                          text=True, check=True)  # fmt: skip


def timed_storescu(endpoint: str, folder: Path, env: dict[str, str]) -> float:
    assert STORESCU, "storescu (DCMTK) is not installed"
    aet, rest = endpoint.split("@")
    host, port = rest.rsplit(":", 1)
    started = time.perf_counter()
    subprocess.run([STORESCU, "-aec", aet, host, port, "+sd", str(folder), "-q"], env=env,
                   check=True, capture_output=True)  # fmt: skip
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=600)
    parser.add_argument("--work", type=Path, default=Path("/var/tmp/vault-bench-pacs"))
    args = parser.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    folder = args.work / "study"
    size = make_study(folder, args.slices)
    env = dict(os.environ, VAULT_REPO=str(args.work / "repo"), VAULT_PASSWORD=PASSWORD,
               TCP_NODELAY="1")  # fmt: skip
    vault(env, "init", "--quiet")
    vault(env, "backup", str(folder), "--quiet")
    catalog_id = json.loads(vault(env, "studies", "--json").stdout)[0]["catalog_id"]
    fast = Path("/dev/shm") if Path("/dev/shm").is_dir() else args.work
    rows = []
    for kind in ("orthanc", "storescp"):
        receivers = []
        for who in ("vault", "storescu"):
            root = Path(fast) / f"vault-bench-pacs-{kind}-{who}"
            shutil.rmtree(root, ignore_errors=True)
            os.environ["TCP_NODELAY"] = "1"  # read by Orthanc's and storescp's DCMTK
            receivers.append(Orthanc(root).start() if kind == "orthanc" else StoreSCP(root).start())
        try:
            run = vault(env, "restore", "latest", "--study", catalog_id, "--to-pacs",
                        receivers[0].endpoint, "--json")  # fmt: skip
            sent = json.loads(run.stdout)
            dcmtk = timed_storescu(receivers[1].endpoint, folder, env)
        finally:
            for receiver in receivers:
                receiver.stop()
                shutil.rmtree(receiver.root, ignore_errors=True)
        ours = float(sent["send_seconds"])
        rows.append((kind, ours, dcmtk, sent["stored"]))
    print(f"one study: {args.slices} instances, {size / 1e6:.1f} MB")
    print("| into | vault (send) | storescu | vault vs storescu (time) |")
    print("|---|---|---|---|")
    for kind, ours, dcmtk, stored in rows:
        assert stored == args.slices
        print(f"| {kind} | {ours:.2f} s ({size / ours / 1e6:.0f} MB/s) | {dcmtk:.2f} s | "
              f"{ours / dcmtk:.2f}x |")  # fmt: skip


if __name__ == "__main__":
    main()
