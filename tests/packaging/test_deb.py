"""The Debian package: built with the real tools, inspected, and installed, run, removed and
purged with the real dpkg and apt in a throwaway copy-on-write view of this host's root."""
from __future__ import annotations

import ctypes
import os
import re
import shlex
import shutil
import signal
import stat
import subprocess
import tomllib
from pathlib import Path
from typing import Iterator

import pytest

from nvhook import __version__
from nvhook.config import _KEYS, Config, load_config
from nvhook.install import launcher_text

REPO = Path(__file__).resolve().parents[2]
PACKAGING = REPO / "packaging"
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
ENTRY_NAMES = ("nvhook", "nvidia-container-runtime-hook", "nvidia-container-toolkit",
               "nvidia-container-runtime")
# What engines execute: the front door (csrc/front/); the Python launchers it hands over to.
FRONTS = tuple(f"/usr/bin/{n}" for n in ENTRY_NAMES)
LAUNCHERS = tuple(f"/usr/libexec/nvhook/py/{n}" for n in ENTRY_NAMES)
HELPER = "/usr/libexec/nvhook/nvhook-helper"
CONFIG = "/etc/nvhook/config.toml"
DIST_PACKAGES = "/usr/lib/python3/dist-packages"


# ------------------------------------------------------------------ fast: the sources agree
def _uncommented(text: str) -> str:
    """The shipped config with every `#key = value` line switched on."""
    return re.sub(r"^#([a-z0-9-]+ = )", r"\1", text, flags=re.MULTILINE)


def test_shipped_config_changes_nothing_and_names_every_key_with_its_default(
        tmp_path: Path) -> None:
    shipped = (PACKAGING / "config.toml").read_text()
    assert load_config(str(PACKAGING / "config.toml")) == Config()

    enabled = tmp_path / "config.toml"
    enabled.write_text(_uncommented(shipped))
    # Every key uncommented still gives the defaults: each line shows the true default.
    assert load_config(str(enabled)) == Config()
    data = tomllib.loads(enabled.read_text())
    listed = {("", k) for k, v in data.items() if not isinstance(v, dict)}
    listed |= {(s, k) for s, t in data.items() if isinstance(t, dict) for k in t}
    assert listed == set(_KEYS), "packaging/config.toml and nvhook/config.py list different keys"


def _relation_names(field: str) -> set[str]:
    names = set()
    for item in field.split(","):
        for alt in item.split("|"):
            name = alt.split("(")[0].split(":")[0].strip()
            if name:
                names.add(name)
    return names


def test_build_script_installs_every_build_dependency() -> None:
    control = (PACKAGING / "debian/control").read_text()
    m = re.search(r"^Build-Depends:(.*?)^\S", control, flags=re.MULTILINE | re.DOTALL)
    assert m
    wanted = {"debhelper" if n == "debhelper-compat" else n for n in _relation_names(m[1])}
    script = (PACKAGING / "build-deb.sh").read_text()
    listed = re.search(r"^BUILD_DEPS=\((.*?)^\)", script, flags=re.MULTILINE | re.DOTALL)
    assert listed
    assert wanted <= set(listed[1].split()), wanted - set(listed[1].split())


def test_build_refuses_a_changelog_that_disagrees_with_the_package_version(
        tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    for part in ("packaging", "nvhook", "csrc"):
        shutil.copytree(REPO / part, tree / part,
                        ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(REPO / "pyproject.toml", tree)
    init = tree / "nvhook/__init__.py"
    init.write_text(init.read_text().replace(f'"{__version__}"', '"9.9.9"'))
    r = subprocess.run(["bash", str(tree / "packaging/build-deb.sh"), str(tmp_path / "out")],
                       capture_output=True, text=True)
    assert r.returncode == 1
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "9.9.9" in lines[0] and "fix:" in lines[0], r.stderr


# ------------------------------------------------------------------ slow: the real build
class Built:
    def __init__(self, deb: Path, log: str, modules: set[str]) -> None:
        self.deb = deb
        self.log = log
        self.modules = modules      # nvhook/**/*.py of the tree when the build started

    def field(self, name: str) -> str:
        return subprocess.run(["dpkg-deb", "-f", str(self.deb), name], capture_output=True,
                              text=True, check=True).stdout.strip()

    def listing(self) -> dict[str, str]:
        """Path in the package → `ls -l` mode string."""
        out = subprocess.run(["dpkg-deb", "-c", str(self.deb)], capture_output=True,
                             text=True, check=True).stdout
        entries = {}
        for line in out.splitlines():
            mode, _owner, _size, _date, _time, path = line.split(None, 5)
            path = path.split(" -> ")[0]
            entries["/" + path.removeprefix("./").rstrip("/")] = mode
        return entries

    def member(self, path: str) -> str:
        tar = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(self.deb)],
                             capture_output=True, check=True).stdout
        return subprocess.run(["tar", "-xO", "." + path], input=tar, capture_output=True,
                              check=True).stdout.decode("utf-8", "surrogateescape")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    out = tmp_path_factory.mktemp("deb")
    # Taken now: other work in the same tree may add modules while the tests run.
    modules = {f"{DIST_PACKAGES}/{p.relative_to(REPO)}" for p in (REPO / "nvhook").rglob("*.py")}
    r = subprocess.run(["bash", str(PACKAGING / "build-deb.sh"), "--lintian", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-4000:]
    deb = Path(r.stdout.strip())
    assert deb.parent == out and deb.is_file(), r.stdout
    return Built(deb, r.stderr, modules)


@pytest.mark.slow
def test_deb_holds_the_package_the_helper_the_launchers_and_the_config(built: Built) -> None:
    files = built.listing()
    for launcher in LAUNCHERS + FRONTS:
        # Regular files: NVIDIA's purge scripts delete these names when they are symlinks.
        assert files[launcher] == "-rwxr-xr-x", launcher
    assert files[HELPER] == "-rwxr-xr-x"
    assert files[CONFIG] == "-rw-r--r--"
    assert files["/usr/share/man/man1/nvhook.1.gz"].startswith("-")
    assert files["/usr/share/man/man1/nvidia-container-runtime.1.gz"].startswith("-")
    # the udev rule that remakes /dev/char links when an NVIDIA module loads (devchar.py)
    rules = [p for p in files if p.endswith("/rules.d/60-nvhook.rules")]
    assert rules, sorted(p for p in files if "udev" in p)
    assert "nvhook system create-dev-char-symlinks --create-all" in built.member(rules[0])
    assert "/usr/share/doc/nvhook/copyright" in files
    # Every module of the tree is shipped (pyproject's package list has not fallen behind)
    # and nothing lands in a python3.X-specific dir.
    assert built.modules <= set(files), sorted(built.modules - set(files))
    assert not [p for p in files if re.search(r"python3\.\d+", p)]


@pytest.mark.slow
def test_deb_control_fields_and_conffile(built: Built) -> None:
    arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True,
                          check=True).stdout.strip()
    assert built.field("Package") == "nvhook"
    assert built.field("Version") == __version__
    assert built.field("Architecture") == arch
    depends = [d.strip() for d in built.field("Depends").split(",")]
    for wanted in ("python3 (>= 3.11)", "python3-cffi", "python3-pyelftools"):
        assert wanted in depends, depends
    assert any(d.startswith("libc6") for d in depends), "the helper's libc dependency"
    assert built.field("Recommends") == "runc | crun"
    assert "python3-prctl" in depends      # nvhook/harden.py: long-lived processes (issue 10)
    assert built.field("Suggests") == "python3-pyroute2"      # only `cdi refresh --watch`
    for relation in ("Conflicts", "Replaces", "Provides"):
        assert "nvidia-container-toolkit" in _relation_names(built.field(relation)), relation
    conffiles = subprocess.run(
        f"dpkg-deb --ctrl-tarfile {shlex.quote(str(built.deb))} | tar -xO ./conffiles",
        shell=True, capture_output=True, text=True, check=True).stdout
    assert conffiles.split() == [CONFIG]


@pytest.mark.slow
def test_deb_launchers_are_the_isolated_ones_nvhook_install_writes(built: Built) -> None:
    expected = launcher_text("/usr/bin/python3", [DIST_PACKAGES])
    assert expected.startswith("#!/usr/bin/python3 -IS\n")
    for launcher in LAUNCHERS:
        assert built.member(launcher) == expected, launcher
    for front in FRONTS:
        assert built.member(front) == built.member(FRONTS[0])
    assert built.member(CONFIG) == (PACKAGING / "config.toml").read_text()


@pytest.mark.slow
def test_lintian_reports_no_errors(built: Built) -> None:
    assert "build-deb: lintian reports no errors for nvhook_" in built.log
    assert not re.search(r"^E: ", built.log, flags=re.MULTILINE), built.log[-4000:]
    # and no warning either (the last one was the shim's missing manual page)
    assert not re.search(r"^W: ", built.log, flags=re.MULTILINE), built.log[-4000:]


# ------------------------------------------------------------------ slow: install for real
def _die_with_parent() -> None:
    # A killed test run must not leave the namespace (and its tmpfs) held by an orphan.
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class ThrowawayRoot:
    """This host's / seen through an overlay whose upper layer is a tmpfs, in a mount
    namespace held open by one `sleep` process. dpkg and apt run in it for real (chroot),
    and everything they write vanishes with the namespace: the developer's host, its dpkg
    database and its /usr/local/bin launchers are never touched."""

    def __init__(self, base: Path) -> None:
        self.base = str(base)
        q = shlex.quote(self.base)
        script = f"""set -e
mount -t tmpfs -o mode=0755 nvhook-test {q}
mkdir {q}/upper {q}/work {q}/root
mount -t overlay overlay -o lowerdir=/,upperdir={q}/upper,workdir={q}/work {q}/root
mount -t proc proc {q}/root/proc
mount --rbind /dev {q}/root/dev
echo ready
exec sleep infinity
"""
        self.proc = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            preexec_fn=_die_with_parent)
        assert self.proc.stdout is not None
        if self.proc.stdout.readline() != "ready\n":
            _, err = self.proc.communicate(timeout=10)
            raise RuntimeError(f"cannot set up the throwaway root: {err.strip()}")

    def host_path(self, path: str, layer: str = "root") -> Path:
        """Where the host sees ``path`` of the throwaway root (or of its upper layer)."""
        return Path(f"/proc/{self.proc.pid}/root{self.base}/{layer}{path}")

    def run(self, *argv: str, stdin: str = "", env: dict[str, str] | None = None,
            check: bool = True) -> subprocess.CompletedProcess[str]:
        environ = {"PATH": SYSTEM_PATH, "DEBIAN_FRONTEND": "noninteractive", **(env or {})}
        r = subprocess.run(
            ["nsenter", f"--target={self.proc.pid}", "--mount", "chroot",
             f"{self.base}/root", "env", "-i", *(f"{k}={v}" for k, v in environ.items()),
             *argv], input=stdin, capture_output=True, text=True, timeout=300)
        if check:
            assert r.returncode == 0, f"{argv}: rc {r.returncode}\n{r.stdout}\n{r.stderr}"
        return r

    def exists(self, path: str) -> bool:
        return os.path.lexists(self.host_path(path))

    def upper_entries(self) -> set[str]:
        """What the throwaway root holds that the host does not: every non-directory in
        the upper layer (files, symlinks, whiteouts) and every directory new to it."""
        upper = self.host_path("", "upper")
        found = set()
        for dirpath, dirnames, filenames in os.walk(upper):
            rel = "/" + os.path.relpath(dirpath, upper)
            for name in filenames:
                found.add(os.path.normpath(f"{rel}/{name}"))
            for name in dirnames:
                path = os.path.normpath(f"{rel}/{name}")
                if not os.path.lexists(path):
                    found.add(path + "/")
        return found

    def close(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.communicate()


# Paths dpkg and apt keep their own records in; anything else left behind is a leak.
BOOKKEEPING = ("/var/lib/dpkg/", "/var/log/", "/var/cache/", "/var/lib/apt/")


def _host_package_states() -> str:
    # Only this test installs these two, so unlike the host's files (which a developer's
    # scripts/setup.sh may rewrite at any moment) their dpkg state must not move.
    return subprocess.run(["dpkg-query", "-W", "-f=${Package} ${Status}\n", "nvhook",
                           "nvidia-container-toolkit"], capture_output=True, text=True).stdout


@pytest.fixture
def throwaway_root(tmp_path: Path, built: Built) -> Iterator[ThrowawayRoot]:
    host_before = _host_package_states()
    root = ThrowawayRoot(tmp_path)
    try:
        # A fresh host: no nvhook or NVIDIA hook package, no hand-installed nvhook files.
        root.run("dpkg", "--purge", "nvhook", "nvidia-container-toolkit")
        root.run("rm", "-rf", "/usr/libexec/nvhook", "/etc/nvhook", *LAUNCHERS,
                 f"{DIST_PACKAGES}/nvhook")
        shutil.copy2(built.deb, root.host_path("/tmp/nvhook.deb"))
        yield root
    finally:
        root.close()
    assert _host_package_states() == host_before, "the host's dpkg database changed"


@pytest.mark.slow
def test_install_run_remove_and_purge(throwaway_root: ThrowawayRoot, built: Built) -> None:
    root = throwaway_root
    before = root.upper_entries()
    added = [p for p in built.listing() if not root.exists(p)]
    root.run("dpkg", "-i", "/tmp/nvhook.deb")
    root.run("dpkg", "--verify", "nvhook")

    # The launchers run the installed package, whatever the caller's environment says.
    evil = root.host_path("/tmp/evil/nvhook")
    evil.mkdir(parents=True)
    (evil / "__init__.py").write_text("raise SystemExit('imported the wrong nvhook')\n")
    hostile: dict[str, str] = {"PYTHONPATH": "/tmp/evil", "PYTHONHOME": "/tmp/evil",
                               "PYTHONSTARTUP": "/tmp/evil/nvhook/__init__.py"}
    envs: list[dict[str, str]] = [{}, hostile]
    for env in envs:
        r = root.run("/usr/bin/nvhook", "version", env=env)
        assert r.stdout == f"nvhook {__version__}\n"
    root.run("rm", "-rf", "/tmp/evil")
    r = root.run("/usr/bin/nvidia-container-runtime-hook", "poststart")
    assert (r.stdout, r.stderr) == ("", "")

    # The hook path end to end through the shipped config: a container asking for no GPU.
    bundle = root.host_path("/tmp/bundle")
    (bundle / "rootfs").mkdir(parents=True)
    (bundle / "config.json").write_text(
        '{"ociVersion": "1.0.2", "process": {"env": ["PATH=/bin"]}, "root": {"path": "rootfs"}}')
    state = '{"ociVersion": "1.0.2", "id": "t", "status": "creating", "pid": 4242, ' \
            '"bundle": "/tmp/bundle"}'
    r = root.run("/usr/bin/nvidia-container-runtime-hook", "prestart", stdin=state)
    assert (r.stdout, r.stderr) == ("", "")
    root.run("rm", "-rf", "/tmp/bundle")

    helper = root.host_path(HELPER).stat()
    assert stat.S_ISREG(helper.st_mode) and helper.st_mode & 0o111 == 0o111
    assert root.host_path(HELPER).read_bytes()[:4] == b"\x7fELF"
    # postinst byte-compiled the package for the interpreter the launchers use.
    assert list(root.host_path(f"{DIST_PACKAGES}/nvhook/__pycache__").glob("cli.*.pyc"))

    # remove keeps the conffile and nothing else; purge takes that too.
    root.host_path(CONFIG).write_text(root.host_path(CONFIG).read_text() + "# edited\n")
    root.run("dpkg", "-r", "nvhook")
    assert [p for p in added if root.exists(p)] == ["/etc/nvhook", CONFIG]
    assert root.host_path(CONFIG).read_text().endswith("# edited\n")
    root.run("dpkg", "--purge", "nvhook")
    assert [p for p in added if root.exists(p)] == []
    status = root.run("dpkg-query", "-W", "-f=${Status}", "nvhook", check=False)
    assert status.returncode == 1 or status.stdout.endswith("not-installed"), status
    # the hook's caches go with the package (postrm); on a host where /run/nvhook exists
    # (other tests made it), its removal shows in the upper layer as a whiteout
    assert not root.exists("/run/nvhook")
    leftovers = sorted(p for p in root.upper_entries() - before
                       if not p.startswith(BOOKKEEPING) and p != "/run/nvhook")
    assert leftovers == []


def _fake_nvidia_toolkit(tmp: Path) -> Path:
    """A stand-in for NVIDIA's nvidia-container-toolkit package: the hook binary, the
    `nvidia-container-toolkit` alias its postinst makes, and a postrm that deletes either
    name on purge when it is a symlink (older and newer NVIDIA packages do one each)."""
    stage = tmp / "stage"
    (stage / "DEBIAN").mkdir(parents=True)
    (stage / "usr/bin").mkdir(parents=True)
    (stage / "DEBIAN/control").write_text(
        "Package: nvidia-container-toolkit\nVersion: 1.17.0-1\nArchitecture: all\n"
        "Maintainer: nvhook tests <dev@nvhook.invalid>\n"
        "Description: stand-in for NVIDIA's hook package\n made by nvhook's tests\n")
    scripts = {
        "postinst": '[ "$1" = configure ] && [ ! -e /usr/bin/nvidia-container-toolkit ] && '
                    'ln -s nvidia-container-runtime-hook /usr/bin/nvidia-container-toolkit\n',
        "postrm": 'if [ "$1" = purge ]; then\n'
                  '  for n in nvidia-container-runtime-hook nvidia-container-toolkit; do\n'
                  '    [ ! -L /usr/bin/$n ] || rm /usr/bin/$n\n  done\nfi\n',
        "../usr/bin/nvidia-container-runtime-hook": "echo nvidia hook\n",
    }
    for name, body in scripts.items():
        path = stage / "DEBIAN" / name
        path.write_text(f"#!/bin/sh\n{body}exit 0\n")
        path.chmod(0o755)
    deb = tmp / "nvidia-container-toolkit.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(stage), str(deb)],
                   check=True, capture_output=True)
    return deb


@pytest.mark.slow
@pytest.mark.parametrize("install", [
    ("apt-get", "install", "-y", "-q", "--no-install-recommends", "/tmp/nvhook.deb"),
    ("dpkg", "-i", "/tmp/nvhook.deb"),
], ids=["apt", "dpkg"])
def test_switching_from_nvidia_toolkit_replaces_it_and_survives_its_purge(
        throwaway_root: ThrowawayRoot, tmp_path: Path, install: tuple[str, ...]) -> None:
    root = throwaway_root
    shutil.copy2(_fake_nvidia_toolkit(tmp_path), root.host_path("/tmp/nvidia.deb"))
    root.run("dpkg", "-i", "/tmp/nvidia.deb")
    assert root.host_path("/usr/bin/nvidia-container-toolkit").is_symlink()

    # Conflicts + Replaces: either tool removes NVIDIA's package in nvhook's favour.
    r = root.run(*install)
    assert "nvidia-container-toolkit" in r.stdout + r.stderr
    status = root.run("dpkg-query", "-W", "-f=${Status}", "nvidia-container-toolkit").stdout
    # Removed, its conffiles kept (apt also marks it deinstall, dpkg leaves the selection).
    assert status.endswith(" ok config-files"), status
    front = root.host_path(FRONTS[0]).read_bytes()
    assert front.startswith(b"\x7fELF") and b"nvhook-front-marker" in front
    for launcher in FRONTS:
        assert not root.host_path(launcher).is_symlink(), launcher
        assert root.host_path(launcher).read_bytes() == front, launcher

    # Purging what is left of NVIDIA's package must not take nvhook's launchers with it.
    root.run("dpkg", "--purge", "nvidia-container-toolkit")
    for launcher in FRONTS:
        assert root.host_path(launcher).read_bytes() == front, launcher
        # the hook names take a hook stage; the runtime shim hands --version to runc
        root.run(launcher, "--version" if launcher.endswith("-runtime") else "poststart")
    root.run("dpkg", "--verify", "nvhook")

    # Going back: installing NVIDIA's package removes nvhook, and purging nvhook then takes
    # its config but not NVIDIA's hook.
    root.run("apt-get", "install", "-y", "-q", "/tmp/nvidia.deb")
    status = root.run("dpkg-query", "-W", "-f=${Status}", "nvhook").stdout
    assert status.endswith(" ok config-files"), status
    nvidia_hook = root.host_path("/usr/bin/nvidia-container-runtime-hook")
    assert nvidia_hook.read_text() == "#!/bin/sh\necho nvidia hook\nexit 0\n"
    root.run("dpkg", "--purge", "nvhook")
    assert not root.exists("/etc/nvhook")
    assert nvidia_hook.read_text() == "#!/bin/sh\necho nvidia hook\nexit 0\n"
    root.run("dpkg", "--verify", "nvidia-container-toolkit")
