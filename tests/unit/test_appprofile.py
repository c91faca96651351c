"""The application profile a graphics or display container gets (nvhook/appprofile.py,
docs/compat.md R16c): the generated file, the plan part, the helper's record, the finish
hook's option, and where the hook stages the file on the host."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from nvhook import appprofile, finish
from nvhook.apply import render_body
from nvhook.edits import plan_edits, split_for_spec
from nvhook.finish import GPU, PROC, Earned, Work
from nvhook.model import APP_PROFILE_DIR, AppProfile, Plan, ProcMask
from nvhook.plan import PROC_MASK_FILES, build_plan
from nvhook.record import replace
from tests.unit.test_plan import DEB, INV, plan_for

# What NVIDIA's hook 1.17.2 wrote into the container for GPUs 0 and 1 (read in a container
# started through it on the fake driver; tests/compat checks it stays the same).
NVIDIA_TEXT_0x3 = ('{ "profiles": [{"name": "_container_", "settings": '
                   '["EGLVisibleDGPUDevices", 0x3]}], "rules": [{"pattern": [], '
                   '"profile": "_container_"}]}')


# ---------------------------------------------------------------------------- generator
def test_profile_text_is_the_drivers_format() -> None:
    assert appprofile.profile_text(0x3) == NVIDIA_TEXT_0x3
    assert len(NVIDIA_TEXT_0x3) == 138           # the size seen in NVIDIA's container
    assert "0xff)" not in appprofile.profile_text(0xFF)
    assert '"EGLVisibleDGPUDevices", 0xff]' in appprofile.profile_text(0xFF)
    assert not appprofile.profile_text(1).endswith("\n")


def test_profile_files_none_without_a_gpu() -> None:
    assert appprofile.profile_files(0) == {}
    assert appprofile.profile_files(2) == {"10-container.conf": appprofile.profile_text(2)}


def test_mask_of_minors() -> None:
    assert appprofile.mask_of([]) == 0
    assert appprofile.mask_of([0, 1]) == 0x3
    assert appprofile.mask_of([5, 5, 64]) == (1 << 5) | (1 << 64)
    with pytest.raises(ValueError):
        appprofile.mask_of([-1])


# ---------------------------------------------------------------------------- the plan
@pytest.mark.parametrize("caps, devices, mask", [
    ("graphics", "all", 0x3),
    ("display", "all", 0x3),
    ("graphics,display,compute", ("0",), 0x1),
    ("graphics", ("1",), 0x2),
    ("graphics", ("MIG-cccccccc-0000-0000-0000-000000000000",), 0x2),   # its parent's bit
    ("graphics", ("1:0", "0"), 0x3),
    ("graphics", (), 0),                                                # none: empty dir
])
def test_graphics_and_display_get_the_mask_of_their_gpus(caps: str, devices: object,
                                                         mask: int) -> None:
    plan = plan_for(caps, devices=devices)
    assert plan.app_profile == AppProfile(mask, APP_PROFILE_DIR)


@pytest.mark.parametrize("caps", ["utility", "compute", "video", "ngx", "compat32",
                                  "utility,compute,video,ngx,compat32"])
def test_no_profile_without_graphics_or_display(caps: str) -> None:
    assert plan_for(caps).app_profile is None


def test_the_mask_follows_device_minors_not_indices() -> None:
    from nvhook.model import Request

    gpus = (replace(INV.gpus[0], minor=4), replace(INV.gpus[1], minor=7))
    nodes = tuple(replace(n, path=f"/dev/nvidia{m}", minor=m)
                  for n, m in zip([n for n in INV.device_nodes
                                   if n.path in ("/dev/nvidia0", "/dev/nvidia1")], (4, 7),
                                  strict=True))
    inv = replace(INV, gpus=gpus, device_nodes=INV.device_nodes + nodes)
    plan = build_plan(Request(devices=("1",), capabilities=frozenset({"graphics"})), inv, DEB)
    assert plan.app_profile == AppProfile(1 << 7)
    plan = build_plan(Request(devices="all", capabilities=frozenset({"display"})), inv, DEB)
    assert plan.app_profile == AppProfile((1 << 4) | (1 << 7))


# ---------------------------------------------------------------------------- the helper
def test_helper_record_is_a_procmask_without_bus_ids() -> None:
    body = render_body(plan_for("graphics", devices=("1",)), app_profile_dir="/c/app/2")
    assert (f"procmask\t{APP_PROFILE_DIR}\t/c/app/2\t10-container.conf\t\n") in body
    empty = render_body(plan_for("graphics", devices=()), app_profile_dir="/c/app/0")
    assert f"procmask\t{APP_PROFILE_DIR}\t/c/app/0\t\t\n" in empty
    assert APP_PROFILE_DIR not in render_body(plan_for("compute"))
    with pytest.raises(ValueError):
        render_body(plan_for("graphics"))


def test_stage_in_the_cache_dir_is_root_only_and_kept(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    directory, names = appprofile.stage(str(cache), 0x3)
    assert directory == str(cache / "app-profile" / "3") and names == ("10-container.conf",)
    f = Path(directory) / "10-container.conf"
    assert f.read_text() == NVIDIA_TEXT_0x3
    assert stat.S_IMODE(f.stat().st_mode) == 0o600
    for d in (cache, cache / "app-profile", Path(directory)):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700
    ino = f.stat().st_ino
    assert appprofile.stage(str(cache), 0x3) == (directory, names)
    assert f.stat().st_ino == ino                 # written once per mask
    f.write_text("tampered")
    appprofile.stage(str(cache), 0x3)
    assert f.read_text() == NVIDIA_TEXT_0x3
    assert appprofile.stage(str(cache), 0) == (str(cache / "app-profile" / "0"), ())
    appprofile.cleanup()
    assert f.exists()


def test_stage_without_cache_dir_is_a_temp_dir_removed_by_cleanup(tmp_path: Path) -> None:
    directory, names = appprofile.stage("", 0x1)
    assert names == ("10-container.conf",)
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
    assert (Path(directory) / names[0]).read_text() == appprofile.profile_text(1)
    appprofile.cleanup()
    assert not os.path.exists(directory)


def test_stage_in_an_untrusted_cache_dir_falls_back_to_a_temp_dir(tmp_path: Path) -> None:
    cache = tmp_path / "open"
    cache.mkdir(mode=0o777)
    cache.chmod(0o777)
    directory, _ = appprofile.stage(str(cache), 0x1)
    assert not directory.startswith(str(cache))
    appprofile.cleanup()
    assert not os.path.exists(directory)


def test_a_planted_app_profile_dir_is_refused_not_replaced_by_a_temp_dir(
        tmp_path: Path) -> None:
    """A cached helper input must never name a temp dir: inside a trusted cache dir, an
    app-profile part that cannot be trusted is an error (plan_body words it)."""
    from nvhook.apply import plan_body
    from nvhook.config import Config
    from nvhook.errors import NvhookError

    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    (cache / "app-profile").symlink_to(tmp_path)
    with pytest.raises(OSError):
        appprofile.stage(str(cache), 1)
    with pytest.raises(NvhookError, match="application profile"):
        plan_body(plan_for("graphics"), Config(cache_dir=str(cache), no_cgroups=True))


def test_cached_dir_of() -> None:
    assert appprofile.cached_dir_of("/run/nvhook/app-profile/3") == ("/run/nvhook", 3)
    assert appprofile.cached_dir_of("/run/nvhook/app-profile/0") == ("/run/nvhook", 0)
    for other in ("/tmp/nvhook-app-profile.x1", "/run/nvhook/app-profile/03",
                  "/run/nvhook/app-profile/zz", "/run/nvhook/other/3", "app-profile/3"):
        assert appprofile.cached_dir_of(other) is None


def test_a_cached_body_whose_profile_dir_is_gone_gets_it_back(tmp_path: Path) -> None:
    from nvhook.apply import _restage, plan_body
    from nvhook.config import Config

    cache = tmp_path / "cache"
    body = plan_body(plan_for("graphics", devices=("1",)),
                     Config(cache_dir=str(cache), no_cgroups=True))
    f = cache / "app-profile" / "2" / "10-container.conf"
    assert f"\t{f.parent}\t10-container.conf\t" in body
    f.unlink()
    f.parent.rmdir()
    _restage(body)
    assert f.read_text() == appprofile.profile_text(2)


# ---------------------------------------------------------------------------- spec mode, CDI
def test_spec_mode_finish_hook_carries_the_mask() -> None:
    plan = plan_for("graphics,compute", devices=("1",))
    rest = split_for_spec(plan)[1]
    assert rest.app_profile == AppProfile(0x2)
    (hook,) = plan_edits(plan, {}, "/usr/bin/nvhook").hooks
    i = hook.args.index("--app-profile")
    assert hook.args[i + 1] == "0x2"
    work, unknown = finish.decode(list(hook.args[3:]), "/proc/driver/nvidia")
    assert unknown == [] and work.plan.app_profile == AppProfile(0x2)
    assert finish.narrow(work, {(195, 0), (195, 1)}).app_profile == AppProfile(0x2)
    assert "--app-profile" not in plan_edits(plan_for("compute"), {}, "/x").hooks[0].args


def test_cdi_mask_is_what_the_containers_nodes_earn() -> None:
    """CDI: the common hook has mask 0; a GPU's row gives its bus id's minor, a MIG device
    (whose key is a caps node) earns its parent's bus id, hence the parent's bit."""
    mask = ProcMask("/proc/driver/nvidia", PROC_MASK_FILES, ())
    work = Work(Plan(proc_mask=mask, app_profile=AppProfile(0)), (
        Earned(GPU, 195, 4, "B4"), Earned(GPU, 195, 7, "B7"), Earned(GPU, 241, 22, "B7"),
        Earned(PROC, 241, 22, "capabilities/gpu7/mig/gi1/ci0/access")))
    assert finish.narrow(work, set()).app_profile == AppProfile(0)
    assert finish.narrow(work, {(195, 4)}).app_profile == AppProfile(1 << 4)
    assert finish.narrow(work, {(241, 22)}).app_profile == AppProfile(1 << 7)
    assert finish.narrow(work, {(195, 4), (195, 7)}).app_profile == AppProfile(0x90)
    # without a /proc mask the profile is narrowed all the same
    bare = Work(replace(work.plan, proc_mask=None), work.earned)
    assert finish.narrow(bare, {(195, 7)}).app_profile == AppProfile(1 << 7)


def test_cdi_spec_common_hook_has_the_profile() -> None:
    from nvhook.cdi.devices import cdi_devices

    devices = cdi_devices(INV, frozenset({"graphics", "compute", "utility"}), DEB)
    assert devices.common.app_profile == AppProfile(0)
    (hook,) = plan_edits(devices.common, {}, "/x", earned=devices.earned).hooks
    assert hook.args[hook.args.index("--app-profile") + 1] == "0x0"
