#!/usr/bin/env bash
# Regenerate the measured blocks of benchmarks/RESULTS.md, one run per block (about 1.5 h on 2 cores).
# Run it on a quiet machine; arguments go to `python -m benchmarks.refresh` (--dry-run, --sections, --all).
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python}" -m benchmarks.refresh "$@"
