#!/bin/bash
# Build the nvhook .deb from the working tree with Debian's own tools (offline once the
# build dependencies below are installed; as root it installs the missing ones first):
#   bash packaging/build-deb.sh [--lintian] OUTDIR
# prints the path of the .deb on stdout (the build log goes to stderr). --lintian also
# runs lintian on it and fails on any error-level tag.
#
# Why dpkg-buildpackage and not `dpkg-deb --build` of a staged tree: debhelper and
# dh-python do the parts that are easy to get wrong by hand — byte-compiling in postinst
# and cleaning in prerm for whichever python3 the target has, conffile marking, the
# shared-library dependency of the helper, stripping into a -dbgsym package, file modes
# and reproducible timestamps. Nothing in debian/ names a Python version, so the same
# directory serves Debian 12 (python3.11) and Ubuntu 24.04 (python3.12).
set -euo pipefail

usage() { echo "usage: bash packaging/build-deb.sh [--lintian] OUTDIR" >&2; exit 2; }
run_lintian=0
outdir=""
for arg in "$@"; do
  case "$arg" in
    --lintian) run_lintian=1 ;;
    -*) usage ;;
    *) [ -z "$outdir" ] || usage; outdir=$arg ;;
  esac
done
[ -n "$outdir" ] || usage

repo=$(cd "$(dirname "$0")/.." && pwd)

for f in csrc/build.sh pyproject.toml nvhook/__init__.py packaging/debian/changelog; do
  if [ ! -e "$repo/$f" ]; then
    echo "build-deb: $repo/$f is missing; fix: run this from a complete nvhook tree" >&2
    exit 1
  fi
done

# One version everywhere: the changelog's (less a Debian revision) must be nvhook's own.
deb_version=$(sed -n '1s/^nvhook (\([^)]*\)).*/\1/p' "$repo/packaging/debian/changelog")
py_version=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$repo/nvhook/__init__.py")
if [ "${deb_version%-*}" != "$py_version" ]; then
  echo "build-deb: packaging/debian/changelog says $deb_version but nvhook/__init__.py says" \
       "$py_version; fix: add a changelog entry with dch -v $py_version (or change the other)" >&2
  exit 1
fi

# What debian/control's Build-Depends asks for, plus what dpkg-buildpackage itself and
# the C helper need (build-essential is implied by Debian policy, so not listed there).
BUILD_DEPS=(
  dpkg-dev build-essential
  debhelper dh-python pybuild-plugin-pyproject python3-all python3-setuptools python3-wheel
)
if ((run_lintian)); then BUILD_DEPS+=(lintian); fi
missing=()
for p in "${BUILD_DEPS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" != 0 ]; then
    echo "build-deb: missing build dependencies ${missing[*]}; fix: run as root, or" \
         "apt-get install ${missing[*]}" >&2
    exit 1
  fi
  echo "build-deb: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >&2
  apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
fi

mkdir -p "$outdir"
outdir=$(cd "$outdir" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/nvhook-deb.XXXXXX")
trap 'rm -rf "$work"' EXIT
src="$work/nvhook-$py_version"
mkdir "$src"

# Only what the package is made of: no .git, caches, tests or earlier build outputs.
parts=(pyproject.toml nvhook csrc packaging)
for optional in README.md LICENSE docs; do
  [ ! -e "$repo/$optional" ] || parts+=("$optional")
done
(cd "$repo" && tar -c --exclude=__pycache__ --exclude='*.pyc' "${parts[@]}") | tar -x -C "$src"
mv "$src/packaging/debian" "$src/debian"

# The system PATH only: pybuild runs `python3.X` from PATH, and a pyenv or a venv ahead of
# /usr/bin would build against an interpreter the package does not depend on.
(cd "$src" && PATH=/usr/sbin:/usr/bin:/sbin:/bin dpkg-buildpackage -us -uc -b) >&2

arch=$(dpkg-architecture -q DEB_HOST_ARCH)
deb="nvhook_${deb_version}_${arch}.deb"
if [ ! -f "$work/$deb" ]; then
  echo "build-deb: dpkg-buildpackage made no $deb; fix: read the build log above" >&2
  exit 1
fi
for f in "$work"/*.deb "$work"/*.ddeb "$work"/*.buildinfo "$work"/*.changes; do
  if [ -e "$f" ]; then cp "$f" "$outdir/"; fi
done

if ((run_lintian)); then
  # Error-level tags fail; any other tag is printed (there are none on Debian 12).
  lintian --fail-on error --display-info "$outdir/$deb" >&2
  echo "build-deb: lintian reports no errors for $deb" >&2
fi
echo "$outdir/$deb"
