#!/bin/bash
# Run the whole test suite (unit, fake-driver, real runc end to end). Sets up first, then
# fails fast on the habits the project holds itself to, before any test runs: ruff and
# mypy --strict over nvhook/ (pyproject.toml configures both) and the C helper built with
# -Wall -Wextra -Werror (csrc/build.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null
# NVIDIA's 1.17.2 binaries for the compat suite (tests/compat skips, saying why, without)
eval "$(bash scripts/reference.sh || true)"
step() { echo "test.sh: $*" >&2; }
step "ruff check nvhook"
/usr/bin/python3 -m ruff check --no-cache nvhook
step "mypy --strict nvhook"
/usr/bin/python3 -m mypy --strict nvhook
step "sh csrc/build.sh (-Werror)"
helper_dir=$(mktemp -d)
if ! sh csrc/build.sh "$helper_dir/nvhook-helper"; then
  rm -rf "$helper_dir"
  exit 1
fi
rm -rf "$helper_dir"
step "pytest"
exec /usr/bin/python3 -m pytest -q -p no:cacheprovider "$@" tests
