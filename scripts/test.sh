#!/usr/bin/env bash
# The one test command: virtual environment, install with the test extra, static checks, pytest.
# Extra arguments go to pytest, e.g. scripts/test.sh -k restore -x
source "$(dirname "$0")/_venv.sh"
cd "$ROOT"
# The benchmark's smoke test runs the real restic and borg, measured with GNU time; install them
# where we can (root on Debian/Ubuntu). Without them that one test is skipped, nothing else
# changes.
if { ! command -v restic >/dev/null || ! command -v borg >/dev/null || [ ! -x /usr/bin/time ]; } \
    && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing restic, borgbackup and time for the benchmark smoke test" >&2
    (DEBIAN_FRONTEND=noninteractive apt-get install -y -qq restic borgbackup time >/dev/null 2>&1 \
        || { apt-get update -qq >/dev/null 2>&1 \
             && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq restic borgbackup time \
                >/dev/null 2>&1; }) || echo "could not install them; the smoke test is skipped" >&2
fi
scripts/check
python -m pytest "$@"
