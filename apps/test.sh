#!/usr/bin/env bash
# One command for a new machine: set up .venv, build, and run the whole test suite
# (extra arguments go to pytest, e.g. `bash apps/test.sh -k inlet`).
source "$(dirname "$0")/_env.sh" test
export QT_QPA_PLATFORM=offscreen MPLBACKEND=Agg
exec python -m pytest -q -p no:cacheprovider --timeout=600 "$@"
