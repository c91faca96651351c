"""The hook's plan cache: keyed by everything the plan is made from, trusted only if ours."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from nvhook import plancache, record
from nvhook.config import load_config
from nvhook.model import Request
from nvhook.rootfs import Layout
from tests.fakedriver import build_fake_driver

DEB = Layout("/usr/lib/x86_64-linux-gnu", "/usr/lib/i386-linux-gnu")
ALL = Request("all", frozenset({"utility", "compute"}))


@pytest.fixture
def host(tmp_path: Path):
    drv = build_fake_driver(tmp_path / "drv", gpus=2, mig_gpus=(1,))
    config = record.replace(load_config(str(drv.config_path), cache_dir=None),
                            cache_dir=str(tmp_path / "cache"))
    return drv, config


def _touch_later(path: Path) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def test_same_inputs_same_key(host) -> None:
    drv, config = host
    assert plancache.cache_key(config, ALL, DEB) == plancache.cache_key(config, ALL, DEB)


@pytest.mark.parametrize("change", [
    "request-devices", "request-caps", "request-requirement", "layout", "config",
    "library-added", "library-removed", "ldcache", "node-removed", "proc-devices",
    "gpu-information", "mig-layout", "firmware", "binary", "ipc-socket",
])
def test_every_input_changes_the_key(host, change: str) -> None:
    drv, config = host
    before = plancache.cache_key(config, ALL, DEB)
    request, layout = ALL, DEB
    proc = Path(config.proc_root)
    if change == "request-devices":
        request = record.replace(ALL, devices=("0",))
    elif change == "request-caps":
        request = record.replace(ALL, capabilities=frozenset({"utility"}))
    elif change == "request-requirement":
        request = record.replace(ALL, requirements=("cuda>=12.0",))
    elif change == "layout":
        layout = Layout("/usr/lib64", "/usr/lib")
    elif change == "config":
        config = record.replace(config, no_cgroups=True)
    elif change == "library-added":
        (drv.lib_dir / f"libnvidia-new.so.{drv.driver_version}").write_bytes(b"")
    elif change == "library-removed":
        (drv.lib_dir / f"libcuda.so.{drv.driver_version}").unlink()
    elif change == "ldcache":
        _touch_later(drv.root / "etc/ld.so.cache")
    elif change == "node-removed":
        (drv.dev_root / "dev/nvidia1").unlink()
    elif change == "proc-devices":
        (proc / "devices").write_text((proc / "devices").read_text() + "250 nvidia-new\n")
    elif change == "gpu-information":
        info = next((proc / "driver/nvidia/gpus").iterdir()) / "information"
        info.write_text(info.read_text().replace("Device Minor", "Device  Minor"))
    elif change == "mig-layout":
        next(p for p in (proc / "driver/nvidia/capabilities").rglob("ci*") if p.is_dir()
             ).rename(proc / "driver/nvidia/gone")
    elif change == "firmware":
        (drv.firmware_dir / "gsp_new.bin").write_bytes(b"")
    elif change == "binary":
        (drv.bin_dir / "nvidia-smi").unlink()
    elif change == "ipc-socket":
        os.unlink(config.persistenced_socket)
    assert plancache.cache_key(config, request, layout) != before


def test_store_load_and_trust(host) -> None:
    drv, config = host
    key = plancache.cache_key(config, ALL, DEB)
    assert plancache.load(config.cache_dir, key) is None
    plancache.store(config.cache_dir, key, "device\t...\nend\n")
    assert plancache.load(config.cache_dir, key) == "device\t...\nend\n"
    assert plancache.load(config.cache_dir, key + "x") is None
    entry = next(Path(config.cache_dir).iterdir())
    assert entry.stat().st_mode & 0o777 == 0o600
    entry.chmod(0o664)
    assert plancache.load(config.cache_dir, key) is None


def _hook_twice_code(config_path: str, cache_dir: str, bundle: Path) -> str:
    # The helper run is replaced by a recorder: this test is about what the hook imports and
    # decides; tests/e2e runs the same path under runc for real.
    return f"""
import json, sys
from nvhook import apply, hook, record
from nvhook.config import load_config
bodies = []
apply.apply_body = lambda body, container, config: bodies.append(body)
config = record.replace(load_config({config_path!r}, cache_dir=None), cache_dir={cache_dir!r})
state = json.dumps({{"id": "x", "pid": 4242, "bundle": {str(bundle)!r}}})
hook.prestart(config, state)
print(json.dumps(bodies))
print(json.dumps(sorted(m for m in sys.modules if m.startswith("nvhook"))))
"""


def test_hit_skips_discovery_and_gives_the_same_body(host, tmp_path: Path) -> None:
    import json
    import subprocess
    import sys
    drv, config = host
    bundle = tmp_path / "bundle"
    (bundle / "rootfs/etc").mkdir(parents=True)
    (bundle / "config.json").write_text(json.dumps(
        {"root": {"path": "rootfs"}, "process": {"env": ["NVIDIA_VISIBLE_DEVICES=all"]}}))
    code = _hook_twice_code(str(drv.config_path), config.cache_dir, bundle)
    runs = []
    for _ in range(2):
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
        bodies, modules = (json.loads(line) for line in p.stdout.splitlines())
        runs.append((bodies, modules))
    (first, cold_modules), (second, hot_modules) = runs
    assert first == second and "device\t/dev/nvidia0\t" in first[0]
    assert "nvhook.inventory" in cold_modules and "nvhook.plan" in cold_modules
    assert not [m for m in hot_modules if m.startswith("nvhook.inventory") or
                m in ("nvhook.plan", "nvhook.devselect", "nvhook.require")]


def test_thousand_distinct_requests_keep_the_cache_bounded(host, tmp_path: Path) -> None:
    """Issue 10 item 2: 1000 hook starts, each with distinct NVIDIA_REQUIRE_* values (some
    long, some over the cacheable size), through the real hook path; the cache directory
    stays within its bounds and holds no key text."""
    import subprocess
    import sys
    drv, config = host
    bundle = tmp_path / "bundle"
    (bundle / "rootfs/etc").mkdir(parents=True)
    code = f"""
import json
from nvhook import apply, hook, record
from nvhook.config import load_config
apply.apply_body = lambda body, container, config: None   # the helper run (tests/e2e runs it)
config = record.replace(load_config({str(drv.config_path)!r}, cache_dir=None),
                        cache_dir={config.cache_dir!r})
state = json.dumps({{"id": "x", "pid": 4242, "bundle": {str(bundle)!r}}})
for i in range(1000):
    pad = " ".join(["cuda>=1.0"] * (i % 3) * 150)    # 0, ~1.5 KB or ~3 KB (over 4 KB: i%3==2 x2)
    env = ["NVIDIA_VISIBLE_DEVICES=all", f"NVIDIA_REQUIRE_N{{i}}=cuda>=1.{{i}} {{pad}}"]
    if i % 7 == 0:
        env.append("NVIDIA_REQUIRE_BIG=" + pad + " " + pad)
    with open({str(bundle / "config.json")!r}, "w") as f:
        json.dump({{"root": {{"path": "rootfs"}}, "process": {{"env": env}}}}, f)
    hook.prestart(config, state)
"""
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    plans = [e for e in Path(config.cache_dir).iterdir() if e.name.startswith("plan-")]
    size = sum(e.stat().st_size for e in Path(config.cache_dir).iterdir())
    print(f"cache after 1000 distinct starts: {len(plans)} plans, {size} bytes")
    assert len(plans) <= plancache.MAX_ENTRIES
    assert size <= plancache.MAX_TOTAL_BYTES + 64 * 1024      # plus the config/NVML entries
    assert not [e for e in Path(config.cache_dir).iterdir() if e.name.startswith(".")]
    for e in plans:
        assert b"cuda>=1." not in e.read_bytes()                # digests, never the key


def test_long_request_is_not_cached(host) -> None:
    drv, config = host
    long = record.replace(ALL, requirements=("cuda>=1.0 " * 500,))
    assert plancache.cache_key(config, long, DEB) == ""
    plancache.store(config.cache_dir, "", "body")
    assert plancache.load(config.cache_dir, "") is None
    assert not Path(config.cache_dir).exists()


def test_prune_removes_the_oldest(tmp_path: Path) -> None:
    d = tmp_path / "cache"
    d.mkdir(mode=0o700)
    for i in range(10):
        f = d / f"plan-{i:02d}.json"
        f.write_bytes(b"x" * 100)
        os.utime(f, (i, i))
    (d / "config-x.json").write_bytes(b"{}")
    plancache.prune(str(d), max_entries=4, max_bytes=10_000)
    assert sorted(p.name for p in d.iterdir()) == [
        "config-x.json", "plan-06.json", "plan-07.json", "plan-08.json", "plan-09.json"]
    plancache.prune(str(d), max_entries=4, max_bytes=250)
    assert sorted(p.name for p in d.iterdir()) == ["config-x.json", "plan-08.json",
                                                   "plan-09.json"]


@pytest.mark.parametrize("bad", ["fifo", "symlink", "group-writable", "foreign-owner"])
def test_untrusted_cache_dir_or_entry_is_a_quick_miss(host, tmp_path: Path, bad: str) -> None:
    """Issue 10 item 4: a FIFO in the cache directory must not hang the hook; a directory
    that is a symlink, writable by others or not ours is not used."""
    drv, config = host
    key = plancache.cache_key(config, ALL, DEB)
    cache = Path(config.cache_dir)
    if bad == "fifo":
        cache.mkdir(mode=0o700)
        os.mkfifo(plancache._path(str(cache), key), 0o600)
    elif bad == "symlink":
        (tmp_path / "elsewhere").mkdir(mode=0o700)
        cache.symlink_to(tmp_path / "elsewhere")
    elif bad == "group-writable":
        cache.mkdir()
        cache.chmod(0o770)
    else:
        cache.mkdir(mode=0o700)
        os.chown(cache, 65534, 65534)
    assert plancache.load(str(cache), key) is None           # returns at once, no hang
    plancache.store(str(cache), key, "body")
    # a trusted directory gets the FIFO replaced by a real entry; an untrusted one is unused
    assert plancache.load(str(cache), key) == ("body" if bad == "fifo" else None)
    if bad == "symlink":
        assert list((tmp_path / "elsewhere").iterdir()) == []


def test_digest_is_sha256_without_hashlib() -> None:
    """The caches' names: SHA-256 from the builtin module (_sha256, or _sha2 on Python
    3.12+), not hashlib, whose import cost the warm hook 3 ms on the H200's Python 3.12."""
    import hashlib
    import subprocess

    from nvhook.cachefile import digest
    assert digest("é") == hashlib.sha256("é".encode()).hexdigest()
    code = ("import sys; from nvhook.cachefile import digest; digest('x'); "
            "assert 'hashlib' not in sys.modules, 'hashlib imported'")
    repo = str(Path(__file__).resolve().parents[2])
    subprocess.run(["/usr/bin/python3", "-IS", "-c",
                    f"import sys; sys.path.insert(0, {repo!r}); " + code], check=True)
