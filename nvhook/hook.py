"""The hook's pipeline, in one place: a starting container → its request → its library
layout → the plan (from the plan cache, or discovered and planned) → the helper.

The prestart hook runs all of it (`prestart`); the runtime shim's `create` (spec and hook
modes) and `nvhook plan` stop at the plan (`decide`). cli.py only dispatches here.

The hook's hot path: imports stay lazy, so that a plan-cache hit never loads discovery or
planning (nvhook.inventory, nvhook.plan, nvhook.devselect, nvhook.require); see
docs/design.md, "The hook's path".
"""
from __future__ import annotations

TYPE_CHECKING = False   # typing costs the hook milliseconds at run time
if TYPE_CHECKING:
    from nvhook.config import Config
    from nvhook.model import Container, Plan, Request
    from nvhook.rootfs import Layout


def prestart(config: Config, state_text: str) -> None:
    """Inject what the container asks for; nothing when it asks for no GPU. Either way the
    decision is memoized for the front door (nvhook/memo.py, csrc/front/), which replays it
    without Python while every input it was made from is unchanged."""
    from nvhook import memo, oci
    from nvhook.request import parse_request

    container = oci.load_container(oci.parse_state(state_text))
    request = parse_request(container, config)
    if request is None:
        memo.record(config, container, None, None, None)
        return
    from nvhook import apply
    apply.require_host_pid(container)   # before any work: a createContainer hook fails fast
    layout = layout_of(config, container)
    body, key, checks = None, None, None
    if config.cache_dir:   # the plan part of the helper's input, kept while its inputs hold
        from nvhook import plancache
        found = memo.host_checks(config) if memo.eligible(config, container) else None
        checks = found[0] if found else None
        key = plancache.cache_key(config, request, layout,
                                  found[0][:found[1]] if found else None)
        body = plancache.load(config.cache_dir, key)
    if body is None:
        plan = decide(config, container, request, hot=True, layout=layout)
        body = apply.plan_body(plan, config)
        if key is not None:
            plancache.store(config.cache_dir, key, body)
    apply.apply_body(body, container, config)
    if checks is not None:
        memo.record(config, container, layout, checks, body)


def layout_of(config: Config, container: Container) -> Layout:
    """Where the container keeps its libraries ([host] machine names the multiarch dirs)."""
    from nvhook.rootfs import container_layout
    return container_layout(container.rootfs, config.machine or None)


def decide(config: Config, container: Container, request: Request, *, hot: bool = False,
           layout: Layout | None = None) -> Plan:
    """The plan for a container, with the host discovered now.

    ``hot``: a container is starting now (the hook, the shim's create): NVML's cached
    answers while the driver is unchanged, no pyelftools (ldconfig in the container makes
    the SONAME links), the MIG minors only when MIG is in play, and no NVML at all when the
    request needs nothing only NVML knows (/proc/driver/nvidia answers: inventory/procgpus).
    """
    from nvhook.inventory import discover, needs_nvml
    from nvhook.plan import build_plan

    inventory = discover(config, elf_details=not hot, hot=hot,
                         mig_management=request.mig_config or request.mig_monitor,
                         nvml_needed=needs_nvml(request))
    return build_plan(request, inventory, layout or layout_of(config, container))


def from_bundle(config: Config, bundle: str, pid: int | None) -> tuple[Container,
                                                                       Request | None]:
    """The container of ``bundle`` and its request (None: it asks for no GPU), for the
    shim's create and `nvhook plan`, which have a bundle instead of the runtime's state."""
    from nvhook import oci
    from nvhook.request import parse_request

    container = oci.load_container_from_bundle(bundle, pid)
    return container, parse_request(container, config)


def plan_for_bundle(config: Config, bundle: str, pid: int | None) -> Plan | None:
    """`nvhook plan`: what the hook would inject into the container of ``bundle`` (None
    when it asks for no GPU), with the full discovery of a cold start."""
    container, request = from_bundle(config, bundle, pid)
    return None if request is None else decide(config, container, request)
