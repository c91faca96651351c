"""`nvhook doctor`: check a GPU container node and print one line per finding with its fix.

Each line is ``<status> <area>: <what was found>[; fix: <what to do>]`` with status ``ok``,
``warn`` (works, but a known way to fail is open) or ``FAIL`` (containers will not get
their GPUs); the exit status is 1 when any line is FAIL. docs/troubleshooting.md is keyed
by these lines. The checks, in order: nvhook's config; the driver (loaded, its version);
NVML; persistence; the device nodes against /proc/devices; /dev/char links; the driver
root; each engine's registration (docker, containerd, CRI-O, podman); the CDI specs against
the driver; cgroups (version, driver, and the spec/hook mode that goes with them).

Every path comes from the config (driver, dev and proc roots) or an option, so the same
checks run against the fake driver in the tests.
"""
from __future__ import annotations

import json
import os
import sys

from nvhook.doctor.engines import check_containerd, check_crio, check_docker, check_podman
from nvhook.doctor.findings import FAIL, OK, USAGE, Finding, Paths
from nvhook.doctor.host import (
    check_cdi,
    check_cgroups,
    check_config,
    check_dev_char,
    check_driver,
    check_driver_root,
    check_nodes,
    check_nvml,
    check_persistence,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator



# ---------------------------------------------------------------------------- main
def run_checks(config_path: str | None, paths: Paths) -> Iterator[Finding]:
    config, found = check_config(config_path)
    yield from found
    valid = found[0].status == OK
    info = None
    if valid:
        yield from check_driver(config)
        info, found = check_nvml(config)
        yield from found
        yield from check_persistence(config)
        nodes, found = check_nodes(config)
        yield from found
    systemd, cgroup_findings = check_cgroups(config, paths)
    if valid:
        yield from check_dev_char(nodes, paths, systemd)
        yield from check_driver_root(config, info)
    yield from check_docker(paths)
    yield from check_containerd(paths)
    yield from check_crio(paths)
    yield from check_podman(paths)
    if valid:
        yield from check_cdi(info, paths)
    yield from cgroup_findings


def main(config_arg: str | None, args: list[str]) -> int:
    from nvhook.argv import flag as _flag
    from nvhook.argv import no_extra as _no_extra
    from nvhook.argv import take as _take
    from nvhook.gate import config_file as config_path

    if "-h" in args or "--help" in args:
        sys.stdout.write(USAGE)
        return 0
    paths = Paths()
    as_json = _flag(args, "--json")
    for option, attr in (("--docker-config", "docker"), ("--containerd-config", "containerd"),
                         ("--crio-config", "crio"), ("--dev-char-path", "dev_char"),
                         ("--cgroup-root", "cgroup_root"), ("--runtime-name", "runtime_name"),
                         ("--systemd-dir", "systemd_run")):
        value = _take(args, option)
        if value is not None:
            setattr(paths, attr, value)
    for option, attr in (("--hooks-dir", "hooks_dirs"), ("--spec-dir", "spec_dirs"),
                         ("--bin-dir", "bin_dirs")):
        values = []
        while (value := _take(args, option)) is not None:
            values.append(value)
        if values:
            setattr(paths, attr, values)
    _no_extra(args, "doctor")
    findings = list(run_checks(config_path(config_arg, os.environ), paths))
    if as_json:
        sys.stdout.write(json.dumps([f.__dict__ for f in findings], indent=1) + "\n")
    else:
        for f in findings:
            sys.stdout.write(f.line() + "\n")
    return 1 if any(f.status == FAIL for f in findings) else 0
