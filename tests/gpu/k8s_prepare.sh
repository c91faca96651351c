#!/bin/bash
# Fill .gpucarry/ (git-ignored through .git/info/exclude) with what tests/gpu/k8s_docker.sh
# needs on an Ubuntu 24.04 GPU machine that has nothing installed and cannot download. Run
# it here (Debian 12, apt and PyPI reachable), in the repository the GPU run will copy:
#
#   tests/gpu/k8s_prepare.sh [--dest DIR] [--nvidia TARBALL]   (default: <repo>/.gpucarry)
#
# DIR at the top of a git checkout (e.g. /work/main/.gpucarry) is added to that
# repository's .git/info/exclude, which every worktree of it shares.
#
#   debs/   Debian 12's containerd, runc, docker.io (`apt-get download`), slimmed: what the
#           checks do not run is dropped (containerd-shim v1, dnet, ovrouter, docker-proxy,
#           docs, init scripts) and the rest re-packed with xz -9, so that
#           `dpkg-deb -x` unpacks them there; libdevmapper1.02.1 (dockerd links it, Ubuntu
#           lacks it) and busybox-static as they are
#   wheels/ grpcio and protobuf (the CRI client), cffi, pycparser, pyelftools (nvhook), for
#           CPython 3.12 manylinux x86_64 (`pip download --only-binary=:all:`)
#   cri.desc  tests/cri/cri.proto compiled to a descriptor set (no grpcio-tools there)
#   nvidia-1.17.2.tar.gz  NVIDIA's toolkit 1.17.2 binaries, as they are (the tarball of
#           ../shared/reference/nvidia-1.17.2 by default): k8s_docker.sh --timing runs
#           them next to nvhook's, unpacked under its work dir; never part of the tree.
#           Left out (with a warning) when the tarball is not there.
#
# The device tool carries at most 64 MiB with the working tree; this stays under 62 MiB
# or fails.
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
dest=$repo/.gpucarry
nvidia=$repo/../shared/reference/nvidia-1.17.2/nvidia-1.17.2.tar.gz
while [ $# -gt 0 ]; do
	case "$1" in
	--dest) dest=${2:?}; shift ;;
	--nvidia) nvidia=${2:?}; shift ;;
	-h | --help) sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "k8s_prepare.sh: unknown argument '$1'" >&2; exit 2 ;;
	esac
	shift
done
run() { echo "+ $*" >&2; "$@"; }

scratch=$(mktemp -d /tmp/nvhook-k8s-prepare.XXXXXX)
trap 'rm -rf "$scratch"' EXIT
rm -rf "$dest"
mkdir -p "$dest/debs" "$dest/wheels"

(cd "$scratch" && run apt-get download containerd runc docker.io libdevmapper1.02.1 \
	busybox-static)
for deb in "$scratch"/*.deb; do
	pkg=$(dpkg-deb -f "$deb" Package)
	case "$pkg" in
	containerd | docker.io)
		tree=$scratch/tree-$pkg
		run dpkg-deb -R "$deb" "$tree"
		rm -rf "$tree"/usr/share "$tree"/etc "$tree"/lib/systemd "$tree"/usr/lib/systemd
		rm -f "$tree"/usr/bin/containerd-shim "$tree"/usr/bin/containerd-shim-runc-v1 \
			"$tree"/usr/bin/containerd-stress "$tree"/usr/bin/dnet "$tree"/usr/bin/ovrouter \
			"$tree"/usr/sbin/docker-proxy
		# the maintainer scripts would start services; only `dpkg-deb -x` is used there
		rm -f "$tree"/DEBIAN/{md5sums,conffiles,preinst,postinst,prerm,postrm}
		run dpkg-deb -Zxz -z9 --build "$tree" "$dest/debs/$pkg.deb" >/dev/null
		;;
	*) run cp "$deb" "$dest/debs/$pkg.deb" ;;
	esac
done

# Pinned: the versions these scripts were tested with.
run python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
	--implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
	--platform manylinux2014_x86_64 -d "$dest/wheels" \
	grpcio==1.68.1 protobuf==5.28.3 cffi==1.17.1 pycparser==2.22 pyelftools==0.29

(cd "$repo" && run /usr/bin/python3 -c "import sys; from pathlib import Path
from tests.cri.client import compile_descriptors
compile_descriptors(Path(sys.argv[1]))" "$dest/cri.desc")

if [ -f "$nvidia" ]; then
	run cp "$nvidia" "$dest/nvidia-1.17.2.tar.gz"
else
	echo "k8s_prepare.sh: WARNING: no $nvidia: k8s_docker.sh --timing will lack NVIDIA's" >&2
fi

# The device tool carries only ignored paths: keep the folder out of git (for every
# worktree of this repository) without touching the tracked .gitignore.
name=$(basename "$dest")
parent=$(cd "$(dirname "$dest")" && pwd)
if top=$(git -C "$parent" rev-parse --show-toplevel 2>/dev/null) && [ "$top" = "$parent" ] \
	&& ! git -C "$parent" check-ignore -q "$name"; then
	exclude=$(git -C "$parent" rev-parse --git-common-dir)/info/exclude
	case "$exclude" in /*) ;; *) exclude=$parent/$exclude ;; esac
	run sh -c "echo '/$name/' >> '$exclude'"
fi
ls -l "$dest/debs" "$dest/wheels" "$dest/cri.desc"
bytes=$(du -sb "$dest" | cut -f1)
echo "k8s_prepare.sh: $dest holds $((bytes / 1048576)) MiB"
if [ "$bytes" -ge $((62 * 1048576)) ]; then
	echo "k8s_prepare.sh: FAIL: over 62 MiB" >&2
	exit 1
fi
