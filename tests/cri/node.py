"""The CRI node's parts that need no pytest (tests/cri/conftest.py and tests/gpu/k8s_docker.py
share them): containerd's config with the CRI plugin and RuntimeClass handlers, and the
logging wrappers around the runtime calls."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# Parses a runtime's argv in sh: the command, the bundle (--bundle/-b, else the cwd), --log.
ARGV_SH = r'''cmd=; b=; log=; prev=
for a; do
  case "$prev" in --bundle|-b) b=$a;; --log) log=$a;; esac
  case "$a" in create|start|kill|delete|state|run|exec|features|ps|pause|resume|update)
    [ -z "$cmd" ] && cmd=$a;; esac
  prev=$a
done
[ -n "$b" ] || b=$PWD
sum=-
[ "$cmd" = create ] && sum=$(sha256sum < "$b/config.json" | cut -c1-64)
'''

WRAPPER = """#!/bin/sh
# CRI handler {name}: log the call as containerd made it, then run nvhook's shim.
{argv}echo "in $(date +%s%N) $cmd $sum $(basename "$b")" >> {calls}
export NVHOOK_CALL_LOG={calls} NVHOOK_SAVED_LOGS={saved}
export NVHOOK_CONFIG={config} NVHOOK_CDI_SPEC_DIRS={cdi}
exec {target} "$@"
"""

RECORDER = """#!/bin/sh
# The "real runtime" of the tests' nvhook configs: log the call as nvhook passes it on,
# keep the runtime log as nvhook left it, then run runc.
{argv}echo "out $(date +%s%N) $cmd $sum $(basename "$b")" >> "$NVHOOK_CALL_LOG"
if [ "$cmd" = create ] && [ -n "$log" ] && [ -f "$log" ]; then
  cp "$log" "$NVHOOK_SAVED_LOGS/$(basename "$b").log"
fi
exec {runc} "$@"
"""


@dataclass
class Call:
    where: str       # "in" (containerd → wrapper) or "out" (nvhook → runc)
    ns: int
    command: str
    digest: str      # sha256 of config.json on create, "-" otherwise
    container: str   # the bundle's name: the container id



def read_calls(path: Path) -> list[Call]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        where, ns, command, digest, container = line.split(" ", 4)
        out.append(Call(where, int(ns), command, digest, container))
    return out


def containerd_config(root: Path, run_dir: Path, pause_image: str, handlers: dict[str, Path],
                      cni_dir: Path, default: str) -> str:
    """containerd 1.6's config.toml: own root, state and sockets; the CRI plugin with the
    settings these machines need (engines.md); one runc.v2 runtime per handler, its
    BinaryName the given file, cdi.k8s.io/* annotations passed to it."""
    runtimes = "".join(f"""
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.{name}]
      runtime_type = "io.containerd.runc.v2"
      container_annotations = ["cdi.k8s.io/*"]
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.{name}.options]
        BinaryName = "{binary}"
        Root = "{run_dir / 'runc'}"
""" for name, binary in handlers.items())
    return f"""version = 2
root = "{root}"
state = "{run_dir / 'state'}"
[grpc]
  address = "{run_dir / 'containerd.sock'}"
[ttrpc]
  address = "{run_dir / 'containerd.sock.ttrpc'}"
[debug]
  address = "{run_dir / 'debug.sock'}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause_image}"
  restrict_oom_score_adj = true
  disable_apparmor = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni_dir}"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "{default}"
{runtimes}"""


def per_call(calls: list[Call]) -> tuple[dict[str, list[float]], dict[str, int]]:
    """ms from a handler's "in" to the recorder's "out", per command (each "out" paired
    with the open "in" of the same command and container), and the calls per command."""
    per: dict[str, list[float]] = {}
    pending: dict[tuple[str, str], int] = {}
    count: dict[str, int] = {}
    for c in calls:
        key = (c.command, c.container)
        if c.where == "in":
            pending[key] = c.ns
            count[c.command] = count.get(c.command, 0) + 1
        elif key in pending:
            per.setdefault(c.command, []).append((c.ns - pending.pop(key)) / 1e6)
    return per, count
