"""The application profile under a real runc on the fake driver (docs/compat.md, R16c): a
graphics or display container reads /etc/nvidia/nvidia-application-profiles-rc.d/
10-container.conf with the mask of its GPUs, on a read-only tmpfs; a compute container has
no such directory; the host keeps nothing of it but, with a cache dir, one root-only file
per mask there."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from nvhook.appprofile import profile_text

pytestmark = pytest.mark.slow

DIR = "/etc/nvidia/nvidia-application-profiles-rc.d"
SCRIPT = (f"ls -ld {DIR} 2>&1 | cut -c1-10; ls {DIR} 2>&1; echo; "
          f"echo profile: $(cat {DIR}/10-container.conf 2>&1); "
          f"echo mount: $(grep ' {DIR} ' /proc/self/mountinfo); "
          f"touch {DIR}/x 2>&1 | grep -o 'Read-only file system'; true")


def _config(hooked, tmp_path: Path, cache: str) -> Path:  # type: ignore[no-untyped-def]
    cfg = tmp_path / f"cfg-{bool(cache)}.toml"
    cfg.write_text(hooked.driver.config_path.read_text() +
                   f'\n[hook]\nhelper = "{hooked.helper}"\ncache-dir = "{cache}"\n')
    return cfg


def _temp_dirs() -> set[str]:
    return {p for p in os.listdir("/tmp") if p.startswith("nvhook-app-profile.")}


@pytest.mark.parametrize("caps, visible, minors", [
    ("graphics", "all", (0, 1)),
    ("display", "1", (1,)),
    ("graphics,compute", "0", (0,)),
])
@pytest.mark.parametrize("cached", [True, False])
def test_graphics_container_reads_the_mask_of_its_gpus(hooked, run_container, tmp_path: Path,
                                                       caps: str, visible: str,
                                                       minors: tuple[int, ...],
                                                       cached: bool) -> None:
    cache = tmp_path / "cache"
    cfg = _config(hooked, tmp_path, str(cache) if cached else "")
    before = _temp_dirs()
    r = run_container(SCRIPT, env=[f"NVIDIA_VISIBLE_DEVICES={visible}",
                                   f"NVIDIA_DRIVER_CAPABILITIES={caps}"],
                      hooks=hooked.hook(cfg))
    assert r.rc == 0, r.err
    mask = sum(1 << m for m in minors)
    gpus = {g.index: g for g in hooked.driver.gpus}
    assert all(gpus[m].minor == m for m in minors)   # the fake driver's minors = indices
    assert f"profile: {profile_text(mask)}" in r.out
    assert r.out.startswith("dr-xr-xr-x\n10-container.conf\n"), r.out
    mount = next(line for line in r.out.splitlines() if line.startswith("mount:"))
    assert " ro," in mount and "nosuid,nodev,noexec" in mount and " - tmpfs " in mount
    assert "Read-only file system" in r.out
    # the host keeps nothing: no temp dir, and with a cache dir one root-only file per mask
    assert _temp_dirs() == before
    if cached:
        files = {str(p.relative_to(cache / "app-profile"))
                 for p in (cache / "app-profile").rglob("*")}
        assert files == {f"{mask:x}", f"{mask:x}/10-container.conf"}
        f = cache / "app-profile" / f"{mask:x}" / "10-container.conf"
        assert f.read_text() == profile_text(mask)
        assert stat.S_IMODE(f.stat().st_mode) == 0o600 and f.stat().st_uid == 0
        again = run_container(SCRIPT, env=[f"NVIDIA_VISIBLE_DEVICES={visible}",
                                           f"NVIDIA_DRIVER_CAPABILITIES={caps}"],
                              hooks=hooked.hook(cfg))   # the cached plan names the same dir
        assert again.rc == 0, again.err
        assert f"profile: {profile_text(mask)}" in again.out
    else:
        assert not cache.exists()


def test_none_gets_an_empty_profile_dir(hooked, run_container, tmp_path: Path) -> None:
    cfg = _config(hooked, tmp_path, "")
    r = run_container(SCRIPT, env=["NVIDIA_VISIBLE_DEVICES=none",
                                   "NVIDIA_DRIVER_CAPABILITIES=graphics"],
                      hooks=hooked.hook(cfg))
    assert r.rc == 0, r.err
    assert r.out.startswith("dr-xr-xr-x\n\n"), r.out
    assert "profile: cat:" in r.out


@pytest.mark.parametrize("caps", ["compute", "utility,compute,video"])
def test_compute_container_has_no_profile_dir(hooked, run_container, caps: str) -> None:
    r = run_container(SCRIPT, env=["NVIDIA_VISIBLE_DEVICES=all",
                                   f"NVIDIA_DRIVER_CAPABILITIES={caps}"],
                      hooks=hooked.hook())
    assert r.rc == 0, r.err
    assert "No such file or directory" in r.out.splitlines()[1], r.out
    assert "mount:" in r.out.splitlines(), r.out


@pytest.mark.parametrize("args, devices, mask", [
    (["--app-profile", "0x2"], (), 0x2),                                    # spec mode
    (["--app-profile", "0x0", "--visible-gpu", "195:0=B0", "--visible-gpu", "195:1=B1"],
     ((195, 1),), 0x2),                                                     # CDI: earned
    (["--app-profile", "0x0", "--visible-gpu", "195:0=B0"], (), 0),         # CDI: no GPU
])
def test_finish_hook_lays_the_profile(hooked, run_container, tmp_path: Path,
                                      args: list[str], devices: tuple[tuple[int, int], ...],
                                      mask: int) -> None:
    """Spec mode and CDI: the createRuntime finish hook generates the file itself."""
    cfg = _config(hooked, tmp_path, "")
    before = _temp_dirs()
    hook = {"createRuntime": [{"path": str(hooked.launcher), "timeout": 30, "args": [
        "nvhook", "--config", str(cfg), "hook", "finish", *args]}]}

    def edit(spec: dict) -> None:  # type: ignore[type-arg]
        for major, minor in devices:
            spec["linux"].setdefault("devices", []).append(
                {"path": f"/dev/nvidia{minor}", "type": "c", "major": major, "minor": minor,
                 "fileMode": 0o666, "uid": 0, "gid": 0})

    r = run_container(SCRIPT, hooks=hook, edit=edit)
    assert r.rc == 0, r.err
    if mask:
        assert f"profile: {profile_text(mask)}" in r.out
    else:
        assert r.out.startswith("dr-xr-xr-x\n\n"), r.out
    assert "Read-only file system" in r.out
    assert _temp_dirs() == before
