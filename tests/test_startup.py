"""What every command pays before it starts: the libraries only some commands need are not
loaded by the command line itself (each is megabytes resident, and a restore's peak memory is
measured against restic's)."""

from __future__ import annotations

import json
import subprocess
import sys

# Each: (module, why only some commands need it). zxcvbn's word lists are 13 MiB resident,
# tqdm 7 MiB, ssl/smtplib 6 MiB; boto3 and pydicom are larger still.
ON_DEMAND = {
    "zxcvbn": "setting a passphrase",
    "tqdm": "a progress bar on a terminal",
    "smtplib": "an alert by e-mail",
    "ssl": "an alert by e-mail, or S3",
    "urllib.request": "an alert by webhook",
    "boto3": "an S3 repository",
    "pydicom": "reading DICOM headers (backup, studies)",
    "pynetdicom": "speaking DICOM to a PACS",
}


def test_the_command_line_loads_no_library_a_command_may_not_need() -> None:
    probe = (
        "import json, sys; import vault.cli.main; "
        f"print(json.dumps([m for m in {sorted(ON_DEMAND)!r} if m in sys.modules]))"
    )
    loaded = json.loads(
        subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, check=True
        ).stdout
    )
    assert loaded == [], {m: ON_DEMAND[m] for m in loaded}
