"""A CRI v1 client for the tests (there is no crictl or kubelet on these machines).

The messages are cri.proto (next to this file), compiled on first use with grpc_tools.protoc
into a descriptor set in a temp dir (or read from a descriptor set made beforehand), and
built from its descriptors; the calls go through grpcio's generic unary channel, so no
generated code is needed. Containers are driven as the kubelet drives them: a pod sandbox
(RunPodSandbox with a runtime handler), then CreateContainer / StartContainer, the exit
read from ContainerStatus, the output from the CRI log file under the pod's log directory.

Also a command line, used on the GPU machine (tests/gpu/k8s_docker.sh):

    python3 client.py SOCKET HANDLER IMAGE [--env K=V]... [--annotation K=V]...
                      [--mount HOST:CTR]... [--privileged] -- COMMAND...

prints the container's stdout and stderr and exits with its exit status.
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

HERE = Path(__file__).resolve().parent
SERVICE = "/runtime.v1.RuntimeService/"
# A FileDescriptorSet of cri.proto made beforehand (tests/gpu/k8s_prepare.sh does, where
# grpcio-tools is not carried); otherwise cri.proto is compiled here with grpc_tools.
DESCRIPTORS_ENV = "NVHOOK_CRI_DESCRIPTORS"
_pb: SimpleNamespace | None = None


def compile_descriptors(dest: Path) -> Path:
    """cri.proto → a serialized FileDescriptorSet at ``dest`` (grpc_tools' protoc)."""
    from grpc_tools import protoc

    rc = protoc.main(["protoc", f"-I{HERE}", f"--descriptor_set_out={dest}",
                      str(HERE / "cri.proto")])
    if rc != 0:
        raise RuntimeError(f"protoc failed on {HERE / 'cri.proto'} (exit {rc})")
    return dest


def messages() -> SimpleNamespace:
    """The message classes and enum values of cri.proto, by name (as a generated module
    would offer them), built from its descriptors once per process."""
    global _pb
    if _pb is None:
        from google.protobuf import descriptor_pb2, descriptor_pool

        path = os.environ.get(DESCRIPTORS_ENV)
        if not path:
            path = str(compile_descriptors(Path(tempfile.mkdtemp(prefix="nvhook-cri-"))
                                           / "cri.desc"))
        files = descriptor_pb2.FileDescriptorSet.FromString(Path(path).read_bytes())
        pool = descriptor_pool.DescriptorPool()
        for f in files.file:
            pool.Add(f)
        fd = pool.FindFileByName("cri.proto")
        names: dict[str, Any] = {}
        for name, desc in fd.message_types_by_name.items():
            names[name] = _message_class(desc)
        for enum in fd.enum_types_by_name.values():
            for value in enum.values:
                names[value.name] = value.number
        _pb = SimpleNamespace(**names)
    return _pb


def _message_class(desc: Any) -> Any:
    try:
        from google.protobuf.message_factory import GetMessageClass  # protobuf >= 4.21
        return GetMessageClass(desc)
    except ImportError:
        from google.protobuf.message_factory import MessageFactory
        return MessageFactory().GetPrototype(desc)


@dataclass
class Result:
    """A finished container: exit status, its two streams (from the CRI log), and ids."""

    exit_code: int
    stdout: str
    stderr: str
    pod_id: str
    container_id: str
    reason: str = ""
    message: str = ""
    seconds: float = 0.0


@dataclass
class PodSpec:
    """What a pod asks for; each field is one the kubelet fills from the pod's YAML."""

    command: list[str]
    image: str
    handler: str = ""                    # RuntimeClass handler ("" = containerd's default)
    env: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    mounts: list[tuple[str, str]] = field(default_factory=list)   # (host, container), ro
    privileged: bool = False
    run_as_user: int | None = None


class Cri:
    def __init__(self, socket: str | os.PathLike[str], log_root: str | os.PathLike[str],
                 cgroup_parent: str = ""):
        import grpc

        self.pb = messages()
        self.channel = grpc.insecure_channel(f"unix://{socket}")
        self.log_root = Path(log_root)
        self.cgroup_parent = cgroup_parent      # the kubelet's pod cgroup; "" = the runtime's

    def close(self) -> None:
        self.channel.close()

    def call(self, method: str, request: Any, timeout: float = 120) -> Any:
        response = getattr(self.pb, method + "Response")
        stub = self.channel.unary_unary(SERVICE + method,
                                        request_serializer=type(request).SerializeToString,
                                        response_deserializer=response.FromString)
        return stub(request, timeout=timeout)

    def version(self) -> Any:
        return self.call("Version", self.pb.VersionRequest(version="v1"), timeout=5)

    # ------------------------------------------------------------------ pods
    def sandbox_config(self, name: str, spec: PodSpec) -> Any:
        pb = self.pb
        uid = uuid.uuid4().hex[:12]
        logs = self.log_root / f"default_{name}_{uid}"
        logs.mkdir(parents=True, exist_ok=True)
        ns = pb.NamespaceOption(network=pb.NODE, pid=pb.CONTAINER, ipc=pb.POD)
        sec = pb.LinuxSandboxSecurityContext(namespace_options=ns, privileged=spec.privileged)
        return pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name=name, uid=uid, namespace="default"),
            log_directory=str(logs), linux=pb.LinuxPodSandboxConfig(
                cgroup_parent=self.cgroup_parent, security_context=sec))

    def run_pod(self, name: str, spec: PodSpec) -> tuple[str, Any]:
        config = self.sandbox_config(name, spec)
        r = self.call("RunPodSandbox", self.pb.RunPodSandboxRequest(
            config=config, runtime_handler=spec.handler))
        return r.pod_sandbox_id, config

    def remove_pod(self, pod_id: str) -> None:
        self.call("StopPodSandbox", self.pb.StopPodSandboxRequest(pod_sandbox_id=pod_id))
        self.call("RemovePodSandbox", self.pb.RemovePodSandboxRequest(pod_sandbox_id=pod_id))

    # ------------------------------------------------------------------ containers
    def container_config(self, name: str, spec: PodSpec) -> Any:
        pb = self.pb
        ns = pb.NamespaceOption(network=pb.NODE, pid=pb.CONTAINER, ipc=pb.POD)
        sec = pb.LinuxContainerSecurityContext(privileged=spec.privileged, namespace_options=ns)
        if spec.run_as_user is not None:
            sec.run_as_user.value = spec.run_as_user
        return pb.ContainerConfig(
            metadata=pb.ContainerMetadata(name=name), image=pb.ImageSpec(image=spec.image),
            command=spec.command,
            envs=[pb.KeyValue(key=k, value=v) for k, v in spec.env.items()],
            mounts=[pb.Mount(host_path=h, container_path=c, readonly=True)
                    for h, c in spec.mounts],
            annotations=spec.annotations, log_path=f"{name}/0.log",
            linux=pb.LinuxContainerConfig(security_context=sec))

    def status(self, container_id: str) -> Any:
        return self.call("ContainerStatus", self.pb.ContainerStatusRequest(
            container_id=container_id)).status

    def run(self, spec: PodSpec, name: str = "", timeout: float = 120) -> Result:
        """A pod with one container that runs to its exit; the pod is removed afterwards.
        A failed CreateContainer/StartContainer is a Result with exit_code -1 and the
        runtime's message (as `kubectl describe` shows it)."""
        import grpc

        name = name or f"pod-{uuid.uuid4().hex[:8]}"
        start = time.monotonic()
        pod_id, sandbox = self.run_pod(name, spec)
        cid = ""
        try:
            try:
                cid = self.call("CreateContainer", self.pb.CreateContainerRequest(
                    pod_sandbox_id=pod_id, config=self.container_config("c", spec),
                    sandbox_config=sandbox)).container_id
                self.call("StartContainer", self.pb.StartContainerRequest(container_id=cid))
            except grpc.RpcError as e:
                return Result(-1, "", "", pod_id, cid, "RpcError", str(e.details()),
                              time.monotonic() - start)
            deadline = time.monotonic() + timeout
            while True:
                st = self.status(cid)
                if st.state == self.pb.CONTAINER_EXITED:
                    break
                if time.monotonic() > deadline:
                    return Result(124, "", f"still running after {timeout} s", pod_id, cid)
                time.sleep(0.02)
            out, err = read_log(Path(st.log_path) if st.log_path else
                                Path(sandbox.log_directory) / "c/0.log")
            return Result(st.exit_code, out, err, pod_id, cid, st.reason, st.message,
                          time.monotonic() - start)
        finally:
            self.remove_pod(pod_id)


def read_log(path: Path) -> tuple[str, str]:
    """stdout and stderr of a CRI log file: lines `<time> <stream> <P|F> <text>`, where P
    marks a partial line continued by the next one."""
    streams: dict[str, list[str]] = {"stdout": [], "stderr": []}
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return "", ""
    for line in text.splitlines():
        parts = line.split(" ", 3)
        if len(parts) < 3 or parts[1] not in streams:
            continue
        body = parts[3] if len(parts) == 4 else ""
        streams[parts[1]].append(body if parts[2] == "P" else body + "\n")
    return "".join(streams["stdout"]), "".join(streams["stderr"])


def main(argv: list[str]) -> int:
    if "--" not in argv or len(argv) < 4:
        sys.stderr.write(__doc__ or "")
        return 2
    cut = argv.index("--")
    head, command = argv[:cut], argv[cut + 1:]
    socket, handler, image, *opts = head
    spec = PodSpec(command=command, image=image, handler=handler)
    i = 0
    while i < len(opts):
        opt = opts[i]
        if opt == "--privileged":
            spec.privileged = True
            i += 1
            continue
        value = opts[i + 1]
        if opt == "--env":
            k, _, v = value.partition("=")
            spec.env[k] = v
        elif opt == "--annotation":
            k, _, v = value.partition("=")
            spec.annotations[k] = v
        elif opt == "--mount":
            h, _, c = value.partition(":")
            spec.mounts.append((h, c))
        else:
            sys.stderr.write(f"unknown option {opt}\n")
            return 2
        i += 2
    cri = Cri(socket, os.environ.get("CRI_LOG_ROOT", tempfile.mkdtemp(prefix="cri-logs-")))
    r = cri.run(spec)
    sys.stdout.write(r.stdout)
    sys.stderr.write(r.stderr)
    if r.exit_code == -1:
        sys.stderr.write(f"pod failed: {r.message}\n")
        return 1
    return r.exit_code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
