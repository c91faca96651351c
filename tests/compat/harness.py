"""Runs one container twice under real runc on a fake driver, once through NVIDIA's legacy
hook 1.17.2 (its nvidia-container-cli doing the work) and once through nvhook, and records
what each container saw and left, normalized so the two can be compared line by line.

NVIDIA's binaries are never part of the project: NVHOOK_REFERENCE names the directory the
reference tarball was unpacked into (bin/, lib/), at run time (scripts/reference.sh).
"""
from __future__ import annotations

import os
import re
import shutil
import stat
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from nvhook.inventory import ldcache
from tests.containers import make_bundle, runc_run
from tests.fakedriver import FakeDriver
from tests.hooked import host_mounts

HERE = Path(__file__).resolve().parent
PROCFS_HOOK = HERE / "procfs_hook.py"
REFERENCE_ENV = "NVHOOK_REFERENCE"
ENABLE_HINT = ("set NVHOOK_REFERENCE to the unpacked NVIDIA 1.17.2 tarball "
               "(`eval $(scripts/reference.sh)`, which CI's scripts/test.sh runs)")
ASPECTS = ("status", "mounts", "dev", "proc", "profile", "probe", "smi", "ldcache", "rootfs",
           "host")


def reference_dir() -> Path | None:
    value = os.environ.get(REFERENCE_ENV, "")
    if value and (Path(value) / "bin/nvidia-container-runtime-hook").is_file():
        return Path(value)
    return None


@dataclass
class Host:
    """One fake driver and the two hooks' configs for it."""

    name: str
    driver: FakeDriver
    nvidia_config: Path
    nvhook_config: Path
    top: str = ""            # top-level keys both config files start with
    root: Path | None = None  # NVIDIA's driver root when not the fake driver's


@dataclass
class Bench:
    """What every case shares: the hooks, pristine rootfs copies per image layout, hosts."""

    reference: Path
    nvhook_hook: Path          # nvhook's launcher named nvidia-container-runtime-hook
    work: Path
    images: dict[str, Path]    # "debian" / "lib64" → pristine rootfs
    pristine: dict[str, dict[str, str]]       # image → rootfs snapshot
    pristine_cache: dict[str, set[str]]       # image → ld.so.cache entries
    hosts: dict[str, Host] = field(default_factory=dict)


def nvidia_config(path: Path, reference: Path, driver_root: Path, log: Path,
                  top: str = "") -> Path:
    path.write_text(
        top +
        "[nvidia-container-cli]\n"
        f'root = "{driver_root}"\n'
        f'path = "{reference}/bin/nvidia-container-cli"\n'
        "load-kmods = false\n"
        'ldconfig = "@/sbin/ldconfig"\n'
        f'debug = "{log}"\n'
        "[nvidia-container-runtime]\n"
        'mode = "legacy"\n')
    return path


# ------------------------------------------------------------------------ one container
SCRIPT = r"""
echo @@dev
for f in $(find /dev -name 'nvidia*' | sort); do
  if [ -c "$f" ]; then
    err=$(head -c1 "$f" 2>&1 >/dev/null | sed 's/.*: //')
    echo "$(stat -c '%n %F %t:%T %a' "$f") open=$err"
  else
    echo "$(stat -c '%n %F %a' "$f")"
  fi
done
echo @@proc
if [ -d /proc/driver/nvidia ]; then
  find /proc/driver/nvidia | sort
  echo params:; cat /proc/driver/nvidia/params 2>&1 | md5sum | cut -c1-8
  grep ModifyDeviceFiles /proc/driver/nvidia/params 2>&1
  echo version:; head -c 60 /proc/driver/nvidia/version 2>&1; echo
fi
echo @@profile
d=/etc/nvidia/nvidia-application-profiles-rc.d
if [ -d $d ]; then
  stat -c '%n %F %a %u:%g' $d
  for f in $d/*; do [ -e "$f" ] && echo "$(stat -c '%n %F %s %u:%g' "$f"): $(cat "$f")"; done
fi
echo @@probe
nvml-probe 2>&1 | sed 's/^nvml-probe: .*cannot open shared object.*/nvml-probe: not found/'

nvml-probe --dlopen libcuda.so.1
echo @@smi
nvidia-smi -L 2>&1 | sed 's/^sh: .*not found/not found/'
echo @@mounts
cat /proc/self/mountinfo
"""


@dataclass
class Outcome:
    seen: dict[str, list[str]]
    error: str            # runc's stderr when the container was refused


def snapshot(root: Path) -> dict[str, str]:
    """path → type, mode, size or link target, for every entry under ``root``."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            rel = os.path.relpath(p, root)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = f"link -> {os.readlink(p)}"
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = f"dir {stat.S_IMODE(st.st_mode):o}"
            else:
                out[rel] = f"file {stat.S_IMODE(st.st_mode):o} {st.st_size}"
    return out


def cache_entries(rootfs: Path) -> set[str]:
    entries = ldcache.read_ldcache(str(rootfs / "etc/ld.so.cache")) or ()
    return {f"{e.key} {e.arch} -> {e.value}" for e in entries}


def privileged(spec: dict) -> None:  # type: ignore[type-arg]
    caps = spec["process"]["capabilities"]
    for kind in ("bounding", "effective", "permitted"):
        if "CAP_SYS_ADMIN" not in caps[kind]:
            caps[kind].append("CAP_SYS_ADMIN")


def run_one(bench: Bench, host: Host, impl: str, env: list[str], image: str,
            privileged_: bool, readonly: bool, volume_ids: tuple[str, ...] = ()) -> Outcome:
    name = uuid.uuid4().hex[:10]
    bundle = bench.work / "bundles" / name
    bundle.mkdir(parents=True)
    rootfs = bundle / "rootfs"
    shutil.copytree(bench.images[image], rootfs, symlinks=True)
    pre = {"path": str(PROCFS_HOOK),
           "args": ["procfs_hook.py", str(host.driver.proc_driver_dir)]}
    if impl == "nvidia":
        ref = bench.reference
        hook = {"path": str(ref / "bin/nvidia-container-runtime-hook"),
                "args": ["nvidia-container-runtime-hook", "-config", str(host.nvidia_config),
                         "prestart"],
                "env": [f"LD_LIBRARY_PATH={ref}/lib", "PATH=/usr/sbin:/usr/bin:/sbin:/bin"]}
    else:
        hook = {"path": str(bench.nvhook_hook),
                "args": ["nvidia-container-runtime-hook", "--config", str(host.nvhook_config),
                         "prestart"]}

    def edit(spec: dict) -> None:  # type: ignore[type-arg]
        spec["root"]["readonly"] = readonly
        for device in volume_ids:       # the device plugin's /dev/null volume-mount list
            spec["mounts"].append({"destination": f"/var/run/nvidia-container-devices/{device}",
                                   "source": "/dev/null", "type": "bind",
                                   "options": ["bind", "ro"]})
        if privileged_:
            privileged(spec)

    make_bundle(bundle, rootfs, ["sh", "-c", SCRIPT], env=env,
                hooks={"prestart": [pre, hook]}, edit=edit)
    mounts_before = _ours(host_mounts(), bench)
    drv_before = snapshot(host.driver.root)
    proc = runc_run(bundle, f"cmp-{name}", root=bench.work / "runc-state", timeout=120)
    left = []
    if _ours(host_mounts(), bench) != mounts_before:
        left.append("the host's mount table changed")
    if snapshot(host.driver.root) != drv_before:
        left.append("the driver root changed")
    started = "@@mounts" in proc.stdout
    seen: dict[str, list[str]] = {a: [] for a in ASPECTS}
    seen["host"] = left
    seen["status"] = ["started" if started else "refused"]
    if started:
        section = ""
        for line in proc.stdout.splitlines():
            if line.startswith("@@"):
                section = line[2:]
                continue
            seen[section].append(line)
        after = snapshot(rootfs)
        before = bench.pristine[image]
        changed = sorted(set(after.items()) ^ set(before.items()))
        seen["rootfs"] = [f"{'+' if (p, v) in after.items() else '-'} {p}: {v}"
                          for p, v in changed if p != "etc/ld.so.cache"]
        seen["ldcache"] = sorted(cache_entries(rootfs) - bench.pristine_cache[image])
    shutil.rmtree(bundle, ignore_errors=True)
    return Outcome(normalize(seen, bench, host, bundle), "" if started else proc.stderr)


def _ours(mounts: list[str], bench: Bench) -> list[str]:
    """The host's mounts that involve this bench (other work on the machine mounts too)."""
    return [m for m in mounts if str(bench.work) in m]


# ------------------------------------------------------------------------ normalization
# Everything that legitimately differs between two runs of the same container is removed
# here, and only here (docs/compat.md, "How the comparison is made").
_ANON_DEV = re.compile(r"^0:\d+$")
_MASKS = ("/proc/driver/nvidia", "/etc/nvidia/nvidia-application-profiles-rc.d")


def normalize(seen: dict[str, list[str]], bench: Bench, host: Host,
              bundle: Path) -> dict[str, list[str]]:
    out = dict(seen)
    subs = [(str(bundle / "rootfs"), "<ROOTFS>"), (str(host.driver.root), "<DRIVER>"),
            (str(host.driver.dev_root), "<DEVROOT>"), (str(host.driver.proc_root), "<PROC>")]

    def sub(text: str) -> str:
        for old, new in subs:
            text = text.replace(old, new)
        return re.sub(r"cmp-[0-9a-f]{10}", "<ID>", text)

    mounts = []
    for line in seen["mounts"]:
        fields = line.split()
        if "-" not in fields:
            continue
        dash = fields.index("-")
        root, point, opts = fields[3], fields[4], fields[5]
        fstype, source, superopts = fields[dash + 1], fields[dash + 2], fields[dash + 3]
        dev = "anon" if _ANON_DEV.match(fields[2]) else fields[2]
        if point in _MASKS and fstype == "tmpfs":
            # The /proc mask and the application profile dir: NVIDIA leaves its tmpfs
            # writable (mode 0555), nvhook makes it read-only; what is inside is compared
            # under "proc" and "profile" (compat.md: proc-mask).
            opts, superopts = "<proc-mask>", "<proc-mask>"
        mounts.append(sub(f"{point} {dev} {root} {opts} {fstype} {source} {superopts}"))
    out["mounts"] = sorted(mounts)
    out["dev"] = [sub(x) for x in seen["dev"]]
    out["rootfs"] = [sub(x) for x in seen["rootfs"]]
    return out


def diff(a: dict[str, list[str]], b: dict[str, list[str]]) -> list[tuple[str, str, str]]:
    """(aspect, side, line) for each line only one side has; side is nvidia or nvhook."""
    out = []
    for aspect in ASPECTS:
        left, right = a.get(aspect, []), b.get(aspect, [])
        for line in left:
            if line not in right:
                out.append((aspect, "nvidia", line))
        for line in right:
            if line not in left:
                out.append((aspect, "nvhook", line))
    return out
