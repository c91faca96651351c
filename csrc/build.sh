#!/bin/sh
# Build nvhook-helper: sh csrc/build.sh OUTPUT (no external libraries; any cwd).
set -eu
if [ $# -ne 1 ]; then
	echo "usage: sh csrc/build.sh OUTPUT" >&2
	exit 2
fi
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$(dirname "$1")"
exec "${CC:-cc}" -O2 -Wall -Wextra -Werror -D_GNU_SOURCE -o "$1" "$here"/*.c
