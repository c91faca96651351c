#!/bin/bash
# Fill .gpu-carry/ (git-ignored) with what tests/gpu/run.sh needs on a GPU machine that can
# download nothing. Run it on a Debian/Ubuntu machine that has runc and busybox-static
# installed and can reach PyPI:
#
#   tests/gpu/prepare.sh [--python-version 3.12]
#
#   .gpu-carry/bin/runc              this machine's runc (Debian's is dynamically linked ...)
#   .gpu-carry/lib/libseccomp.so.2   ... against this, which the GPU machine may lack
#   .gpu-carry/bin/busybox           a static busybox for the containers' rootfs
#   .gpu-carry/wheels/*.whl          cffi (CPython ABI wheel), pycparser, pyelftools
#
# python-prctl is not carried: PyPI has only its sdist (it needs libcap-dev to build), and
# nvhook does not import it (the C helper drops privileges itself).
set -euo pipefail

pyver=3.12
while [ $# -gt 0 ]; do
	case "$1" in
	--python-version) pyver=${2:?}; shift ;;
	-h | --help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "prepare.sh: unknown argument '$1'" >&2; exit 2 ;;
	esac
	shift
done

cd "$(dirname "$0")/../.."
carry=.gpu-carry
run() { echo "+ $*"; "$@"; }

runc=$(command -v runc || true)
[ -n "$runc" ] || { echo "prepare.sh: no runc here (apt-get install runc)" >&2; exit 1; }
busybox=""
for candidate in /bin/busybox /usr/bin/busybox "$(command -v busybox || true)"; do
	# ldd fails on a static binary: that is the one we want.
	if [ -x "$candidate" ] && ! ldd "$candidate" >/dev/null 2>&1; then
		busybox=$candidate
		break
	fi
done
[ -n "$busybox" ] || { echo "prepare.sh: no static busybox (apt-get install busybox-static)" >&2
	exit 1; }
seccomp=$(ldd "$runc" | awk '/libseccomp\.so\.2/ { print $3 }')

rm -rf "$carry"
mkdir -p "$carry/bin" "$carry/lib" "$carry/wheels"
run cp "$runc" "$carry/bin/runc"
run cp "$busybox" "$carry/bin/busybox"
if [ -n "$seccomp" ]; then
	run cp -L "$seccomp" "$carry/lib/libseccomp.so.2"
fi
# Versions pinned: the ones these scripts were tested with. cffi's wheel is per CPython
# version; pycparser and pyelftools are pure Python.
run python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version "$pyver" \
	--implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
	--platform manylinux2014_x86_64 -d "$carry/wheels" \
	cffi==1.17.1 pycparser==2.22 pyelftools==0.29

# The device tool carries only ignored paths; keep the folder out of git without editing
# the tracked .gitignore.
if ! git check-ignore -q "$carry" 2>/dev/null; then
	run sh -c "echo '/$carry/' >> .git/info/exclude"
fi
run ls -l "$carry/bin" "$carry/lib" "$carry/wheels"
du -sh "$carry"
