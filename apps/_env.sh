# Shared set-up for apps/demo.sh and apps/test.sh: a virtual environment in .venv with tmseeg
# built and installed (editable, so edits to tmseeg/ take effect; ext/*.pyx changes rebuild).
# Sourced, not run. Re-running is cheap: the install is redone only when the build inputs change.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
VENV="${TMSEEG_VENV:-$ROOT/.venv}"
# the monitor (pyqtgraph + Qt) is part of every install; "test" adds what the tests use
EXTRAS="${1:-test}"

if [ ! -x "$VENV/bin/python" ]; then
    echo "[tmseeg] creating virtual environment $VENV"
    if ! "$PYTHON" -m venv "$VENV" 2>/dev/null; then
        # Debian/Ubuntu ship venv separately
        if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
            apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
            "$PYTHON" -m venv "$VENV"
        else
            echo "[tmseeg] python3 -m venv failed: install the python3-venv package" >&2
            exit 1
        fi
    fi
    "$VENV/bin/python" -m pip install -q --upgrade pip
fi

# Rebuild when anything that goes into the build changed (Cython kernels, build scripts).
STAMP="$VENV/.tmseeg-build-$EXTRAS"
HASH="$(cat setup.py pyproject.toml ext/*.pyx ext/*.pyi 2>/dev/null | sha256sum | cut -c1-16)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$HASH" ] \
        || ! ls tmseeg/_ext/*.so >/dev/null 2>&1; then
    # The install needs about 1.5 GB (MNE, SciPy, Qt, and the build's own copy of NumPy and
    # Cython); a full disk otherwise surfaces as a pip OSError deep inside a build step.
    FREE_MB="$(df -Pm "$(dirname "$VENV")" | awk 'NR==2 {print $4}')"
    if [ -n "$FREE_MB" ] && [ "$FREE_MB" -lt 2000 ]; then
        echo "[tmseeg] only ${FREE_MB} MB free on the disk of $VENV; the install needs about" \
             "2000 MB: free some space (old clones, /tmp) and run this again" >&2
        exit 1
    fi
    echo "[tmseeg] installing tmseeg[$EXTRAS] and compiling the Cython kernels"
    # no wheel cache: on a fresh machine it is never read again and doubles the disk used
    PIP_NO_CACHE_DIR=1 "$VENV/bin/python" -m pip install -q -e ".[$EXTRAS]"
    echo "$HASH" > "$STAMP"
fi
# Qt (the monitor, and its offscreen GUI tests) needs a few system libraries; a fresh Debian
# machine lacks them. Install the missing ones when we can (root + apt-get), quietly.
QT_LIBS="libgl1 libegl1 libxkbcommon0 libfontconfig1 libdbus-1-3 libglib2.0-0"
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null && command -v dpkg >/dev/null; then
    MISSING=""
    for pkg in $QT_LIBS; do
        dpkg -s "$pkg" >/dev/null 2>&1 || MISSING="$MISSING $pkg"
    done
    if [ -n "$MISSING" ]; then
        echo "[tmseeg] installing system libraries for Qt:$MISSING"
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            --no-install-recommends $MISSING) >/dev/null \
            || echo "[tmseeg] could not install$MISSING: the GUI tests may fail" >&2
    fi
fi
export PATH="$VENV/bin:$PATH"
