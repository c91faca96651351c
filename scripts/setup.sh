#!/bin/bash
# Set nvhook up on a Debian 12 / Ubuntu 24.04 host, as root: the packages it and its tests
# use, the C helper (/usr/libexec/nvhook/nvhook-helper) and the launchers
# (/usr/local/bin/nvhook, /usr/local/bin/nvidia-container-runtime-hook).
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  python3 python3-cffi python3-pyelftools python3-pyroute2 python3-prctl               # nvhook itself
  gcc libc6-dev                                                           # the C helper
  python3-pytest python3-hypothesis python3-yaml gcc-multilib busybox-static runc clang libclang-rt-14-dev  # tests, demo, fuzzing
  docker.io containerd podman crun conmon                                 # engine tests
  util-linux procps kmod jq ca-certificates
  dpkg-dev build-essential debhelper dh-python pybuild-plugin-pyproject              # the .deb
  python3-all python3-setuptools python3-wheel lintian
)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # The engine packages would start their daemons on a machine without a policy-rc.d; the
  # tests start (and stop) their own, on their own sockets, so keep the packaged ones down.
  added_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    added_policy=1
  fi
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
  [ "$added_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
fi

/usr/bin/python3 -m nvhook.install --python /usr/bin/python3 --prefix /usr/local
