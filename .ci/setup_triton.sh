#!/usr/bin/env bash
# Make .venv-triton: the venv that runs `python -m engine.serve` (Triton bundled in nvidia-pytriton).
#
# It must be made from Debian's /usr/bin/python3 (3.11.2 + python3-venv): with the pyenv Python 3.11.7
# Triton's Python-backend stub fails to start ("'_thread.RLock' object has no attribute
# '_recursion_count'"). Idempotent: an existing venv that already imports pytriton and engine is kept.
# Usage (repository root): bash .ci/setup_triton.sh   (PYTHON=/path/to/python3 to override)
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
PY=${PYTHON:-/usr/bin/python3}
VENV=.venv-triton

if ! "$PY" -c "import ensurepip, venv" 2>/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    else
        echo "setup_triton: $PY has no venv/ensurepip; install Debian's python3-venv (apt-get install python3-venv)" >&2
        exit 2
    fi
fi

# pip, quiet, without the "Location ... is ignored" lines of this machine's pip config (pipefail keeps its status)
pipq() { "$VENV/bin/python" -m pip -q "$@" 2>&1 | { grep -v "^WARNING: Location 'file:" || true; }; }

if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import pytriton, cv2, onnxruntime, yaml" 2>/dev/null; then
    pipq install --no-deps -e .   # point the editable install at this checkout
    echo "setup_triton: $VENV kept (already has pytriton); $(( $(date +%s) - start ))s"
    exit 0
fi

rm -rf "$VENV"
"$PY" -m venv "$VENV"
pipq install --upgrade pip
# the project's runtime + the `serve` extra (nvidia-pytriton, which brings tritonclient and Triton)
pipq install -e ".[serve]"
"$VENV/bin/python" -c "import pytriton, engine; print('setup_triton: pytriton', __import__('importlib.metadata').metadata.version('nvidia-pytriton'))"
echo "setup_triton: made $VENV in $(( $(date +%s) - start ))s"
