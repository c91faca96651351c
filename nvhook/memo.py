"""The memo of the hook's decision, which the front door (csrc/front/front.c) replays without
Python while every input the decision rested on is unchanged (docs/design.md, "The front
door").

After Python has decided for a container (and the helper has done the work), it records:

- the config file's identity (the memo is keyed by it, as the front's facts are);
- the raw ``process.env`` entries that name NVIDIA_* or CUDA_* variables, in order: every
  variable request.py reads has one of these prefixes, so equal lists give equal requests;
- the container's library layout (the rootfs probes of rootfs.container_layout);
- every host input the plan was made from (plancache.host_inputs: the /proc/driver/nvidia
  files, the GPU and MIG listings, the identity of the ld.so.cache, the library, binary and
  firmware directories, the device nodes' directory, the IPC paths), plus the helper and the
  ldconfig that the plan's body names, each with its value when the decision was made;
- the plan's part of the helper's input (what plancache keeps), or "-" for no request.

Only decisions that depend on nothing else are recorded: an unprivileged container (the
front also requires that config.json never names CAP_SYS_ADMIN), a config that reads no
swarm variable and no volume mounts, no debug log, no crun state root, env entries without
characters JSON would escape. The front replays an entry only when the env list, the layout
and every check match; anything else (a missing or stale file, a changed input, a failed
helper) goes to Python, which decides afresh and records again.

File format (``<FRONT_DIR>/memo-<crc>.memo``, written atomically, mode 0600)::

    nvhook-memo 1
    config DEV INO SIZE MTIME_NS | none
    entry                         (up to 4, the most recent last)
    layout debian | lib64 lib32 | lib64 lib | *
    helper PATH | -
    env NVIDIA_VISIBLE_DEVICES=all
    check read|list|stat VALUE PATH
    body HEX | -
"""
from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from nvhook.config import Config
    from nvhook.model import Container
    from nvhook.rootfs import Layout

MAGIC = "nvhook-memo 1"
MAX_ENTRIES = 4        # csrc/front/front.h FRONT_MAX_MEMOS
MAX_ENV = 64           # FRONT_MAX_ENV
MAX_CHECKS = 160       # FRONT_MAX_CHECKS
MAX_BYTES = 512 * 1024  # the front's buffer (MEMO_MAX)
PREFIXES = ("NVIDIA_", "CUDA_")

Entry = tuple[str, str, tuple[str, ...], tuple[tuple[str, str, str], ...], str]


def memo_path(config_path: str | None) -> str:
    from nvhook.frontprep import cache_path
    return cache_path(config_path, "memo", "memo")


def layout_text(layout: Layout) -> str:
    if layout.lib_dir.startswith("/usr/lib/") and layout.lib_dir != "/usr/lib64":
        return "debian"
    return "lib64 lib32" if layout.lib32_dir == "/usr/lib32" else "lib64 lib"


def env_inputs(container: Container) -> tuple[str, ...] | None:
    """The raw NVIDIA_* and CUDA_* entries of process.env in order; None when the front
    could not read them the same way (not a list of strings, characters JSON escapes)."""
    process = container.spec.get("process")
    raw = process.get("env") if isinstance(process, dict) else None
    if raw is None:
        return ()
    if not isinstance(raw, list):
        return None
    found = []
    for entry in raw:
        if not isinstance(entry, str):
            return None
        if entry.startswith(PREFIXES):
            if any(c in '"\\' or not 32 <= ord(c) < 127 for c in entry):
                return None
            found.append(entry)
    return tuple(found) if len(found) <= MAX_ENV else None


def eligible(config: Config, container: Container) -> bool:
    """Whether a decision for this container depends only on what the memo records."""
    from nvhook.hostlayout import split_list

    root = container.state.get("root") if isinstance(container.state, dict) else None
    return bool(config.cache_dir) and not config.debug_log and not container.privileged \
        and not config.accept_volume_mounts and not split_list(config.swarm_resource) \
        and root is None and bool(container.rootfs)


def host_checks(config: Config) -> tuple[list[tuple[str, str, str]], int] | None:
    """Every host input of the plan with its value now (taken before the plan is made: an
    input that changes meanwhile then fails its check), plus the helper and the ldconfig;
    and how many of them, first, are plancache.host_inputs' (its key's host state)."""
    from nvhook import apply, plancache
    from nvhook.errors import NvhookError

    inputs = plancache.host_inputs(config)
    count = len(inputs)
    try:
        helper = apply.find_helper(config)
    except NvhookError:
        return None
    inputs.append(("stat", helper))
    if config.ldconfig.startswith("@"):
        inputs += [("stat", config.ldconfig[1:]), ("stat", config.ldconfig[1:] + ".real")]
    if not config.helper:     # find_helper's search: a helper appearing earlier wins
        inputs += [("stat", apply.LIBEXEC_HELPER), ("stat", apply.REPO_HELPER)]
    checks = []
    for kind, path in inputs:
        if "\n" in path or "\0" in path or not path:
            return None
        checks.append((kind, plancache.evaluate(kind, path), path))
    return (checks, count) if len(checks) <= MAX_CHECKS else None


def record(config: Config, container: Container, layout: Layout | None,
           checks: list[tuple[str, str, str]] | None, body: str | None) -> None:
    """Remember this decision for the front (``body`` None: no request; then ``layout``
    and ``checks`` do not matter). Failures to write are ignored: the front asks Python."""
    from nvhook.frontprep import file_key

    config_path = config.source or None
    key = file_key(config_path)
    env = env_inputs(container)
    if key is None or env is None or not eligible(config, container):
        return
    if body is None:
        entry: Entry = ("*", "-", env, (), "-")
    else:
        from nvhook import apply
        if checks is None or layout is None:
            return
        try:
            helper = apply.find_helper(config)
        except Exception:   # noqa: BLE001 - no memo then
            return
        entry = (layout_text(layout), helper, env, tuple(checks),
                 body.encode("utf-8", "surrogateescape").hex())
    from nvhook.frontprep import read_trusted
    data = read_trusted(memo_path(config_path))
    text = data.decode("utf-8", "surrogateescape") if data is not None else ""
    if text.startswith(f"{MAGIC}\nconfig {key}\n") and "\n" + _entry_text(entry) in text:
        return      # recorded already, every value the same: no parse, no write
    entries = [e for e in _parse(text, key) if e[:3] != entry[:3]] + [entry]
    data = _render(key, entries[-MAX_ENTRIES:])
    if len(data) > MAX_BYTES:
        return
    from nvhook import atomicfile
    try:
        atomicfile.replace(memo_path(config_path), data, mode=0o600, dir_mode=0o700)
    except OSError:
        pass


def _entry_text(entry: Entry) -> str:
    layout, helper, env, checks, body = entry
    lines = ["entry", f"layout {layout}", f"helper {helper}"]
    lines += [f"env {e}" for e in env]
    lines += [f"check {k} {v} {p}" for k, v, p in checks]
    lines.append(f"body {body}")
    return "\n".join(lines) + "\n"


def _render(key: str, entries: list[Entry]) -> bytes:
    text = f"{MAGIC}\nconfig {key}\n" + "".join(_entry_text(e) for e in entries)
    return text.encode("utf-8", "surrogateescape")


def _parse(text: str, key: str) -> list[Entry]:
    """The entries already recorded for this config identity (none if stale or untrusted)."""
    lines = text.split("\n")
    if lines[:2] != [MAGIC, f"config {key}"]:
        return []
    entries: list[Entry] = []
    head: dict[str, str] = {}
    env: list[str] = []
    checks: list[tuple[str, str, str]] = []
    for line in lines[2:] + ["entry"]:
        word, _, rest = line.partition(" ")
        if word == "entry":
            if head:
                entries.append((head.get("layout", ""), head.get("helper", ""), tuple(env),
                                tuple(checks), head.get("body", "")))
            head, env, checks = {"": ""}, [], []
        elif word in ("layout", "helper", "body"):
            head[word] = rest
        elif word == "env":
            env.append(rest)
        elif word == "check":
            kind, _, more = rest.partition(" ")
            value, _, path = more.partition(" ")
            checks.append((kind, value, path))
    return entries
