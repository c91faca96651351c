"""Real containers for tests, the demo and the GPU proof: a busybox + glibc rootfs with no
NVIDIA file in it, an OCI bundle made by `runc spec`, and `runc run`.

Usable as a library (tests) and as a script (scripts/demo.sh, tests/gpu/run.sh):
    python3 tests/containers.py rootfs DEST [--copy FILE:CONTAINER_PATH ...]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

GLIBC_LIBS = ("libc.so.6", "libdl.so.2", "libpthread.so.0", "libm.so.6", "librt.so.1",
              "libresolv.so.2")
TRIPLET = "x86_64-linux-gnu"


def _host_lib(name: str) -> Path:
    for d in (f"/lib/{TRIPLET}", f"/usr/lib/{TRIPLET}", "/lib64", "/usr/lib64"):
        p = Path(d) / name
        if p.exists():
            return p.resolve()
    raise FileNotFoundError(name)


def make_rootfs(dest: Path, *, debian: bool = True, copies: dict[str, Path] | None = None) -> Path:
    """busybox (static) + the host's glibc, an /etc/ld.so.conf and a cache of its own."""
    busybox = shutil.which("busybox") or "/bin/busybox"
    for d in ("bin", "dev", "proc", "sys", "tmp", "etc/ld.so.conf.d", f"lib/{TRIPLET}",
              "lib64", f"usr/lib/{TRIPLET}", "usr/bin", "root", "run", "var/run"):
        (dest / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2(busybox, dest / "bin/busybox")
    applets = subprocess.run([str(dest / "bin/busybox"), "--list"], capture_output=True,
                             text=True, check=True).stdout.split()
    for applet in applets:
        link = dest / "bin" / applet
        if not link.exists() and applet != "busybox":
            link.symlink_to("busybox")
    for name in GLIBC_LIBS:
        try:
            shutil.copy2(_host_lib(name), dest / f"lib/{TRIPLET}" / name)
        except FileNotFoundError:
            continue
    loader = _host_lib("ld-linux-x86-64.so.2")
    shutil.copy2(loader, dest / f"lib/{TRIPLET}/ld-linux-x86-64.so.2")
    shutil.copy2(loader, dest / "lib64/ld-linux-x86-64.so.2")
    (dest / "etc/ld.so.conf").write_text("include /etc/ld.so.conf.d/*.conf\n")
    (dest / f"etc/ld.so.conf.d/{TRIPLET}.conf").write_text(
        f"/lib/{TRIPLET}\n/usr/lib/{TRIPLET}\n")
    (dest / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (dest / "etc/group").write_text("root:x:0:\n")
    if debian:
        (dest / "etc/debian_version").write_text("12.0\n")
    for container_path, host in (copies or {}).items():
        target = dest / container_path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(host, target)
    subprocess.run(["ldconfig", "-r", str(dest)], check=True)
    return dest


def make_bundle(dest: Path, rootfs: Path, args: list[str], *, env: list[str] = (),  # type: ignore[assignment]
                hooks: dict[str, list[dict[str, Any]]] | None = None,
                edit: Any = None) -> Path:
    """An OCI bundle from `runc spec`, writable root, no terminal."""
    dest.mkdir(parents=True, exist_ok=True)
    cfg_path = dest / "config.json"
    if cfg_path.exists():
        cfg_path.unlink()
    subprocess.run(["runc", "spec", "--bundle", str(dest)], check=True)
    spec = json.loads(cfg_path.read_text())
    spec["root"] = {"path": os.path.relpath(rootfs, dest) if rootfs.is_relative_to(dest)
                    else str(rootfs), "readonly": False}
    spec["process"]["terminal"] = False
    spec["process"]["args"] = list(args)
    spec["process"]["env"] = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                              *env]
    if hooks:
        spec["hooks"] = hooks
    if edit is not None:
        edit(spec)
    cfg_path.write_text(json.dumps(spec, indent=2))
    return dest


def runc_run(bundle: Path, container_id: str, *, root: Path, timeout: float = 60,
             runc: str = "runc") -> subprocess.CompletedProcess[str]:
    """`runc run` in the foreground; returns the finished process (stdout, stderr, rc)."""
    root.mkdir(parents=True, exist_ok=True)
    try:
        return subprocess.run([runc, "--root", str(root), "run", "--bundle", str(bundle),
                               container_id], capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
    finally:
        subprocess.run([runc, "--root", str(root), "delete", "--force", container_id],
                       capture_output=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("rootfs")
    r.add_argument("dest")
    r.add_argument("--copy", action="append", default=[], help="HOST:CONTAINER_PATH")
    r.add_argument("--no-debian", action="store_true")
    opts = p.parse_args(argv)
    copies = {}
    for item in opts.copy:
        host, _, inside = item.partition(":")
        copies[inside] = Path(host)
    make_rootfs(Path(opts.dest), debian=not opts.no_debian, copies=copies)
    print(opts.dest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
