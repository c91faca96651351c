#!/bin/bash
# Unpack NVIDIA's container toolkit 1.17.2 binaries (the reference the compat suite,
# tests/compat, compares nvhook with) and print the line that points the suite at them:
#     eval "$(bash scripts/reference.sh)"      # → export NVHOOK_REFERENCE=/opt/nvhook-reference
# Prints nothing (and the suite skips, saying why) when the tarball is not there.
# The binaries are never copied into the project: they are unpacked at test time only.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
tarball=${NVHOOK_REFERENCE_TARBALL:-$here/../shared/reference/nvidia-1.17.2/nvidia-1.17.2.tar.gz}
dest=${NVHOOK_REFERENCE_DIR:-/opt/nvhook-reference}
[ -f "$tarball" ] || exit 0
if [ ! -x "$dest/bin/nvidia-container-runtime-hook" ] || [ "$tarball" -nt "$dest/.unpacked" ]; then
	rm -rf "$dest.tmp"
	mkdir -p "$dest.tmp"
	tar -xzf "$tarball" -C "$dest.tmp"
	touch "$dest.tmp/.unpacked"
	rm -rf "$dest"
	mv "$dest.tmp" "$dest"
fi
echo "export NVHOOK_REFERENCE=$dest"
