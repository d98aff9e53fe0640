#!/usr/bin/env bash
# One command for a new machine: set up .venv, build, and run `tmseeg demo` (extra arguments
# are passed on, e.g. `bash apps/demo.sh --duration 60 --schedule train-10hz`).
source "$(dirname "$0")/_env.sh" test
exec tmseeg demo "$@"
