"""Fixtures for the helper tests: the built nvhook-helper, throw-away "containers" (a sleeping
process in its own mount namespace), a rootfs + fake host tree, and a host mount-table guard."""
from __future__ import annotations

import os
import signal
import stat
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from helperkit import REPO, Container, StartContainer, Tree, ns, wait_for


@pytest.fixture(scope="session")
def helper(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """nvhook-helper built by the project's own script."""
    out = tmp_path_factory.mktemp("helper") / "nvhook-helper"
    subprocess.run(["sh", str(REPO / "csrc/build.sh"), str(out)], check=True)
    return out


PROBE_C = r"""
/* Stands in for ldconfig: reports the sandbox it was started in, or fails on request. */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <net/if.h>
#include <linux/capability.h>
extern char **environ;
static int entries(const char *dir) {
    DIR *d = opendir(dir); int n = 0; struct dirent *e;
    if (!d) return -1;
    while ((e = readdir(d))) if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    closedir(d); return n;
}
int main(int argc, char **argv) {
    int open_fds = 0;   /* before this program opens anything itself */
    for (int fd = 3; fd < 64; fd++) if (fcntl(fd, F_GETFD) >= 0) open_fds++;
    char mode[16] = "ok";
    FILE *m = fopen("/probe.mode", "r");
    if (m) {
        if (!fgets(mode, sizeof mode, m)) mode[0] = 0;
        fclose(m);
        mode[strcspn(mode, "\n")] = 0;
    }
    if (!strcmp(mode, "fail")) {
        fprintf(stderr, "probe: first line\nprobe: failing on purpose\n");
        return 3;
    }
    if (!strcmp(mode, "sleep")) { for (;;) pause(); }
    if (!strcmp(mode, "segv")) { volatile int *p = 0; return *p; }
    FILE *o = fopen("/probe.out", "w");
    if (!o) return 4;
    struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct d[2];
    syscall(SYS_capget, &h, d);
    unsigned long long bnd = 0;
    for (int c = 0; c < 64; c++) {
        int r = prctl(PR_CAPBSET_READ, c, 0, 0, 0);
        if (r < 0) break;
        if (r) bnd |= 1ULL << c;
    }
    struct rlimit cpu, as, nofile, fsize;
    getrlimit(RLIMIT_CPU, &cpu); getrlimit(RLIMIT_AS, &as);
    getrlimit(RLIMIT_NOFILE, &nofile); getrlimit(RLIMIT_FSIZE, &fsize);
    int nenv = 0; for (char **e = environ; *e; e++) nenv++;
    struct stat st;
    fprintf(o, "pid=%d\n", (int)getpid());
    fprintf(o, "uid=%d\neff=%llx\nprm=%llx\ninh=%llx\nbnd=%llx\nnnp=%d\n", (int)getuid(),
            d[0].effective | (unsigned long long)d[1].effective << 32,
            d[0].permitted | (unsigned long long)d[1].permitted << 32,
            d[0].inheritable | (unsigned long long)d[1].inheritable << 32, bnd,
            prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0));
    fprintf(o, "cpu=%llu\nas=%llu\nnofile=%llu\nfsize=%llu\nenv=%d\n",
            (unsigned long long)cpu.rlim_max, (unsigned long long)as.rlim_max,
            (unsigned long long)nofile.rlim_max, (unsigned long long)fsize.rlim_max, nenv);
    fprintf(o, "proc=%d\nsys=%d\ndev=%d\nmarker=%d\netc=%d\n", entries("/proc"), entries("/sys"),
            entries("/dev"), stat("/rootfs-marker", &st) == 0, stat("/etc", &st) == 0);
    struct statvfs sv;
    statvfs("/", &sv);
    struct if_nameindex *ifs = if_nameindex();
    int nif = 0;
    for (struct if_nameindex *i = ifs; i && i->if_index; i++) nif++;
    fprintf(o, "rootflags=%s%s%s\nifaces=%d\n", sv.f_flag & ST_NODEV ? "nodev," : "",
            sv.f_flag & ST_NOSUID ? "nosuid," : "", sv.f_flag & ST_RDONLY ? "ro" : "rw", nif);
    fprintf(o, "fds=%d\nargv=", open_fds);
    for (int i = 0; i < argc; i++) fprintf(o, "%s%s", i ? "|" : "", argv[i]);
    fprintf(o, "\n");
    return fclose(o) == 0 ? 0 : 5;
}
"""


@pytest.fixture(scope="session")
def probe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A static stand-in for ldconfig that records its sandbox in /probe.out (see PROBE_C)."""
    d = tmp_path_factory.mktemp("probe")
    (d / "probe.c").write_text(PROBE_C)
    subprocess.run(["cc", "-static", "-O1", "-o", str(d / "probe"), str(d / "probe.c")],
                   check=True)
    return d / "probe"


@pytest.fixture(scope="session")
def testlib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real shared object with SONAME libnvtest.so.1, for ldconfig to find."""
    d = tmp_path_factory.mktemp("lib")
    (d / "t.c").write_text("int nvtest(void) { return 42; }\n")
    out = d / "libnvtest.so.1.2.3"
    subprocess.run(["cc", "-shared", "-fPIC", "-Wl,-soname,libnvtest.so.1", "-o", str(out),
                    str(d / "t.c")], check=True)
    return out


# ---------------------------------------------------------------------------- containers
@pytest.fixture
def start_container() -> Iterator[StartContainer]:
    """start_container(script=None, userns=False, proc_at=None) → Container.

    The default is `unshare --mount --propagation private sleep`; ``script`` runs a shell
    snippet in the new namespace first (then execs the sleep, so the pid stays the same);
    ``userns`` puts the sleep in a user namespace too (its mounts then have locked flags);
    ``proc_at`` mounts a fresh procfs there (in a new pid namespace), like runc does.
    """
    started: list[subprocess.Popen[bytes]] = []

    def start(script: str | None = None, userns: bool = False,
              proc_at: Path | None = None) -> Container:
        tail = ["sleep", "1000"]
        if userns:
            tail = ["unshare", "--user", "--map-root-user", "--mount", "--propagation",
                    "private", *tail]
        if proc_at is not None:
            tail = ["unshare", "--pid", "--fork", "--kill-child", f"--mount-proc={proc_at}", *tail]
        if script is not None:
            tail = ["sh", "-ec", f'{script}\nexec "$@"', "sh", *tail]
        proc = subprocess.Popen(["unshare", "--mount", "--propagation", "private", *tail],
                                stdin=subprocess.DEVNULL)
        started.append(proc)
        c = Container(proc)
        mine = ns("self")

        def ready() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"container exited with {proc.returncode}")
            try:
                if userns and ns(proc.pid, "user") == ns("self", "user"):
                    return False
                if proc_at is not None and str(proc_at) not in c.mounts():
                    return False
                return ns(proc.pid) != mine
            except OSError:
                return False

        wait_for(ready, "the container's namespace")
        return c

    yield start
    for proc in started:
        # The whole exec chain is one pid; --fork children die with the pid namespace.
        proc.send_signal(signal.SIGKILL)
        proc.wait()


# Mount points that other work on this machine (engine tests, benchmarks) adds and removes
# while these tests run; nothing here mounts there.
FOREIGN = ("/var/tmp/", "/tmp/nvh-", "/run/", "/var/lib/")


def _host_mounts(mine: str) -> list[str]:
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4]
        if point.startswith(FOREIGN) or (point.startswith("/tmp/pytest-of-")
                                         and not point.startswith(mine)):
            continue
        out.append(line)
    return out


@pytest.fixture(autouse=True)
def host_mounts_unchanged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Every test must leave the host's mount table exactly as it found it."""
    mine = str(tmp_path_factory.getbasetemp())
    before = _host_mounts(mine)
    yield
    assert _host_mounts(mine) == before


# ---------------------------------------------------------------------------- trees
@pytest.fixture
def tree(tmp_path: Path) -> Tree:
    rootfs = tmp_path / "rootfs"
    host = tmp_path / "host"
    for d in ("usr/lib", "usr/bin", "dev", "etc", "proc", "tmp"):
        (rootfs / d).mkdir(parents=True)
    (rootfs / "rootfs-marker").write_text("inside\n")
    (host / "lib").mkdir(parents=True)
    (host / "lib/libfoo.so.1.0").write_text("FAKE libfoo\n")
    (host / "lib/libbar.so.1.0").write_text("FAKE libbar\n")
    (host / "lib/libfoo.so.1.0").chmod(0o755)
    (host / "bin").mkdir()
    (host / "bin/nvidia-smi").write_text("#!/bin/sh\necho fake\n")
    (host / "bin/nvidia-smi").chmod(0o755)
    (host / "firmware").mkdir()
    (host / "firmware/gsp.bin").write_bytes(b"\x7fGSP")
    (host / "dev").mkdir()
    for name, minor in (("nvidia0", 0), ("nvidia1", 1), ("nvidiactl", 255)):
        os.mknod(host / "dev" / name, 0o666 | stat.S_IFCHR, os.makedev(195, minor))
        os.chmod(host / "dev" / name, 0o666)
    proc = host / "proc/driver/nvidia"
    (proc / "gpus/0000:06:00.0").mkdir(parents=True)
    (proc / "gpus/0000:07:00.0").mkdir(parents=True)
    (proc / "gpus/0000:06:00.0/information").write_text("Model: Fake GPU 0\n")
    (proc / "gpus/0000:07:00.0/information").write_text("Model: Fake GPU 1\n")
    (proc / "params").write_text("ResmanDebugLevel: 4294967295\nModifyDeviceFiles: 1\n"
                                 "DeviceFileUID: 0\n")
    (proc / "version").write_text("NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.0\n")
    (proc / "registry").write_text("Binary: \"\"\n")
    return Tree(rootfs, host)


# ---------------------------------------------------------------------------- cgroup v1
DEVICES = Path("/sys/fs/cgroup/devices")


@pytest.fixture
def devices_cgroup(start_container: StartContainer) -> Iterator[tuple[Container, Path]]:
    """A container in a fresh v1 devices cgroup that denies everything."""
    c = start_container()
    cg = DEVICES / f"nvhook-test-{uuid.uuid4().hex[:8]}"
    cg.mkdir()
    (cg / "cgroup.procs").write_text(str(c.pid))
    (cg / "devices.deny").write_text("a")
    yield c, cg
    (DEVICES / "cgroup.procs").write_text(str(c.pid))
    cg.rmdir()
