#!/usr/bin/env python3
"""The demo's practice database: a small MariaDB server started in the demo directory (as the
tests start theirs), a fake practice database in it, then `vault backup --database`, `vault
restore --database --into` and `vault drill --database` against it. The server is stopped and
its data removed at the end. Run by scripts/demo.sh when mariadb-server is installed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import databases  # noqa: E402

DEMO_DATA = """
CREATE TABLE patient (PatNum INT AUTO_INCREMENT PRIMARY KEY, LName VARCHAR(100),
  FName VARCHAR(100), Birthdate DATE);
CREATE TABLE appointment (AptNum INT AUTO_INCREMENT PRIMARY KEY, PatNum INT,
  AptDateTime DATETIME, Note VARCHAR(200));
INSERT INTO patient (LName, FName, Birthdate) VALUES ('DEMO', 'ALICE', '1980-01-01'),
  ('DEMO', 'BOB', '1975-06-15');
INSERT INTO appointment (PatNum, AptDateTime, Note)
  SELECT 1 + seq % 2, DATE_ADD('2026-01-05 08:00', INTERVAL seq HOUR), 'recall (demo)'
  FROM seq_1_to_500;
"""


def vault(*args: str) -> None:
    print("$ vault " + " ".join(a if "://" not in a else a.split("?")[0] + "?..." for a in args))
    done = subprocess.run([sys.executable, "-m", "vault", *args], check=False)
    if done.returncode != 0:
        raise SystemExit(done.returncode)


def main() -> int:
    demo = Path(sys.argv[1])
    db = databases.start("mariadb", demo)
    try:
        db.create("opendental")
        db.sql("opendental", DEMO_DATA)
        policy = demo / "database-policy"
        policy.mkdir(exist_ok=True)
        (policy / "drill.toml").write_text(
            '[database]\nqueries = ["SELECT PatNum FROM patient LIMIT 1"]\n'
            "min_rows = { appointment = 500 }\n"
        )
        vault("backup", str(demo / "imaging-share"), "--database", db.url("opendental"))
        vault("restore", "latest", "--database", "opendental", "--into",
              db.url("opendental_restored"))  # fmt: skip
        rows = db.sql("opendental_restored", "SELECT COUNT(*) FROM appointment")[0][0]
        print(f"opendental_restored holds {rows} appointments")
        vault("drill", "--database", "--sample", "1", "--policy-dir", str(policy),
              "--record-dir", str(demo / "drill-records"))  # fmt: skip
    finally:
        db.stop()
        os.remove(db.password_file)
    return 0


if __name__ == "__main__":
    sys.exit(main())
