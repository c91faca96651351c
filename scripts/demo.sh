#!/bin/bash
# The main job: start a container through runc with nvhook as its prestart hook, and show
# the GPUs it sees. With an NVIDIA driver on this host they are the real GPUs; without one,
# a fake driver (the one the tests build: a C libnvidia-ml answering for 2 GPUs) stands in.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
WORK=${NVHOOK_DEMO_DIR:-/var/tmp/nvhook-demo}
HOOK=${NVHOOK_HOOK:-/usr/local/bin/nvidia-container-runtime-hook}
DEVICES=${NVIDIA_VISIBLE_DEVICES:-all}
rm -rf "$WORK"
mkdir -p "$WORK"

config=""
if [ -n "${NVHOOK_CONFIG:-}" ]; then
  config=$NVHOOK_CONFIG
elif [ -e /proc/driver/nvidia/version ]; then
  echo "demo: NVIDIA driver found: $(head -1 /proc/driver/nvidia/version | sed 's/  */ /g')"
  if [ -d /usr/local/nvidia/lib64 ]; then        # driver root of GKE / GPU-operator hosts
    config=$WORK/config.toml
    printf '[host]\ndriver-root = "/usr/local/nvidia"\n' > "$config"
  fi
else
  echo "demo: no NVIDIA driver on this host: building the fake driver (2 GPUs) in $WORK/fake"
  config=$(/usr/bin/python3 -m tests.fakedriver "$WORK/fake" --gpus 2)
fi
cfg_args=()
[ -n "$config" ] && cfg_args=(--config "$config")

echo "demo: nvhook list-devices"
/usr/local/bin/nvhook "${cfg_args[@]}" list-devices

/usr/bin/python3 tests/containers.py rootfs "$WORK/bundle/rootfs" >/dev/null
hook_args=$(/usr/bin/python3 -c 'import json,sys; print(json.dumps(sys.argv[1:]))' \
  nvidia-container-runtime-hook "${cfg_args[@]}" prestart)
runc spec --bundle "$WORK/bundle"
/usr/bin/python3 - "$WORK/bundle/config.json" "$HOOK" "$hook_args" "$DEVICES" <<'EOF'
import json, sys
path, hook, args, devices = sys.argv[1:]
spec = json.load(open(path))
spec["root"] = {"path": "rootfs", "readonly": False}
spec["process"]["terminal"] = False
spec["process"]["env"] += [f"NVIDIA_VISIBLE_DEVICES={devices}"]
spec["process"]["args"] = ["sh", "-c",
    "echo '--- nvidia-smi -L (inside the container)'; nvidia-smi -L; "
    "echo '--- device nodes'; ls -l /dev/nvidia*; "
    "echo '--- /proc/driver/nvidia/gpus'; ls /proc/driver/nvidia/gpus; "
    "echo '--- NVIDIA mounts'; grep -c nvidia /proc/self/mountinfo"]
spec["hooks"] = {"prestart": [{"path": hook, "args": json.loads(args)}]}
json.dump(spec, open(path, "w"), indent=2)
EOF
echo "demo: runc run (NVIDIA_VISIBLE_DEVICES=$DEVICES)"
runc --root "$WORK/runc" run --bundle "$WORK/bundle" "nvhook-demo-$$"
