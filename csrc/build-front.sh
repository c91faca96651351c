#!/bin/sh
# Build nvhook's front door (csrc/front/):
#   sh csrc/build-front.sh OUTPUT [PYDIR]
# PYDIR: where the Python launchers it hands over to live (default /usr/libexec/nvhook/py).
# CC and CFLAGS/LDFLAGS (e.g. dpkg-buildflags') are honoured.
set -eu
out=${1:?usage: sh csrc/build-front.sh OUTPUT [PYDIR]}
pydir=${2:-/usr/libexec/nvhook/py}
here=$(dirname "$0")
mkdir -p "$(dirname "$out")"
# shellcheck disable=SC2086
${CC:-cc} -std=gnu11 -O2 -Wall -Wextra -Werror -D_FORTIFY_SOURCE=2 -fstack-protector-strong \
  -fPIE -pie -DNVHOOK_PYDIR="\"$pydir\"" ${CFLAGS:-} -o "$out" \
  "$here/front/front.c" "$here/front/scan.c" ${LDFLAGS:-}
