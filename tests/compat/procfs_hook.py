#!/usr/bin/python3 -IS
"""A prestart hook of the compat tests, run before NVIDIA's: on a host without an NVIDIA
kernel module the container's procfs has no /proc/driver/nvidia, and nvidia-container-cli
refuses to start without it. This hook gives the container what a real host would: a
read-only tmpfs on /proc/driver holding a read-only bind of the fake driver's
proc/driver/nvidia. It runs for nvhook's containers too, so both see the same procfs.

usage (as an OCI hook): procfs_hook.py FAKE_PROC_DRIVER_NVIDIA_DIR   (state JSON on stdin)
"""
import json
import os
import subprocess
import sys


def main() -> int:
    source = sys.argv[1]
    state = json.load(sys.stdin)
    pid, bundle = state["pid"], state["bundle"]
    with open(os.path.join(bundle, "config.json")) as f:
        root = json.load(f)["root"]["path"]
    rootfs = os.path.join(bundle, root)
    target = os.path.join(rootfs, "proc/driver")
    script = ('set -e; mount -t tmpfs -o mode=0555,nosuid,nodev,noexec tmpfs "$1"; '
              'mkdir "$1/nvidia"; mount --bind "$2" "$1/nvidia"; '
              'mount -o remount,bind,ro "$1/nvidia"; mount -o remount,ro "$1"')
    proc = subprocess.run(["nsenter", f"--mount=/proc/{pid}/ns/mnt", "--", "sh", "-c",
                           script, "sh", target, source], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(f"procfs_hook: {proc.stderr.strip()}\n")
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
