"""Container + Request → Plan, with the host discovered: the one place where the hook, the
runtime shim and `nvhook plan` turn a starting container into what it gets."""
from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from nvhook.config import Config
    from nvhook.model import Container, Plan, Request
    from nvhook.rootfs import Layout


def plan_container(config: Config, container: Container, request: Request, *,
                   hot: bool = False, layout: Layout | None = None) -> Plan:
    """``hot``: a container is starting now (the hook, the shim's create): NVML's cached
    answers while the driver is unchanged, no pyelftools (ldconfig in the container makes
    the SONAME links), the MIG minors only when MIG is in play."""
    from nvhook.inventory import discover
    from nvhook.plan import build_plan
    from nvhook.rootfs import container_layout

    inventory = discover(config, elf_details=not hot, hot=hot,
                         mig_management=request.mig_config or request.mig_monitor)
    return build_plan(request, inventory, layout or container_layout(container.rootfs))
