#!/bin/bash
# Run the whole test suite (unit, fake-driver, real runc end to end). Sets up first.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null
# NVIDIA's 1.17.2 binaries for the compat suite (tests/compat skips, saying why, without)
eval "$(bash scripts/reference.sh || true)"
exec /usr/bin/python3 -m pytest -q -p no:cacheprovider "$@" tests
