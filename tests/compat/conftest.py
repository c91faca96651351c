"""The compat suite's shared bench: NVIDIA's reference binaries (NVHOOK_REFERENCE), nvhook's
launcher and helper, one fake driver per host layout, and pristine rootfs per image layout,
all built once per session."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from nvhook.install import module_dirs, write_launcher
from tests.compat.harness import (
    ENABLE_HINT,
    Bench,
    Host,
    cache_entries,
    nvidia_config,
    reference_dir,
    snapshot,
)
from tests.containers import make_rootfs
from tests.fakedriver import build_fake_driver, build_probe

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def reference() -> Path:
    ref = reference_dir()
    if ref is None:
        pytest.skip(f"NVIDIA's hook 1.17.2 is not available: {ENABLE_HINT}")
    return ref


@pytest.fixture(scope="session")
def bench(nvhook_bench: Bench, reference: Path) -> Bench:
    """The bench with NVIDIA's reference binaries (the suite skips without them)."""
    bench = nvhook_bench
    bench.reference = reference
    for host in bench.hosts.values():
        nvidia_config(host.nvidia_config, reference, host.root or host.driver.root,
                      host.nvidia_config.with_suffix(".log"), host.top)
    return bench


@pytest.fixture(scope="session")
def nvhook_bench(tmp_path_factory: pytest.TempPathFactory) -> Bench:
    """nvhook's side of the bench: needs no reference binaries."""
    work = tmp_path_factory.mktemp("compat")
    reference = Path("/nonexistent-reference")
    helper = work / "bin/nvhook-helper"
    subprocess.run(["sh", str(REPO / "csrc/build.sh"), str(helper)], check=True)
    hook = work / "bin/nvidia-container-runtime-hook"
    write_launcher(str(hook), "/usr/bin/python3", module_dirs())
    probe = build_probe(work / "probe")
    images = {
        "debian": make_rootfs(work / "image-debian",
                              copies={"/usr/local/bin/nvml-probe": probe}),
        "lib64": make_rootfs(work / "image-lib64", debian=False,
                             copies={"/usr/local/bin/nvml-probe": probe}),
    }
    # an image whose library dir is an absolute symlink (/usr/lib/x86_64-linux-gnu ->
    # /opt/lib): both hooks must resolve it inside the rootfs
    linked = work / "image-libdir-link"
    shutil.copytree(images["debian"], linked, symlinks=True)
    (linked / "opt").mkdir()
    shutil.move(str(linked / "usr/lib/x86_64-linux-gnu"), str(linked / "opt/lib"))
    (linked / "usr/lib/x86_64-linux-gnu").symlink_to("/opt/lib")
    subprocess.run(["ldconfig", "-r", str(linked)], check=True)
    images["libdir-link"] = linked
    bench = Bench(reference=reference, nvhook_hook=hook, work=work, images=images,
                  pristine={k: snapshot(v) for k, v in images.items()},
                  pristine_cache={k: cache_entries(v) for k, v in images.items()})
    hook_section = (f'\n[hook]\nhelper = "{helper}"\ncache-dir = "{work / "cache"}"\n')
    # The driver in a root laid out like / (Debian multiarch, ld.so.cache, IPC, /dev)...
    debian = build_fake_driver(work / "drv-debian", gpus=2, mig_gpus=(1,))
    cfg = work / "nvhook-debian.toml"
    cfg.write_text(debian.config_path.read_text() + hook_section)
    bench.hosts["debian"] = Host("debian", debian, work / "nvidia-debian.toml", cfg)
    # the same driver under a hardened config: env requests only from privileged
    # containers, the device plugin's volume-mount list, a swarm resource variable
    top = ("accept-nvidia-visible-devices-envvar-when-unprivileged = false\n"
           "accept-nvidia-visible-devices-as-volume-mounts = true\n"
           'swarm-resource = "DOCKER_RESOURCE_GPU"\n')
    cfg = work / "nvhook-strict.toml"
    cfg.write_text(top + debian.config_path.read_text() + hook_section)
    bench.hosts["strict"] = Host("strict", debian, work / "nvidia-strict.toml", cfg, top)
    # no driver at all: both hooks look in / (this machine has none)
    cfg = work / "nvhook-nodriver.toml"
    cfg.write_text(hook_section)
    bench.hosts["nodriver"] = Host("nodriver", debian, work / "nvidia-nodriver.toml", cfg,
                                   root=Path("/"))
    # a half-removed driver: the ld.so.cache still names a library whose file is gone
    broken = build_fake_driver(work / "drv-broken", gpus=1)
    (broken.lib_dir / f"libnvidia-ptxjitcompiler.so.{broken.driver_version}").unlink()
    cfg = work / "nvhook-broken.toml"
    cfg.write_text(broken.config_path.read_text() + hook_section)
    bench.hosts["broken"] = Host("broken", broken, work / "nvidia-broken.toml", cfg)
    # ... and the GPU operator's driver root (lib64/lib32, its own /dev, IPC sockets and
    # ld.so.cache inside), configured as a user would: the roots only, IPC paths default.
    op = build_fake_driver(work / "drv-operator", gpus=2, layout="driver-root",
                           operator=True)
    cfg = work / "nvhook-operator.toml"
    cfg.write_text("[host]\n"
                   f'driver-root = "{op.root}"\n'
                   f'dev-root = "{op.dev_root}"\n'
                   f'proc-root = "{op.proc_root}"\n' + hook_section)
    bench.hosts["operator"] = Host("operator", op, work / "nvidia-operator.toml", cfg)
    return bench
