#!/usr/bin/env bash
# One command for a new machine: set up .venv, build, and run the whole test suite
# (extra arguments go to pytest, e.g. `bash apps/test.sh -k inlet`).
source "$(dirname "$0")/_env.sh" test
export QT_QPA_PLATFORM=offscreen MPLBACKEND=Agg
# Two worker processes, a test file each at a time (module fixtures are built once): the
# real-time tests mostly wait on their streams, so the other core runs the offline ones
# (828 s -> 498 s here). `-n 0` runs everything in this process (e.g. with -s to see prints).
exec python -m pytest -q -p no:cacheprovider --timeout=600 -n "${TMSEEG_TEST_WORKERS:-2}" \
    --dist loadfile "$@"
