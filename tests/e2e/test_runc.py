"""nvhook as a prestart hook under a real runc, with the fake driver (issue 3's proofs)."""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest



pytestmark = pytest.mark.slow

SHOW = ("nvml-probe; echo nodes: $(ls /dev | grep nvidia | sort | tr '\\n' ' '); "
        "echo gpus: $(ls /proc/driver/nvidia/gpus 2>/dev/null | tr '\\n' ' '); "
        "head -c1 /dev/nvidia{n} 2>&1; echo")


def show(n: int = 0) -> str:
    return SHOW.replace("{n}", str(n))


def field(out: str, name: str) -> list[str]:
    m = re.search(rf"^{name}: ?(.*)$", out, re.M)
    assert m, f"no '{name}:' line in:\n{out}"
    return m.group(1).split()


def test_all_gpus_probe_nodes_and_cgroup(hooked, run_container) -> None:
    r = run_container(show(0), env=["NVIDIA_VISIBLE_DEVICES=all"], hooks=hooked.hook())
    assert r.rc == 0, r.err
    # the probe links nothing NVIDIA: it dlopens libnvidia-ml.so.1 via the container's cache
    assert "count=2" in r.out
    for gpu in hooked.driver.gpus:
        assert f"{gpu.index} {gpu.uuid}" in r.out
    nodes = field(r.out, "nodes")
    assert {"nvidia0", "nvidia1", "nvidiactl", "nvidia-uvm", "nvidia-uvm-tools"} <= set(nodes)
    # the cgroup allows the node (ENXIO: no driver behind it), it does not deny it (EPERM)
    assert "No such device or address" in r.out, r.out
    assert "Operation not permitted" not in r.out
    assert sorted(field(r.out, "gpus")) == sorted(g.proc_bus_id for g in hooked.driver.gpus)


def test_nvidia_smi_inside_matches_host_listing(hooked, run_container) -> None:
    r = run_container("nvidia-smi -L", env=["NVIDIA_VISIBLE_DEVICES=all"], hooks=hooked.hook())
    assert r.rc == 0, r.err
    assert r.out.splitlines() == [f"GPU {g.index}: {g.name} (UUID: {g.uuid})"
                                  for g in hooked.driver.gpus]


@pytest.mark.parametrize("by", ["index", "uuid", "uuid-lower"])
def test_one_gpu_selected(hooked, run_container, by: str) -> None:
    gpu = hooked.driver.gpus[1]
    value = {"index": "1", "uuid": gpu.uuid, "uuid-lower": gpu.uuid.lower()}[by]
    r = run_container(show(1), env=[f"NVIDIA_VISIBLE_DEVICES={value}"], hooks=hooked.hook())
    assert r.rc == 0, r.err
    nodes = field(r.out, "nodes")
    assert "nvidia1" in nodes and "nvidia0" not in nodes
    assert field(r.out, "gpus") == [gpu.proc_bus_id]
    assert "No such device or address" in r.out


def test_without_the_variable_the_container_is_untouched(hooked, run_container) -> None:
    script = "cut -d' ' -f3- /proc/self/mountinfo | sed 's/ - .*//'"
    plain = run_container(script)
    with_hook = run_container(script, hooks=hooked.hook())
    assert plain.rc == 0 and with_hook.rc == 0, with_hook.err
    # mount ids differ between namespaces; the bundle path differs per container
    def norm(out: str) -> list[str]:
        out = re.sub(r"/[0-9a-f]{10}/rootfs", "/B/rootfs", out)
        out = re.sub(r"/nvh-[0-9a-f]{10}", "/ID", out)
        # anonymous filesystems (proc, tmpfs, mqueue...) get a new 0:N per container
        return re.sub(r"^0:\d+ ", "0:N ", out, flags=re.M).splitlines()
    assert norm(with_hook.out) == norm(plain.out)


def test_unknown_uuid_fails_runc_with_one_line_cause(hooked, run_container) -> None:
    r = run_container("true", env=["NVIDIA_VISIBLE_DEVICES=GPU-deadbeef"], hooks=hooked.hook())
    assert r.rc != 0
    assert "GPU-deadbeef: unknown device" in r.err
    assert "fix:" in r.err


def test_unsatisfied_requirement_fails(hooked, run_container) -> None:
    r = run_container("true", env=["NVIDIA_VISIBLE_DEVICES=all", "NVIDIA_REQUIRE_CUDA=cuda>=99.0"],
                      hooks=hooked.hook())
    assert r.rc != 0 and "unsatisfied condition: cuda>=99.0" in r.err


def test_ldconfig_failure_fails_runc_and_undoes(hooked, run_container,
                                                tmp_path: Path) -> None:
    cfg = tmp_path / "bad-ldconfig.toml"
    cfg.write_text(hooked.config.read_text().replace(
        "[hook]\n", '[hook]\nldconfig = "@/bin/false"\n'))
    rootfs = tmp_path / "rootfs-ldconfig"
    shutil.copytree(hooked.rootfs, rootfs, symlinks=True)
    before = sorted(str(p.relative_to(rootfs)) for p in rootfs.rglob("*"))
    r = run_container("true", env=["NVIDIA_VISIBLE_DEVICES=all"], hooks=hooked.hook(cfg),
                      rootfs=rootfs)
    assert r.rc != 0
    assert "ldconfig" in r.err
    after = sorted(str(p.relative_to(rootfs)) for p in rootfs.rglob("*"))
    assert after == before, "the failed hook left files in the rootfs"


def test_library_gone_fails_with_its_path(hooked, run_container, tmp_path: Path) -> None:
    # A driver root whose ld.so.cache names a library that is no longer there.
    from tests.fakedriver import build_fake_driver
    drv = build_fake_driver(tmp_path / "drv", gpus=1)
    victim = drv.lib_dir / f"libnvidia-ptxjitcompiler.so.{drv.driver_version}"
    victim.unlink()
    cfg = tmp_path / "gone.toml"
    cfg.write_text(drv.config_path.read_text() + f'\n[hook]\nhelper = "{hooked.helper}"\n')
    r = run_container("true", env=["NVIDIA_VISIBLE_DEVICES=all"], hooks=hooked.hook(cfg))
    assert r.rc != 0
    assert "libnvidia-ptxjitcompiler.so" in r.err


def test_hostile_rootfs_symlinks_stay_inside(hooked, run_container,
                                             tmp_path: Path) -> None:
    host_lib = tmp_path / "host-lib"
    host_lib.mkdir()
    rootfs = tmp_path / "hostile"
    shutil.copytree(hooked.rootfs, rootfs, symlinks=True)
    libdir = rootfs / "usr/lib/x86_64-linux-gnu"
    shutil.rmtree(libdir)
    libdir.symlink_to(host_lib)                  # absolute host path: must mean <rootfs>/...
    r = run_container("ls /usr/lib/x86_64-linux-gnu | grep -c nvidia; nvml-probe",
                      env=["NVIDIA_VISIBLE_DEVICES=all"], hooks=hooked.hook(), rootfs=rootfs)
    assert r.rc == 0, r.err
    assert list(host_lib.iterdir()) == [], "a file was created outside the rootfs"
    inside = rootfs / str(host_lib).lstrip("/")
    assert any(p.name.startswith("libnvidia-ml.so") for p in inside.iterdir())
    assert "count=2" in r.out


def test_hook_answers_both_names_and_noop_stages(hooked, run_container) -> None:
    r = run_container("ls /dev | grep -c nvidia", env=["NVIDIA_VISIBLE_DEVICES=0"],
                      hooks=hooked.hook(name="nvhook"))
    assert r.rc == 0 and int(r.out.strip()) >= 2, r.err
    hooks = hooked.hook()
    hooks.update(hooked.hook(stage="poststart"))
    hooks.update(hooked.hook(stage="poststop"))
    r = run_container("true", env=["NVIDIA_VISIBLE_DEVICES=0"], hooks=hooks)
    assert r.rc == 0, r.err


def test_createcontainer_stage_is_refused(hooked, run_container) -> None:
    hooks = {"createContainer": hooked.hook()["prestart"]}
    hooks["createContainer"][0]["args"][-1] = "prestart"
    r = run_container("true", env=["NVIDIA_VISIBLE_DEVICES=all"], hooks=hooks)
    assert r.rc != 0 and "not a host pid" in r.err


def test_hook_process_ignores_container_environment(hooked, run_container) -> None:
    # LD_PRELOAD / PYTHONPATH in the image or in runc's env must not reach what nvhook runs.
    evil = hooked.work / "evil"
    evil.mkdir(exist_ok=True)
    (evil / "nvhook").mkdir(exist_ok=True)
    (evil / "nvhook/__init__.py").write_text("raise SystemExit('hijacked')\n")
    hooks = hooked.hook()
    hooks["prestart"][0]["env"] = [f"PYTHONPATH={evil}", "LD_PRELOAD=/nonexistent.so",
                                   "PATH=/usr/bin:/bin"]
    r = run_container("nvml-probe", env=["NVIDIA_VISIBLE_DEVICES=all",
                                         "LD_PRELOAD=/nonexistent.so"], hooks=hooks)
    assert "hijacked" not in r.err
    assert r.rc == 0, r.err
    assert os.path.exists(hooked.helper)


@pytest.mark.parametrize("victim", ["dev", "proc", "proc/driver"])
def test_hostile_dev_and_proc_symlinks_stay_inside(hooked, run_container, tmp_path: Path,
                                                   victim: str) -> None:
    def hostile(tag: str) -> tuple[Path, Path]:
        host_dir = tmp_path / f"host-{tag}"
        host_dir.mkdir()
        (host_dir / "canary").write_text("host file\n")
        rootfs = tmp_path / f"hostile-{tag}"
        shutil.copytree(hooked.rootfs, rootfs, symlinks=True)
        target = rootfs / victim
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(host_dir)             # an absolute host path, from the image
        return host_dir, rootfs

    # runc 1.1.5 itself follows such a /dev link for its /dev/fd, /dev/stdin... links: what
    # it leaves without nvhook is the baseline, and nvhook must add nothing to it.
    plain_dir, plain_root = hostile("plain")
    run_container("true", env=["NVIDIA_VISIBLE_DEVICES=all"], rootfs=plain_root)
    host_dir, rootfs = hostile("hooked")
    r = run_container(show(0), env=["NVIDIA_VISIBLE_DEVICES=all"], hooks=hooked.hook(),
                      rootfs=rootfs)
    assert sorted(p.name for p in host_dir.iterdir()) == \
        sorted(p.name for p in plain_dir.iterdir()), r.err
    assert not [p for p in host_dir.iterdir() if "nvidia" in p.name]
    assert (host_dir / "canary").read_text() == "host file\n"
    if r.rc == 0:
        assert "count=2" in r.out


def test_cached_plan_is_not_used_after_the_host_changed(hooked, run_container,
                                                        tmp_path: Path) -> None:
    from tests.fakedriver import build_fake_driver
    drv = build_fake_driver(tmp_path / "drv", gpus=2)
    cfg = tmp_path / "own.toml"
    cfg.write_text(drv.config_path.read_text() +
                   f'\n[hook]\nhelper = "{hooked.helper}"\ncache-dir = "{tmp_path / "cache"}"\n')
    ok = run_container(show(1), env=["NVIDIA_VISIBLE_DEVICES=all"], hooks=hooked.hook(cfg))
    again = run_container(show(1), env=["NVIDIA_VISIBLE_DEVICES=all"], hooks=hooked.hook(cfg))
    assert ok.rc == 0 and again.rc == 0, again.err
    assert field(ok.out, "nodes") == field(again.out, "nodes")
    assert any(p.name.startswith("plan-") for p in (tmp_path / "cache").iterdir())
    (drv.dev_root / "dev/nvidia1").unlink()    # the GPU node is gone from the host
    r = run_container("true", env=["NVIDIA_VISIBLE_DEVICES=all"], hooks=hooked.hook(cfg))
    assert r.rc != 0 and "device node /dev/nvidia1 is missing" in r.err
