"""`nvhook system create-dev-char-symlinks` on the fake driver's dev tree (nvhook/devchar.py)."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from nvhook import devchar
from nvhook.config import load_config
from nvhook.install import module_dirs, write_launcher
from tests.fakedriver import FakeDriver

PYTHON = "/usr/bin/python3"


@pytest.fixture(scope="module")
def launcher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bin") / "nvhook"
    write_launcher(str(path), PYTHON, module_dirs())
    return path


def nvhook(launcher: Path, drv: FakeDriver, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(launcher), "--config", str(drv.config_path), "system",
                           "create-dev-char-symlinks", *args], capture_output=True, text=True,
                          timeout=60)


def _links(d: Path) -> dict[str, str]:
    return {p.name: os.readlink(p) for p in sorted(d.iterdir())}


def _node_rdevs(drv: FakeDriver) -> dict[str, str]:
    out = {}
    for dirpath, _, files in os.walk(drv.dev_root / "dev"):
        for f in files:
            p = os.path.join(dirpath, f)
            st = os.lstat(p)
            if f.startswith("nvidia") and os.major(st.st_rdev):
                out[f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"] = p
    return out


def test_links_every_nvidia_node_udev_style(fake_driver: FakeDriver, launcher: Path) -> None:
    dev_char = fake_driver.dev_root / "dev/char"
    shutil.rmtree(dev_char, ignore_errors=True)
    try:
        p = nvhook(launcher, fake_driver, "--dev-char-path", str(dev_char))
        assert p.returncode == 0, p.stderr
        links = _links(dev_char)
        nodes = _node_rdevs(fake_driver)
        assert set(links) == set(nodes), (links, nodes)
        for name, target in links.items():
            assert not target.startswith("/"), "udev's form: relative to /dev/char"
            assert os.path.samefile(dev_char / target, nodes[name])
        gpu0 = fake_driver.gpus[0]
        assert links[f"195:{gpu0.minor}"] == f"../nvidia{gpu0.minor}"
        assert links["195:255"] == "../nvidiactl"
        assert links[f"{fake_driver.majors['nvidia-uvm']}:1"] == "../nvidia-uvm-tools"
        # caps live one level down
        assert any(t.startswith("../nvidia-caps/") for t in links.values())
        # idempotent; a wrong link is replaced; a non-link is left alone and reported
        again = nvhook(launcher, fake_driver, "--dev-char-path", str(dev_char))
        assert again.returncode == 0 and "already there" in again.stdout
        (dev_char / "195:255").unlink()
        (dev_char / "195:255").symlink_to("../null")
        (dev_char / f"195:{gpu0.minor}").unlink()
        (dev_char / f"195:{gpu0.minor}").write_text("not a link")
        fixed = nvhook(launcher, fake_driver, "--dev-char-path", str(dev_char))
        assert fixed.returncode == 1
        assert f"replaced {dev_char}/195:255 -> ../nvidiactl (was -> ../null)" in fixed.stdout
        assert "is not a symlink; left alone" in fixed.stdout
    finally:
        shutil.rmtree(dev_char, ignore_errors=True)


def test_dry_run_changes_nothing(fake_driver: FakeDriver, launcher: Path,
                                 tmp_path: Path) -> None:
    p = nvhook(launcher, fake_driver, "--dev-char-path", str(tmp_path / "char"), "--dry-run")
    assert p.returncode == 0 and "would link" in p.stdout
    assert not (tmp_path / "char").exists()


def test_create_all_links_nodes_not_made_yet(fake_driver: FakeDriver, tmp_path: Path) -> None:
    """A dev root without nodes (nvidia-modprobe has not run): --create-all links what the
    loaded driver describes; without it there is nothing to link, said so."""
    empty = tmp_path / "devroot"
    (empty / "dev").mkdir(parents=True)
    config = load_config(str(fake_driver.config_path))
    from nvhook.errors import NvhookError
    from nvhook.record import replace

    bare = replace(config, dev_root=str(empty))
    with pytest.raises(NvhookError, match="no NVIDIA device node"):
        devchar.main(bare, ["create-dev-char-symlinks", "--dev-char-path",
                            str(tmp_path / "c")])
    links = devchar.wanted_links(bare, create_all=True)
    uvm = fake_driver.majors["nvidia-uvm"]
    assert links == {**{f"195:{g.minor}": str(empty / f"dev/nvidia{g.minor}")
                        for g in fake_driver.gpus},
                     "195:255": str(empty / "dev/nvidiactl"),
                     f"{uvm}:0": str(empty / "dev/nvidia-uvm"),
                     f"{uvm}:1": str(empty / "dev/nvidia-uvm-tools")}
    lines, problems = devchar.create(links, str(empty / "dev/char"), dry_run=False)
    assert problems == 0
    assert os.readlink(empty / "dev/char/195:255") == "../nvidiactl"


def test_nodes_outside_the_link_dir_get_absolute_targets() -> None:
    assert devchar.link_target("/dev/nvidia0", "/dev/char") == "../nvidia0"
    assert devchar.link_target("/run/nvidia/driver/dev/nvidia0", "/dev/char") == \
        "/run/nvidia/driver/dev/nvidia0"
