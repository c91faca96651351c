#!/bin/bash
# Set nvhook up on a Debian 12 / Ubuntu 24.04 host, as root: the packages it and its tests
# use, the C helper (/usr/libexec/nvhook/nvhook-helper) and the launchers
# (/usr/local/bin/nvhook, /usr/local/bin/nvidia-container-runtime-hook).
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  python3 python3-cffi python3-pyelftools python3-pyroute2 python3-prctl  # nvhook itself
  python3-pip                                                             # ruff, mypy (below)
  python3-grpcio python3-protobuf python3-grpc-tools                      # tests/cri (CRI client)
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

# The checks scripts/test.sh runs before the tests, pinned: a newer ruff or mypy may find
# new things, and CI must not turn red on its own. Debian 12 has no ruff and a mypy (1.0)
# too old for the code's typing, so both come from PyPI into Debian's python3.
LINT_PINS=(ruff==0.17.6 mypy==2.4.1)
want=()
for pin in "${LINT_PINS[@]}"; do
  /usr/bin/python3 -c 'import importlib.metadata as m, sys; n, v = sys.argv[1].split("==")
sys.exit(m.version(n) != v)' "$pin" 2>/dev/null || want+=("$pin")
done
if ((${#want[@]})); then
  echo "setup: pip installing ${want[*]}"
  /usr/bin/python3 -m pip install -q --break-system-packages "${want[@]}"
fi

/usr/bin/python3 -m nvhook.install --python /usr/bin/python3 --prefix /usr/local
