"""The listings side by side on the same fake drivers: `nvhook info` / `nvhook list` against
`nvidia-container-cli info` / `list`, and `nvhook cdi generate` against `nvidia-ctk cdi
generate`. Every difference left is a named row of docs/compat.md (D1, D2, D4, D8)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.compat.harness import Bench, Host

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def nvidia_cli(bench: Bench, host: Host, *args: str) -> str:
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LD_LIBRARY_PATH": f"{bench.reference}/lib"}
    return subprocess.run([f"{bench.reference}/bin/nvidia-container-cli", "--root",
                           str(host.driver.root), *args], env=env, capture_output=True,
                          text=True, check=True).stdout


def nvhook(host: Host, *args: str) -> str:
    return subprocess.run([sys.executable, "-m", "nvhook", "--config", str(host.nvhook_config),
                           *args], cwd=REPO, capture_output=True, text=True,
                          check=True).stdout


def rel(path: str, host: Host) -> str:
    """A host path as seen from the driver root (how NVIDIA's listings print it)."""
    root = str(host.driver.root)
    return path[len(root):] if path.startswith(root + "/") else path


def test_info_same_facts_without_mig(bench: Bench) -> None:
    host = bench.hosts["operator"]
    assert nvhook(host, "info") == nvidia_cli(bench, host, "info")


def test_info_same_facts_with_mig(bench: Bench) -> None:
    host = bench.hosts["debian"]
    ours = nvhook(host, "info").split("\n\n")
    # D2: NVIDIA's CLI finds no nvidia-caps major in this machine's own /proc/devices and
    # so reports no MIG device; nvhook reads the driver's proc root and lists them.
    ours = [block for block in ours if not block.lstrip().startswith("MIG Device")]
    assert "\n\n".join(ours).rstrip("\n") == nvidia_cli(bench, host, "info").rstrip("\n")


@pytest.mark.parametrize("host_name", ["debian", "operator"])
def test_list_same_files(bench: Bench, host_name: str) -> None:
    host = bench.hosts[host_name]
    theirs = set(nvidia_cli(bench, host, "list").split())
    ours = {rel(p, host) for p in nvhook(host, "list").split()}
    explained = {
        "D1": lambda p: "libnvidia-tileiras" in p,
        "D2": lambda p: p.startswith("/dev/nvidia-caps/"),
        "D4": lambda p: p.startswith("/firmware/"),
    }
    only_ours = {p for p in ours - theirs if not any(f(p) for f in explained.values())}
    assert not only_ours, f"nvhook lists, NVIDIA does not: {sorted(only_ours)}"
    assert not theirs - ours, f"NVIDIA lists, nvhook does not: {sorted(theirs - ours)}"


def _nvidia_ctk_spec(bench: Bench, host: Host, out: Path) -> dict:  # type: ignore[type-arg]
    subprocess.run([f"{bench.reference}/bin/nvidia-ctk", "cdi", "generate", "--mode", "nvml",
                    "--driver-root", str(host.driver.root), "--dev-root",
                    str(host.driver.dev_root), "--format", "json", "--output", str(out)],
                   capture_output=True, check=True,
                   env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
    return json.loads(out.read_text())  # type: ignore[no-any-return]


def test_cdi_generate_same_devices_nodes_mounts(bench: Bench, tmp_path: Path) -> None:
    # the operator host: NVIDIA's nvidia-ctk needs the MIG capability tree from this
    # machine's /proc for a MIG-enabled GPU (D2), so the MIG-free driver is compared.
    host = bench.hosts["operator"]
    theirs = _nvidia_ctk_spec(bench, host, tmp_path / "nvidia.json")
    ours = json.loads(nvhook(host, "cdi", "generate", "--format", "json"))
    assert (ours["kind"], sorted(d["name"] for d in ours["devices"])) == \
        (theirs["kind"], sorted(d["name"] for d in theirs["devices"]))

    def nodes(edits: dict) -> set[tuple[str, str]]:  # type: ignore[type-arg]
        return {(n["path"], n.get("hostPath", n["path"])) for n in edits.get("deviceNodes", [])}

    for dev in theirs["devices"]:
        mine = next(d for d in ours["devices"] if d["name"] == dev["name"])
        assert nodes(mine["containerEdits"]) == nodes(dev["containerEdits"]), dev["name"]
    assert nodes(ours["containerEdits"]) == nodes(theirs["containerEdits"])

    def mounts(edits: dict) -> set[str]:  # type: ignore[type-arg]
        return {rel(m["hostPath"], host) for m in edits.get("mounts", [])}

    only_ours = mounts(ours["containerEdits"]) - mounts(theirs["containerEdits"])
    only_theirs = mounts(theirs["containerEdits"]) - mounts(ours["containerEdits"])
    # D8: NVIDIA's CDI spec leaves out the 32-bit libraries, nv-fabricmanager and an MPS
    # dir it looks for on the host only; D4: the firmware under <root>/firmware.
    assert all(p.startswith(("/lib32/", "/firmware/", "/tmp/nvidia-mps"))
               or p == "/bin/nv-fabricmanager" for p in only_ours), sorted(only_ours)
    # D8: NVIDIA's CDI mode takes every *.so.<version> file and libnvidia-egl-wayland.
    assert all("libnvidia-egl-wayland" in p for p in only_theirs), sorted(only_theirs)
