#!/bin/sh
# Build nvhook's front door (csrc/front/):
#   sh csrc/build-front.sh OUTPUT [PYDIR]
# PYDIR: where the Python launchers it hands over to live (default /usr/libexec/nvhook/py).
# CC, CFLAGS and LDFLAGS are honoured. Linked static-pie: engines execute it for every
# container and runtime command, and without the dynamic loader it starts about 1 ms sooner
# on a small host; a libc without a static archive gets a dynamic build instead.
set -eu
out=${1:?usage: sh csrc/build-front.sh OUTPUT [PYDIR]}
pydir=${2:-/usr/libexec/nvhook/py}
here=$(dirname "$0")
mkdir -p "$(dirname "$out")"
build() {
	# shellcheck disable=SC2086 # the flag variables are word lists
	${CC:-cc} -std=gnu11 -O2 -Wall -Wextra -Werror -fstack-protector-strong -fPIE \
	  -DNVHOOK_PYDIR="\"$pydir\"" ${CFLAGS:-} -o "$out" \
	  "$here/front/front.c" "$here/front/scan.c" ${LDFLAGS:-} "$@"
}
if ! build -static-pie 2>/dev/null; then
	echo "build-front: no static libc here; linking dynamically" >&2
	build -pie
fi
