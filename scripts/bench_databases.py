#!/usr/bin/env python3
"""How a practice database's nightly dumps deduplicate, and how long a drill takes to prove one
loads.

A MariaDB server (started like the tests' servers, on loopback) holds a practice-management
database shaped like Open Dental's busiest tables: patients, appointments, procedures, an image
index and the security log, with five years of history. Each "night" adds a day of work (new
appointments, procedures, images, log lines), updates some rows (balances, appointment
states) and deletes a few, then backs the database up with `vault backup --database` and, in
the same run, with `mariadb-dump | restic backup --stdin` (restic's way of taking a dump).
Reported per night: the dump's size, and what each repository grew by.

Then the last night's dump is loaded into a new database (`vault restore --database --into`)
and proved by `vault drill --database` on a throwaway server: the load time is the drill's.

    scripts/bench_databases.py [--nights 7] [--scale 1.0] [--out result.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import databases  # noqa: E402
from tests.databases import PracticeServer  # noqa: E402

PASSWORD = "bench-pass-phrase-long-enough-1"

SCHEMA = """
CREATE TABLE patient (PatNum INT AUTO_INCREMENT PRIMARY KEY, LName VARCHAR(100),
  FName VARCHAR(100), Birthdate DATE, Address VARCHAR(200), HmPhone VARCHAR(30),
  Email VARCHAR(100), EstBalance DECIMAL(10,2), BalTotal DECIMAL(10,2), DateTStamp TIMESTAMP);
CREATE TABLE appointment (AptNum INT AUTO_INCREMENT PRIMARY KEY, PatNum INT, AptStatus TINYINT,
  AptDateTime DATETIME, Pattern VARCHAR(100), Note TEXT, ProvNum INT, DateTStamp TIMESTAMP);
CREATE TABLE procedurelog (ProcNum INT AUTO_INCREMENT PRIMARY KEY, PatNum INT, AptNum INT,
  ProcDate DATE, ProcFee DECIMAL(10,2), CodeNum INT, ToothNum VARCHAR(10), Surf VARCHAR(10),
  ProcStatus TINYINT, DateTStamp TIMESTAMP);
CREATE TABLE document (DocNum INT AUTO_INCREMENT PRIMARY KEY, PatNum INT, FileName VARCHAR(255),
  DateCreated DATETIME, DocCategory INT, Description VARCHAR(255), ImgType TINYINT);
CREATE TABLE securitylog (SecurityLogNum BIGINT AUTO_INCREMENT PRIMARY KEY, PermType INT,
  UserNum INT, LogDateTime DATETIME, LogText TEXT, PatNum INT, CompName VARCHAR(100));
"""


def _day(day: int, scale: float) -> str:
    """One day of a practice's work (`day` days after 2021-12-01), as SQL."""
    appointments, procedures, images, log = (int(n * scale) for n in (60, 150, 40, 2500))
    return f"""
INSERT INTO appointment (PatNum, AptStatus, AptDateTime, Pattern, Note, ProvNum)
  SELECT 1 + (seq * 7919 + {day}) % (SELECT MAX(PatNum) FROM patient), 1,
    DATE_ADD('2021-12-01 08:00', INTERVAL {day} * 1440 + seq * 8 MINUTE), 'XXXX//XXXX',
    CONCAT('Recall, ', ELT(1 + seq % 4, 'prophy', 'exam and BWX', 'crown prep', 'implant consult')),
    1 + seq % 6 FROM seq_1_to_{appointments};
INSERT INTO procedurelog (PatNum, AptNum, ProcDate, ProcFee, CodeNum, ToothNum, Surf, ProcStatus)
  SELECT 1 + (seq * 104729 + {day}) % (SELECT MAX(PatNum) FROM patient),
    (SELECT MAX(AptNum) FROM appointment) - seq % {appointments},
    DATE_ADD('2021-12-01', INTERVAL {day} DAY), 40 + seq % 900, 1 + seq % 300,
    1 + seq % 32, ELT(1 + seq % 5, 'M', 'O', 'D', 'B', 'MOD'), 2 FROM seq_1_to_{procedures};
INSERT INTO document (PatNum, FileName, DateCreated, DocCategory, Description, ImgType)
  SELECT 1 + (seq * 15485863 + {day}) % (SELECT MAX(PatNum) FROM patient),
    CONCAT(MD5(CONCAT({day}, '-', seq)), '.dcm'),
    DATE_ADD('2021-12-01 09:00', INTERVAL {day} * 1440 + seq * 11 MINUTE), 1 + seq % 8,
    ELT(1 + seq % 4, 'BWX', 'PA', 'Pano', 'CBCT'), 2 FROM seq_1_to_{images};
INSERT INTO securitylog (PermType, UserNum, LogDateTime, LogText, PatNum, CompName)
  SELECT 1 + seq % 120, 1 + seq % 12,
    DATE_ADD('2021-12-01 07:00', INTERVAL {day} * 86400 + seq * 17 SECOND),
    CONCAT('Patient record viewed from module ', ELT(1 + seq % 5, 'Chart', 'Account',
      'Imaging', 'Appointments', 'Family'), ', session ', MD5(CONCAT({day}, seq))),
    1 + (seq * 31 + {day}) % (SELECT MAX(PatNum) FROM patient), CONCAT('OP', 1 + seq % 9)
  FROM seq_1_to_{log};
"""


def _night(day: int, scale: float) -> str:
    """A day's work plus the updates and deletes a day brings."""
    return _day(day, scale) + f"""
UPDATE patient SET EstBalance = EstBalance + 25, BalTotal = BalTotal + 25
  WHERE PatNum % 97 = {day % 97};
UPDATE appointment SET AptStatus = 2 WHERE AptStatus = 1
  AND AptDateTime < DATE_ADD('2021-12-01', INTERVAL {day} DAY) AND AptNum % 5 = 0
  AND AptNum > (SELECT MAX(AptNum) FROM appointment) - 2000;
DELETE FROM appointment WHERE AptNum % 211 = {day % 211}
  AND AptNum > (SELECT MAX(AptNum) FROM appointment) - 2000;
"""


def _history(db: PracticeServer, name: str, days: int, scale: float) -> None:
    patients = int(12_000 * scale)
    db.sql(name, SCHEMA)
    db.sql(
        name,
        "INSERT INTO patient (LName, FName, Birthdate, Address, HmPhone, Email, EstBalance, "
        "BalTotal) SELECT CONCAT('Last', seq), CONCAT('First', seq), "
        "DATE_ADD('1940-01-01', INTERVAL seq * 3 DAY), CONCAT(seq, ' Main Street, Springfield'), "
        f"CONCAT('555-', LPAD(seq, 7, '0')), CONCAT('p', seq, '@example.org'), 0, 0 "
        f"FROM seq_1_to_{patients}",
    )
    batch = 30
    for start in range(0, days, batch):
        db.sql(name, "".join(_day(d, scale) for d in range(start, min(days, start + batch))))


def _du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _run(cmd: list[str], env: dict[str, str], **kw: Any) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, **kw)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:3])} failed: {done.stderr.strip()[-400:]}")
    return done


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nights", type=int, default=7)
    parser.add_argument("--scale", type=float, default=1.0, help="rows per day and patients")
    parser.add_argument("--history-days", type=int, default=5 * 365)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="vault-bench-db-"))
    db = databases.start("mariadb", work)
    results: dict[str, Any] = {"nights": []}
    try:
        name = "opendental"
        db.create(name)
        t0 = time.monotonic()
        _history(db, name, args.history_days, args.scale)
        results["generate_seconds"] = round(time.monotonic() - t0, 1)
        secret = work / "passphrase"
        secret.write_text(PASSWORD + "\n")
        secret.chmod(0o600)
        env = {
            **os.environ,
            "VAULT_REPO": str(work / "vault"),
            "VAULT_PASSWORD_FILE": str(secret),
            "RESTIC_REPOSITORY": str(work / "restic"),
            "RESTIC_PASSWORD_FILE": str(secret),
        }
        _run([sys.executable, "-m", "vault", "init"], env)
        _run(["restic", "init", "-q"], env)
        url = db.url(name)
        src = db.app(name)
        dump_cmd = [shutil.which("mariadb-dump") or "mysqldump", "--protocol=TCP",
                    "--host=127.0.0.1", f"--port={src.port}", f"--user={src.user}",
                    "--single-transaction", "--routines", "--triggers", "--hex-blob",
                    name]  # fmt: skip
        restic_env = {**env, "MYSQL_PWD": db.password}  # restic's side only: a bench, not vault
        for night in range(args.nights + 1):
            if night:
                db.sql(name, _night(args.history_days + night, args.scale))
            before_v, before_r = _du(work / "vault"), _du(work / "restic")
            t = time.monotonic()
            out = _run([sys.executable, "-m", "vault", "backup", "--database", url, "--json"], env)
            vault_s = time.monotonic() - t
            doc = json.loads(out.stdout)
            t = time.monotonic()
            dump = subprocess.Popen(dump_cmd, stdout=subprocess.PIPE, env=restic_env)
            _run(["restic", "backup", "-q", "--stdin", "--stdin-filename", f"{name}.sql"],
                 env, stdin=dump.stdout)  # fmt: skip
            dump.wait()
            restic_s = time.monotonic() - t
            row = {
                "night": night,
                "dump_bytes": doc["databases"][0]["bytes"],
                "vault_added_bytes": doc["stats"]["bytes_added"],
                "vault_repo_growth_bytes": _du(work / "vault") - before_v,
                "restic_repo_growth_bytes": _du(work / "restic") - before_r,
                "vault_seconds": round(vault_s, 2),
                "restic_seconds": round(restic_s, 2),
            }
            results["nights"].append(row)
            print(json.dumps(row), flush=True)
        t = time.monotonic()
        _run([sys.executable, "-m", "vault", "restore", "latest", "--database", name, "--into",
              db.url("restored")], env)  # fmt: skip
        results["restore_into_seconds"] = round(time.monotonic() - t, 2)
        drill = json.loads(
            _run([sys.executable, "-m", "vault", "drill", "--database", "--json"], env).stdout
        )
        check = drill["databases"][0]
        results["drill"] = {k: check.get(k) for k in ("result", "load_seconds", "seconds",
                                                      "tables", "rows", "bytes")}  # fmt: skip
        print(json.dumps({"restore_into_seconds": results["restore_into_seconds"],
                          "drill": results["drill"]}), flush=True)  # fmt: skip
    finally:
        db.stop()
        shutil.rmtree(work, ignore_errors=True)
    nights = results["nights"][1:]
    if nights:
        mean = lambda key: sum(n[key] for n in nights) / len(nights)  # noqa: E731
        print(
            f"per night: dump {mean('dump_bytes') / 1e6:.1f} MB; vault adds "
            f"{mean('vault_repo_growth_bytes') / 1e6:.2f} MB stored "
            f"({100 * mean('vault_repo_growth_bytes') / mean('dump_bytes'):.1f} % of the dump), "
            f"restic {mean('restic_repo_growth_bytes') / 1e6:.2f} MB "
            f"({100 * mean('restic_repo_growth_bytes') / mean('dump_bytes'):.1f} %)"
        )
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
