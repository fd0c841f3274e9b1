#!/usr/bin/env bash
# The one test command: virtual environment, install with the test extra, static checks, pytest.
# Extra arguments go to pytest, e.g. scripts/test.sh -k restore -x
source "$(dirname "$0")/_venv.sh"
cd "$ROOT"
scripts/check
python -m pytest "$@"
