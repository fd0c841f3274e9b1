#!/usr/bin/env bash
# A first run of vault on generated sample data: make a synthetic dental archive, create an
# encrypted repository, back up, back up again (nothing changed), find and restore one DICOM
# study by its UID, make a de-identified teaching copy, check the audit log and the data,
# run a restore drill and write its HTML evidence report, then run one scheduled backup the way
# the nightly service does, show the retention dry run, the status page and the evidence pack,
# and, when Orthanc is installed, send the study into a local Orthanc PACS.
# Everything lands in ./demo (delete it when done). No real patient data is involved.
#
# --console: at the end, start the web console on the demo repository (https://127.0.0.1:8443/
# by default, --listen HOST:PORT to change), printing the URL, a one-time admin password and
# the TOTP enrolment URI; it runs until Ctrl-C.
CONSOLE=0
LISTEN="127.0.0.1:8443"
while [ $# -gt 0 ]; do
    case "$1" in
        --console) CONSOLE=1 ;;
        --listen) LISTEN="${2:?--listen takes HOST:PORT}"; shift ;;
        -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "scripts/demo.sh: unknown option $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done
source "$(dirname "$0")/_venv.sh"
cd "$ROOT"
DEMO="$ROOT/demo"
rm -rf "$DEMO"
mkdir -p "$DEMO"
umask 077
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "Generating a synthetic dental imaging archive (fake patients DEMO^ALICE and DEMO^BOB)"
python scripts/make_sample_archive.py "$DEMO/imaging-share" --seed 7

export VAULT_REPO="$DEMO/repository"
# A real installation keeps this file readable only by the backup user (or uses
# --password-command to fetch it from a secrets manager).
head -c 24 /dev/urandom | base64 > "$DEMO/passphrase"
export VAULT_PASSWORD_FILE="$DEMO/passphrase"

step "vault init  (creates the encrypted repository and prints the recovery key once)"
vault init | tee "$DEMO/init.txt"

step "vault backup  (first, full backup)"
vault backup "$DEMO/imaging-share" --tag demo

step "vault backup  (nightly run: unchanged files are not read again)"
vault backup "$DEMO/imaging-share" --tag demo

step "vault snapshots"
vault snapshots

step "vault studies  (the DICOM studies found in the backup, from headers only)"
vault studies

STUDY_UID="$(vault studies --json --modality CT | python -c 'import json,sys; print(json.load(sys.stdin)[0]["study_instance_uid"])')"
step "vault restore latest --study <StudyInstanceUID>  (one CBCT study, verified against SHA-256)"
vault restore latest --study "$STUDY_UID" --target "$DEMO/restored"

STUDY_DIR="$(cd "$DEMO/imaging-share" && ls -d imaging/*/*_CT | head -n 1)"
step "Comparing the restored study with the original"
diff -r "$DEMO/imaging-share/$STUDY_DIR" "$DEMO/restored$DEMO/imaging-share/$STUDY_DIR" && echo "identical"

step "vault export --deidentify  (a teaching copy without patient identifiers in the headers)"
vault export --study "$STUDY_UID" --deidentify --target "$DEMO/teaching-copy"

step "vault audit --verify  (who restored or exported which study, hash-chained)"
vault audit --verify

step "vault check --read-data  (every pack read, every chunk authenticated)"
vault check --read-data

step "vault drill  (a timed, verified restore drill; its record is audit evidence)"
vault drill --operator "Demo Admin (IT)" --record-dir "$DEMO/drill-records" --policy-dir policies

step "vault drill report  (the evidence page for the compliance officer)"
vault drill report --format html --out "$DEMO/drill-report.html"

step "vault schedule run --once backup  (what the nightly service runs, with its policies)"
mkdir -p "$DEMO/policies"
cp policies/*.toml "$DEMO/policies/"
cat > "$DEMO/policies/backup.toml" <<EOF
[backup]
repository = "$VAULT_REPO"
password_file = "$VAULT_PASSWORD_FILE"
sources = ["$DEMO/imaging-share"]
tags = ["nightly"]
EOF
vault schedule run --once backup --policy-dir "$DEMO/policies"

step "vault forget --dry-run  (what the retention policy keeps, and why)"
vault forget --policy-dir "$DEMO/policies" --dry-run

step "vault status  (the one page: OK / WARN / FAIL)"
vault status --policy-dir "$DEMO/policies" || true

step "vault report  (the contingency evidence pack for the compliance officer)"
vault report --policy-dir "$DEMO/policies" --out "$DEMO/evidence.html"

if [ -x /usr/sbin/Orthanc ]; then
    step "vault restore --study … --to-pacs  (the study straight into a PACS: a local Orthanc)"
    read -r DICOM_PORT HTTP_PORT < <(python scripts/free_ports.py 2)
    mkdir -p "$DEMO/orthanc"
    cat > "$DEMO/orthanc/orthanc.json" <<EOF
{"Name": "vault-demo", "StorageDirectory": "$DEMO/orthanc/storage",
 "IndexDirectory": "$DEMO/orthanc/index", "DicomAet": "ORTHANC", "DicomPort": $DICOM_PORT,
 "HttpPort": $HTTP_PORT, "RemoteAccessAllowed": false, "AuthenticationEnabled": false,
 "DicomCheckCalledAet": true, "Plugins": []}
EOF
    /usr/sbin/Orthanc "$DEMO/orthanc/orthanc.json" >"$DEMO/orthanc/orthanc.log" 2>&1 &
    ORTHANC_PID=$!
    trap 'kill "$ORTHANC_PID" 2>/dev/null || true' EXIT
    for _ in $(seq 100); do  # Orthanc answers within a second or two of starting
        vault pacs echo "ORTHANC@127.0.0.1:$DICOM_PORT" >/dev/null 2>&1 && break
        sleep 0.2
    done
    vault pacs echo "ORTHANC@127.0.0.1:$DICOM_PORT"
    vault restore latest --study "$STUDY_UID" --to-pacs "ORTHANC@127.0.0.1:$DICOM_PORT"
    curl -s "http://127.0.0.1:$HTTP_PORT/statistics" | python -c 'import json, sys
stats = json.load(sys.stdin)
print("Orthanc now holds", stats["CountStudies"], "study,", stats["CountInstances"], "instances")'
    kill "$ORTHANC_PID" && wait "$ORTHANC_PID" 2>/dev/null || true
    trap - EXIT
else
    step "vault restore --to-pacs: skipped (Orthanc is not installed; scripts/test.sh installs it)"
fi

if [ -x /usr/sbin/mariadbd ]; then
    step "vault backup --database  (a practice database, streamed into the snapshot; restored; drilled)"
    python scripts/demo_database.py "$DEMO"
else
    step "vault backup --database: skipped (MariaDB is not installed; scripts/test.sh installs it)"
fi

if [ "$CONSOLE" = 1 ]; then
    step "vault serve  (the web console on the demo repository; Ctrl-C stops it)"
    mkdir -p "$DEMO/restores"
    cat > "$DEMO/console.toml" <<EOF
[console]
listen = "$LISTEN"
state_dir = "$DEMO/console-state"
restore_root = "$DEMO/restores"

[[repository]]
name = "demo"
url = "$VAULT_REPO"
password_file = "$VAULT_PASSWORD_FILE"
policy_dir = "$DEMO/policies"
EOF
    vault console user add demo-admin --role admin --config "$DEMO/console.toml"
    echo
    echo "Sign in as demo-admin with the one-time password above and a code from an"
    echo "authenticator app given the TOTP URI (none at hand: python scripts/totp_code.py URI)."
    echo "The browser warns of the self-signed certificate: compare its SHA-256 fingerprint"
    echo "with the one printed below, then accept it."
    exec vault serve --config "$DEMO/console.toml"
fi

step "Done"
echo "Repository: $VAULT_REPO"
echo "Drill report: $DEMO/drill-report.html, evidence pack: $DEMO/evidence.html (open in a browser)"
echo "Try: VAULT_REPO=$VAULT_REPO VAULT_PASSWORD_FILE=$VAULT_PASSWORD_FILE .venv/bin/vault ls latest"
