#!/usr/bin/env bash
# The one test command: virtual environment, install with the test extra, static checks, pytest.
# Extra arguments go to pytest, e.g. scripts/test.sh -k restore -x
source "$(dirname "$0")/_venv.sh"
cd "$ROOT"
# Real peers and servers the tests start on loopback: restic, borg and GNU time for the
# benchmark's smoke test, Orthanc and DCMTK (storescp) for the PACS tests, MariaDB and
# PostgreSQL for the database tests (the tests start their own servers in temporary
# directories). Installed where we can (root on Debian/Ubuntu); without one, the tests that
# need it are skipped, nothing else changes. The server packages would start their own
# services: policy-rc.d keeps them from starting.
need=()
command -v restic >/dev/null || need+=(restic)
command -v borg >/dev/null || need+=(borgbackup)
[ -x /usr/bin/time ] || need+=(time)
[ -x /usr/sbin/Orthanc ] || need+=(orthanc)
# Not `command -v`: pynetdicom puts Python apps named storescp/storescu into the venv.
[ -x /usr/bin/storescp ] || need+=(dcmtk)
[ -x /usr/sbin/mariadbd ] || need+=(mariadb-server)
command -v mariadb-dump >/dev/null || need+=(mariadb-client)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || need+=(postgresql)
# Chromium for the console's browser tests (Playwright drives Debian's: no browser download).
[ -x /usr/lib/chromium/chromium ] || command -v chromium >/dev/null || need+=(chromium)
if [ ${#need[@]} -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing ${need[*]} for the tests that use them" >&2
    blocker=/usr/sbin/policy-rc.d
    made_blocker=0
    if [ ! -e "$blocker" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$blocker" && chmod +x "$blocker" && made_blocker=1
    fi
    (DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null 2>&1 \
        || { apt-get update -qq >/dev/null 2>&1 \
             && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" \
                >/dev/null 2>&1; }) || echo "could not install them; their tests are skipped" >&2
    [ "$made_blocker" = 1 ] && rm -f "$blocker"
fi
scripts/check
python -m pytest "$@"
