"""Text renderings of the Inventory and Plan: `info`, `list`, `list-devices` and `plan`."""
from __future__ import annotations

import json

from nvhook.model import Inventory, Plan

TYPE_CHECKING = False   # typing costs the hook milliseconds at run time
if TYPE_CHECKING:
    from typing import Any


def info_text(inv: Inventory) -> str:
    """nvidia-container-cli `info` layout: 15-column labels, a blank line per GPU."""
    def row(label: str, value: object) -> str:
        return f"{label + ':':<15} {value}"

    lines = [row("NVRM version", inv.driver_version), row("CUDA version", inv.cuda_version)]
    for g in inv.gpus:
        lines += ["", row("Device Index", g.index), row("Device Minor", g.minor),
                  row("Model", g.model), row("Brand", g.brand), row("GPU UUID", g.uuid),
                  row("Bus Location", g.bus_id), row("Architecture", g.arch)]
        for m in g.mig_devices:
            lines += ["", row("  MIG Device", f"{g.index}:{m.index}"),
                      row("  MIG UUID", m.uuid),
                      row("  GPU Instance", m.gpu_instance),
                      row("  Compute Inst.", m.compute_instance)]
    return "\n".join(lines) + "\n"


def info_csv(inv: Inventory) -> str:
    lines = ["NVRM version,CUDA version", f"{inv.driver_version},{inv.cuda_version}", "",
             "Device Index,Device Minor,Model,Brand,GPU UUID,Bus Location,Architecture"]
    for g in inv.gpus:
        lines.append(",".join(str(v) for v in (g.index, g.minor, g.model, g.brand, g.uuid,
                                                g.bus_id, g.arch)))
    return "\n".join(lines) + "\n"


def devices_rows(inv: Inventory) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for g in inv.gpus:
        rows.append({"index": str(g.index), "minor": g.minor, "uuid": g.uuid,
                     "busId": g.bus_id, "model": g.model})
        for m in g.mig_devices:
            rows.append({"index": f"{g.index}:{m.index}", "minor": g.minor, "uuid": m.uuid,
                         "busId": g.bus_id,
                         "model": f"{g.model} MIG gi{m.gpu_instance} ci{m.compute_instance}"})
    return rows


def list_devices_text(inv: Inventory, as_json: bool) -> str:
    rows = devices_rows(inv)
    if as_json:
        return json.dumps(rows, indent=2) + "\n"
    width = max([len(r["index"]) for r in rows] + [5])
    out = [f"{'INDEX':<{width}}  MINOR  {'UUID':<40}  {'BUS ID':<16}  MODEL"]
    for r in rows:
        out.append(f"{r['index']:<{width}}  {r['minor']:<5}  {r['uuid']:<40}  "
                   f"{r['busId']:<16}  {r['model']}")
    return "\n".join(out) + "\n"


def list_paths(plan: Plan, lib_dir: str, lib32_dir: str) -> str:
    """nvidia-container-cli `list` order: nodes, /proc caps, binaries, libs, 32-bit, IPC,
    firmware; one host path per line."""
    def kind(container_path: str, options: tuple[str, ...]) -> int:
        if container_path.startswith("/proc/"):
            return 1
        if container_path.startswith("/usr/bin/"):
            return 2
        if container_path.startswith(lib_dir + "/"):
            return 3
        if container_path.startswith(lib32_dir + "/"):
            return 4
        if "noexec" in options:
            return 5
        return 6

    lines = [n.host_path for n in plan.device_nodes]
    mounts = sorted(plan.mounts, key=lambda m: kind(m.container_path, m.options))
    lines += [m.host_path for m in mounts]
    return "".join(f"{line}\n" for line in lines)


def plan_text(plan: Plan) -> str:
    """`nvhook plan`: one line per thing the hook would do, in the helper's order."""
    out = []
    for n in plan.device_nodes:
        out.append(f"device   {n.path}  ({n.type} {n.major}:{n.minor}) <- {n.host_path}")
    for m in plan.mounts:
        out.append(f"mount    {m.container_path}  [{','.join(m.options)}] <- {m.host_path}")
    for s in plan.symlinks:
        out.append(f"symlink  {s.link} -> {s.target}")
    if plan.proc_mask:
        out.append(f"procmask {plan.proc_mask.container_dir}  files="
                   f"{','.join(plan.proc_mask.files)} gpus="
                   f"{','.join(plan.proc_mask.gpu_bus_ids) or '-'}")
    if plan.app_profile:
        out.append(f"procmask {plan.app_profile.container_dir}  app profile, "
                   f"EGL mask 0x{plan.app_profile.mask:x}")
    for rule in plan.cgroup_rules:
        out.append(f"cgroup   allow {rule}")
    if plan.ldconfig_dirs:
        out.append(f"ldconfig {' '.join(plan.ldconfig_dirs)}")
    return "\n".join(out) + "\n"
