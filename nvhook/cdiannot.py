"""CDI devices asked for through container annotations (``cdi.k8s.io/<key>: vendor/class=dev``),
the way the Kubernetes device plugin asks when its strategy is ``cdi-annotations``.

containerd passes such annotations to the runtime when its runtime entry lists them
(``container_annotations = ["cdi.k8s.io/*"]``) but, before 1.7, resolves none of them; the
pod would start without its GPU and nobody would say why. nvhook's shim resolves them on
`create`: every name must be a device of a CDI spec in the spec dirs (``nvhook cdi
generate`` writes nvhook's), and the devices of nvhook's kind (``nvidia.com/gpu``, named by
index, UUID, ``gpu:mig`` or ``all`` as nvhook generates them) are injected by nvhook's own
plan, as if the device plugin had listed them in NVIDIA_VISIBLE_DEVICES. A name that no
spec holds, or a kind nvhook cannot inject, stops the `create` with a one-line error:
starting the pod without the device it was given is never right.

The spec dirs are CDI's (``/etc/cdi``, ``/var/run/cdi``), or the colon-separated list in
``NVHOOK_CDI_SPEC_DIRS`` (the engine's environment). Requests from annotations are trusted
like the volume-mount list (the kubelet writes them for the device plugin), so
``accept-nvidia-visible-devices-envvar-when-unprivileged = false`` does not refuse them.
"""
from __future__ import annotations

from nvhook.errors import NvhookError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

    from nvhook.config import Config
    from nvhook.model import Container, Request

ANNOTATION_PREFIX = "cdi.k8s.io/"
MARKER = b'"cdi.k8s.io/'          # what runtime.py looks for in config.json's bytes
SPEC_DIRS_ENV = "NVHOOK_CDI_SPEC_DIRS"
NVHOOK_KINDS = ("nvidia.com/gpu",)
_FIX_GENERATE = ("generate the spec on this node: nvhook cdi generate --output "
                 "/var/run/cdi/nvidia.yaml (and after each driver change; docs/kubernetes.md)")


def requested_names(annotations: Mapping[str, str]) -> list[str]:
    """The fully qualified CDI names of every ``cdi.k8s.io/*`` annotation, in key order,
    without duplicates (a value may list several, comma-separated)."""
    names: dict[str, None] = {}
    for key in sorted(annotations):
        if not key.startswith(ANNOTATION_PREFIX):
            continue
        for name in annotations[key].split(","):
            name = name.strip()
            if name:
                names.setdefault(name, None)
    return list(names)


def spec_dirs(environ: Mapping[str, str]) -> list[str]:
    value = environ.get(SPEC_DIRS_ENV, "")
    if value:
        return [d for d in value.split(":") if d.startswith("/")]
    from nvhook.cdi.reader import SPEC_DIRS  # lazily: only a pod with CDI annotations pays

    return list(SPEC_DIRS)


def device_ids(annotations: Mapping[str, str], environ: Mapping[str, str]) -> list[str]:
    """The nvhook device ids (index, UUID, ``gpu:mig``, ``all``) the annotations ask for;
    [] when there is no CDI annotation. Raises NvhookError for a name no spec holds or a
    kind nvhook cannot inject."""
    names = requested_names(annotations)
    if not names:
        return []
    from nvhook.request import is_cdi_name

    bad = [n for n in names if not is_cdi_name(n)]
    if bad:
        raise NvhookError(f"annotation {ANNOTATION_PREFIX}* names {', '.join(bad)}, which is "
                          "not a CDI device name (vendor/class=device)",
                          "check the device plugin's CDI settings (docs/kubernetes.md)")
    dirs = spec_dirs(environ)
    from nvhook.cdi.reader import list_devices

    known, warnings = list_devices(dirs)
    missing = [n for n in names if n not in known]
    if missing:
        where = ", ".join(dirs) or "(no spec dir)"
        detail = f" ({'; '.join(warnings)})" if warnings else ""
        raise NvhookError(f"CDI device{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
                          f"asked for by annotation is in no CDI spec under {where}{detail}",
                          _FIX_GENERATE)
    foreign = [n for n in names if n.partition("=")[0] not in NVHOOK_KINDS]
    if foreign:
        raise NvhookError(f"CDI device{'s' if len(foreign) > 1 else ''} {', '.join(foreign)} "
                          "asked for by annotation is not of a kind nvhook injects "
                          f"({', '.join(NVHOOK_KINDS)})",
                          "let a CDI-aware runtime (containerd 1.7+ with enable_cdi) resolve "
                          "it, or ask for nvidia.com/gpu devices")
    return [n.partition("=")[2] for n in names]


def request_for(container: Container, config: Config,
                environ: Mapping[str, str]) -> Request | None:
    """The Request of a container whose annotations name CDI devices (None without such
    annotations): the ids stand for NVIDIA_VISIBLE_DEVICES, everything else (capabilities,
    requirements) is read from the container's env as for any request."""
    ids = device_ids(container.annotations, environ)
    if not ids:
        return None
    from nvhook.record import replace
    from nvhook.request import VISIBLE_DEVICES, parse_request

    env = dict(container.env)
    env[VISIBLE_DEVICES] = ",".join(ids)
    trusted = replace(config, accept_envvar_unprivileged=True, accept_volume_mounts=False,
                      swarm_resource="")
    return parse_request(replace(container, env=env), trusted)
