#!/bin/bash
# Run the whole test suite (unit, fake-driver, real runc end to end). Sets up first.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null
exec /usr/bin/python3 -m pytest -q -p no:cacheprovider "$@" tests
