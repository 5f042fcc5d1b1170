#!/usr/bin/env bash
# Run the whole test suite: ./test.sh [pytest arguments]
# Installs what is missing first (as build.sh does), then runs unit, integration and VM
# tests. VM tests boot QEMU under TCG and reuse the image cache that build.sh fills.
set -euo pipefail
cd "$(dirname "$0")"
./build.sh --deps-only
export PATH="$PWD/.venv/bin:$PATH"
exec .venv/bin/python -m pytest -ra --durations=25 "$@"
