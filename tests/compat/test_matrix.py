"""Differential matrix: each case runs through NVIDIA's hook 1.17.2 and through nvhook under
real runc on the fake driver (tests/compat/harness.py), and what the two containers saw and
left must be the same, line for line, after the one normalization in harness.normalize.

Every difference that remains is a named row of DIFFERENCES, pointing to its row of
docs/compat.md. A difference that no row explains fails the case; so does a row a case
names but does not show.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from tests.compat.harness import Bench, diff, run_one

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Difference:
    doc: str                                   # the row of docs/compat.md that argues it
    side: str                                  # "nvidia" or "nvhook": who has the extra line
    match: Callable[[str, str], bool]          # (aspect, line) → explained by this row
    everywhere: bool = False                   # may show in any case (depends on the mix)


DIFFERENCES: dict[str, Difference] = {
    # nvhook knows libnvidia-tileiras (driver 580's compute library, added to NVIDIA's list
    # after 1.17.2); 1.17.2 skips it.
    "newer-library-list": Difference(
        "D1", "nvhook", lambda a, line: "libnvidia-tileiras" in line, everywhere=True),
    # NVIDIA's CLI takes the nvidia-caps major from the host's own /proc/devices, which has
    # none on a machine without the driver, so it binds no /dev/nvidia-caps node here; nvhook
    # reads the configured proc root. A bench artefact, not a behaviour difference.
    "caps-major-from-host": Difference(
        "D2", "nvhook", lambda a, line: "/dev/nvidia-caps" in line, everywhere=True),
    # nvhook also looks for GSP firmware under <driver-root>/firmware (GKE, the operator).
    "firmware-dirs": Difference(
        "D4", "nvhook", lambda a, line: "firmware" in line),
    # compat32 without a library capability: NVIDIA still creates the empty 32-bit dir.
    "empty-lib32-dir": Difference(
        "D5", "nvidia", lambda a, line: a == "rootfs" and line.endswith(
            ("i386-linux-gnu: dir 755", "lib32: dir 755"))),
    # a PCI bus id without its domain ("2a:00.0"): NVIDIA refuses it, nvhook takes it.
    "busid-without-domain": Difference("D6", "nvhook", lambda a, line: True),
}
DIFFERENCES["busid-without-domain-refused"] = Difference(
    "D6", "nvidia", lambda a, line: a == "status")
# a /dev/null volume mount named "void": nvhook reads it as the env's void (no GPU, the
# container untouched); NVIDIA passes it to its CLI as a device id and refuses.
DIFFERENCES["volume-mount-void"] = Difference("D10", "nvhook", lambda a, line: True)
DIFFERENCES["volume-mount-void-refused"] = Difference(
    "D10", "nvidia", lambda a, line: a == "status")


@dataclass(frozen=True)
class Case:
    name: str
    env: tuple[str, ...]
    host: str = "debian"
    image: str = "debian"
    privileged: bool = False
    readonly: bool = False
    expect: tuple[str, ...] = ()
    volume_ids: tuple[str, ...] = ()     # /dev/null mounts under /var/run/nvidia-container-devices


DRIVER_VERSION = "580.159.04"      # build_fake_driver's default


def _cases() -> list[Case]:
    from tests.fakedriver.build import _gpus
    # The debian host's GPU table (2 GPUs, MIG on GPU 1), as build_fake_driver makes it.
    g0, g1 = _gpus(2, (1,), 2, DRIVER_VERSION)
    mig0 = g1.migs[0]
    V = "NVIDIA_VISIBLE_DEVICES="
    C = "NVIDIA_DRIVER_CAPABILITIES="
    out: list[Case] = []

    def add(name: str, *env: str, **kw: object) -> None:
        expect = list(kw.pop("expect", ()))  # type: ignore[call-overload]
        kw.pop("untouched", False)   # a case both hooks leave alone (documents the case)
        if kw.get("host") == "operator":
            expect.append("firmware-dirs")
        out.append(Case(name, tuple(env), expect=tuple(expect), **kw))  # type: ignore[arg-type]

    # NVIDIA_VISIBLE_DEVICES and its odd forms
    for name, value in [
        ("all", "all"), ("ALL", "ALL"), ("All", "All"), ("all-spaces", " all "),
        ("index0", "0"), ("index1", "1"), ("two", "0,1"), ("two-reversed", "1,0"),
        ("duplicate", "0,0"), ("empty-items", "0,,1"), ("spaces", " 0 , 1 "),
        ("uuid", g0.uuid), ("uuid-lower", g0.uuid.lower()), ("uuid-upper", g0.uuid.upper()),
        ("uuid-and-index-same-gpu", f"{g0.uuid},0"),
        ("busid-long", g0.bus_id), ("busid-short", g0.bus_id[4:]),
        ("busid-upper", g1.bus_id.upper()),
        ("mig-index", "1:0"), ("mig-index-second", "1:1"), ("mig-uuid", mig0.uuid),
        ("mig-uuid-lower", mig0.uuid.lower()), ("mig-and-gpu0", f"0,{mig0.uuid}"),
        ("none", "none"), ("NONE", "NONE"), ("void", "void"), ("VOID", "VOID"),
        ("empty", ""), ("only-commas", ",,"), ("index-then-none", "0,none"),
        ("none-then-index", "none,0"), ("index-then-void", "0,void"),
        ("all-then-index", "all,0"), ("index-then-all", "0,all"), ("none-and-all", "none,all"),
        ("unknown-word", "nonexistent"), ("index-out-of-range", "2"),
        ("uuid-unknown", "GPU-deadbeef"), ("uuid-prefix", g0.uuid[:12]),
        ("mig-index-unknown", "1:5"), ("mig-of-non-mig-gpu", "0:0"),
        ("cdi-name", "nvidia.com/gpu=0"),
    ]:
        add(f"visible-{name}", V + value)
    add("visible-busid-nodomain", V + g1.bus_id[9:],
        expect=("busid-without-domain", "busid-without-domain-refused"))
    add("no-variable")
    add("visible-unset-caps-set", C + "all")
    # NVIDIA_DRIVER_CAPABILITIES: each alone, sets, odd forms
    for name, value in [
        ("utility", "utility"), ("compute", "compute"), ("video", "video"),
        ("graphics", "graphics"), ("display", "display"), ("ngx", "ngx"),
        ("utility-compute", "utility,compute"),
        ("compute-compat32", "compute,compat32"), ("graphics-compat32", "graphics,compat32"),
        ("graphics-display", "graphics,display"), ("video-compute", "video,compute"),
        ("all", "all"), ("empty", ""), ("upper", "UTILITY"), ("spaces", " utility , compute "),
        ("duplicate", "utility,utility"), ("empty-items", "utility,,compute"),
        ("unknown", "bogus"), ("known-and-unknown", "compute,bogus"), ("none", "none"),
        ("all-and-more", "all,compute"),
    ]:
        add(f"caps-{name}", V + "0", C + value)
    add("caps-compat32", V + "0", C + "compat32", expect=("empty-lib32-dir",))
    # the application profile's EGL mask: GPU 1 only, a MIG device (its parent's bit), none
    add("graphics-gpu1", V + "1", C + "graphics")
    add("display-mig", V + "1:0", C + "display")
    add("graphics-mig-and-gpu0", V + f"{mig0.uuid},0", C + "graphics")
    add("graphics-none", V + "none", C + "graphics")
    # legacy CUDA_VERSION images
    add("legacy", "CUDA_VERSION=12.0")
    add("legacy-patch", "CUDA_VERSION=12.0.1")
    add("legacy-unsatisfied", "CUDA_VERSION=14.0")
    add("legacy-disabled", "CUDA_VERSION=14.0", "NVIDIA_DISABLE_REQUIRE=1")
    add("legacy-with-require", "CUDA_VERSION=12.0", "NVIDIA_REQUIRE_CUDA=cuda>=11.0")
    add("legacy-with-visible", "CUDA_VERSION=12.0", V + "1")
    add("legacy-caps-set", "CUDA_VERSION=12.0", C + "utility")
    add("legacy-invalid-version", "CUDA_VERSION=twelve")
    # requirements
    for name, value in [
        ("cuda-ok", "cuda>=12.0"), ("cuda-bad", "cuda>=14.0"), ("cuda-eq", "cuda=13.0"),
        ("driver-ok", "driver>=500"), ("driver-bad", "driver<500"),
        ("arch-ok", "arch=9.0"), ("arch-bad", "arch=8.0"), ("brand-ok", "brand=nvidia"),
        ("brand-case", "brand=NVIDIA"), ("brand-bad", "brand=tesla"),
        ("or-group-second", "cuda>=14.0 brand=nvidia"), ("or-group-none", "cuda>=14.0 brand=tesla"),
        ("and-terms", "cuda>=12.0,driver>=500"), ("and-terms-bad", "cuda>=12.0,driver>=600"),
        ("invalid", "cuda>>12"),
    ]:
        add(f"require-{name}", V + "0", "NVIDIA_REQUIRE_CUDA=" + value)
    add("require-two-vars", V + "0", "NVIDIA_REQUIRE_CUDA=cuda>=12.0",
        "NVIDIA_REQUIRE_ARCH=arch=8.0")
    add("require-disabled-1", V + "0", "NVIDIA_REQUIRE_CUDA=cuda>=14.0",
        "NVIDIA_DISABLE_REQUIRE=1")
    add("require-disabled-true", V + "0", "NVIDIA_REQUIRE_CUDA=cuda>=14.0",
        "NVIDIA_DISABLE_REQUIRE=true")
    add("require-disabled-yes", V + "0", "NVIDIA_REQUIRE_CUDA=cuda>=14.0",
        "NVIDIA_DISABLE_REQUIRE=yes")
    add("require-on-mig", V + "1:0", "NVIDIA_REQUIRE_ARCH=arch=9.0")
    # privileged vs not, MIG management
    add("privileged-all", V + "all", privileged=True)
    add("mig-config-privileged", V + "1", "NVIDIA_MIG_CONFIG_DEVICES=all", privileged=True)
    add("mig-monitor-privileged", V + "all", "NVIDIA_MIG_MONITOR_DEVICES=all",
        privileged=True)
    add("mig-config-unprivileged", V + "1", "NVIDIA_MIG_CONFIG_DEVICES=all")
    add("mig-monitor-unprivileged", V + "1", "NVIDIA_MIG_MONITOR_DEVICES=all")
    add("mig-config-with-mig-device", V + "1:0", "NVIDIA_MIG_CONFIG_DEVICES=all",
        privileged=True)
    add("mig-config-not-all", V + "1", "NVIDIA_MIG_CONFIG_DEVICES=0", privileged=True)
    # NVIDIA_IMEX_CHANNELS naming a channel the host lacks is not run: NVIDIA's CLI 1.17.2
    # does not return (docs/compat.md, D7); nvhook refuses (tests/unit/test_plan.py).
    # read-only rootfs
    add("readonly-all", V + "all", readonly=True)
    add("readonly-graphics", V + "0", C + "graphics,compat32", readonly=True)
    # a hardened config: env requests only when privileged, volume mounts, swarm resource
    add("strict-env-unprivileged-ignored", V + "all", host="strict")
    add("strict-env-privileged", V + "all", host="strict", privileged=True)
    add("strict-legacy-unprivileged-ignored", "CUDA_VERSION=12.0", host="strict",
        untouched=True)
    add("strict-volume-mount", host="strict", volume_ids=("0",))
    add("strict-volume-mount-beats-env", V + "0", host="strict", volume_ids=("1",),
        privileged=True)
    add("strict-volume-mount-uuid", host="strict", volume_ids=(g1.uuid,))
    add("strict-volume-mount-all", host="strict", volume_ids=("all",))
    add("strict-volume-mount-void", V + "0", host="strict", volume_ids=("void",),
        privileged=True, expect=("volume-mount-void", "volume-mount-void-refused"))
    add("strict-swarm-resource", V + "0", "DOCKER_RESOURCE_GPU=1", host="strict",
        privileged=True)
    add("strict-swarm-resource-unprivileged", "DOCKER_RESOURCE_GPU=1", host="strict")
    # no driver on the host; a driver whose cache names a library that is gone
    add("nodriver-all", V + "all", host="nodriver", untouched=True)
    add("nodriver-none", V + "none", host="nodriver", untouched=True)
    add("nodriver-no-request", host="nodriver")
    add("broken-driver", V + "all", host="broken")
    # the lib64 image layout (no /etc/debian_version)
    add("lib64-all", V + "all", image="lib64")
    add("lib64-compat32", V + "0", C + "compute,compat32", image="lib64")
    add("lib64-graphics", V + "0", C + "graphics,display", image="lib64")
    # the image's library dir is an absolute symlink: resolved inside the rootfs by both
    add("libdir-symlink-all", V + "all", image="libdir-link")
    add("libdir-symlink-compat32", V + "0", C + "compute,compat32", image="libdir-link")
    # the driver in a driver root holding its IPC sockets (the GPU operator's layout)
    for name, caps in [("default", ""), ("utility", "utility"), ("compute", "compute"),
                       ("video", "video"), ("graphics", "graphics"),
                       ("compat32", "compute,compat32"), ("all", "all")]:
        add(f"operator-{name}", V + "all", *([C + caps] if caps else []), host="operator")
    add("operator-lib64-image", V + "0", host="operator", image="lib64")
    add("operator-one-gpu", V + "1", host="operator")
    return out


CASES = _cases()

# Where both refuse the container: the phrase each one's error must hold (NVIDIA's, nvhook's).
# nvhook's line adds the fix (docs/compat.md, D9).
_UNKNOWN = {c.name: c.env[0].split("=", 1)[1] for c in CASES if c.name in (
    "visible-NONE", "visible-VOID", "visible-unknown-word", "visible-index-out-of-range",
    "visible-uuid-unknown", "visible-uuid-prefix", "visible-mig-index-unknown",
    "visible-mig-of-non-mig-gpu")}
_CAPS = ("unsupported capabilities found in", "unknown capability")
CAUSES: dict[str, tuple[str, str]] = {
    **{name: (f"{value}: unknown device",) * 2 for name, value in _UNKNOWN.items()},
    "visible-cdi-name": ("nvidia.com/gpu=0: unknown device",
                         "names CDI device nvidia.com/gpu=0"),
    "caps-upper": _CAPS, "caps-unknown": _CAPS, "caps-known-and-unknown": _CAPS,
    "caps-none": _CAPS,
    "legacy-unsatisfied": ("unsatisfied condition: cuda>=14.0",) * 2,
    "legacy-invalid-version": ("invalid CUDA version twelve",
                               "CUDA_VERSION=twelve is not a valid version"),
    "require-cuda-bad": ("unsatisfied condition: cuda>=14.0",) * 2,
    "require-driver-bad": ("unsatisfied condition: driver<500",) * 2,
    "require-arch-bad": ("unsatisfied condition: arch=8.0",) * 2,
    "require-brand-bad": ("unsatisfied condition: brand=tesla",) * 2,
    "require-or-group-none": ("unsatisfied condition: cuda>=14.0",) * 2,
    "require-and-terms-bad": ("unsatisfied condition: cuda>=12.0,driver>=600",) * 2,
    "require-invalid": ("invalid expression",) * 2,
    "require-two-vars": ("unsatisfied condition: arch=8.0",) * 2,
    "require-disabled-yes": ("unsatisfied condition: cuda>=14.0",) * 2,
    "mig-config-unprivileged": ("cannot set MIG_CONFIG_DEVICES in non privileged",
                                "NVIDIA_MIG_CONFIG_DEVICES is set in a container that is "
                                "not privileged"),
    "mig-monitor-unprivileged": ("cannot set MIG_MONITOR_DEVICES in non privileged",
                                 "NVIDIA_MIG_MONITOR_DEVICES is set in a container that is "
                                 "not privileged"),
    "mig-config-with-mig-device": ("cannot enable mig-config with specific MIG devices",
                                   "cannot be combined with specific MIG devices"),
    "nodriver-all": ("libnvidia-ml.so.1: cannot open shared object file",
                     "libnvidia-ml.so.1 not found under driver root /"),
    "nodriver-none": ("libnvidia-ml.so.1: cannot open shared object file",
                      "libnvidia-ml.so.1 not found under driver root /"),
    "broken-driver": (f"libnvidia-ptxjitcompiler.so.{DRIVER_VERSION}: no such file",
                      "libnvidia-ptxjitcompiler.so.1 is listed in the ld.so.cache but missing"),
    "mig-config-not-all": ("only 'all' devices are currently supported",
                           "only 'all' is supported"),
}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case(bench: Bench, case: Case) -> None:
    host = bench.hosts[case.host]
    runs = {impl: run_one(bench, host, impl, list(case.env), case.image, case.privileged,
                          case.readonly, case.volume_ids) for impl in ("nvidia", "nvhook")}
    lines = diff(runs["nvidia"].seen, runs["nvhook"].seen)
    rows = {name: DIFFERENCES[name] for name in case.expect}
    rows.update({n: d for n, d in DIFFERENCES.items() if d.everywhere})
    shown: set[str] = set()
    unexplained = []
    for aspect, side, line in lines:
        names = [n for n, d in rows.items() if d.side == side and d.match(aspect, line)]
        if names:
            shown.update(names)
        else:
            unexplained.append(f"{aspect:8} {side:6} {line}")
    errors = "\n".join(f"{impl} refused: {r.error.strip()}" for impl, r in runs.items()
                       if r.error)
    assert not unexplained, ("differences no row of DIFFERENCES explains:\n"
                             + "\n".join(unexplained) + "\n" + errors)
    both_refused = all(r.seen["status"] == ["refused"] for r in runs.values())
    if both_refused:
        assert case.name in CAUSES, f"both refuse; name the cause in CAUSES:\n{errors}"
        for impl, phrase in zip(("nvidia", "nvhook"), CAUSES[case.name], strict=True):
            assert phrase in runs[impl].error, f"{impl} refused for another cause:\n{errors}"
        assert "fix: " in runs["nvhook"].error, "nvhook's error names no fix"
    else:
        assert case.name not in CAUSES, f"CAUSES lists a case that starts:\n{errors}"
    stale = [] if both_refused else [n for n in case.expect if n not in shown]
    assert not stale, f"the case names differences it does not show: {stale}\n{errors}"
