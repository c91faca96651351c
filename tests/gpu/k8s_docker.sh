#!/bin/bash
# Kubernetes' and docker's paths on a GPU host, as root: containerd (CRI plugin, RuntimeClass
# handler `nvidia` = nvhook's shim) runs pods with nvidia-smi, the CUDA check, a CDI
# annotation and a pod without GPUs; dockerd on the same containerd runs the seed's
# `docker run --gpus all IMG nvidia-smi`, `--gpus '"device=0"'`,
# `--runtime=nvidia -e NVIDIA_VISIBLE_DEVICES=all`, and PyTorch with no driver file in the
# image. Exit 0 = all pass. The checks are tests/gpu/k8s_docker.py.
#
#   tests/gpu/k8s_docker.sh [--fake] [--carry DIR] [--work DIR] [--deadline S]
#                           [--timing N] [--nvidia PATH] [--out DIR] [-- ARGS]
#
#   --fake       no GPU here: the checks run against tests/fakedriver (2 GPUs) and this
#                machine's own containerd, dockerd and runc
#   --carry DIR  what tests/gpu/k8s_prepare.sh made (default .gpucarry in the repo): Debian
#                12's containerd, runc, docker.io, libdevmapper and busybox-static debs, the
#                wheels (grpcio, protobuf, cffi, pycparser, pyelftools) and cri.desc
#   --work DIR   scratch dir (default /var/tmp/nvhook-k8s); emptied first
#   --deadline   stop the checks after this many seconds (default 540)
#   --timing N   then time docker and CRI starts: plain runc, nvhook, NVIDIA 1.17.2,
#                alternating, N of each (docs/performance.md, "Through docker and the CRI")
#   --nvidia P   NVIDIA's nvidia-1.17.2.tar.gz (or the dir it unpacks to) for --timing;
#                default: CARRY/nvidia-1.17.2.tar.gz, $NVHOOK_REFERENCE, then
#                ../shared/reference/nvidia-1.17.2/nvidia-1.17.2.tar.gz next to the repo
#   --out DIR    write the timing there (k8s_timing.json)
#   after --:    passed to k8s_docker.py (--skip cri,docker,torch, --torch-python PY, ...)
set -u -o pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
carry=$repo/.gpucarry
work=/var/tmp/nvhook-k8s
site=/tmp/nvhook-k8s-site
fake=0
deadline=540
extra=()
py=/usr/bin/python3
timing=0
nvidia=
out=

say() { echo "k8s_docker.sh: $*"; }
die() { echo "k8s_docker.sh: FAIL: $*"; echo "RESULT: FAIL"; exit 1; }
run() { echo "+ $*" >&2; "$@"; }

while [ $# -gt 0 ]; do
	case "$1" in
	--fake) fake=1 ;;
	--carry) carry=$(cd "${2:?--carry needs a dir}" && pwd) || die "no dir $2"; shift ;;
	--work) work=${2:?--work needs a dir}; shift ;;
	--deadline) deadline=${2:?--deadline needs seconds}; shift ;;
	--timing) timing=${2:?--timing needs a count}; shift ;;
	--nvidia) nvidia=$(realpath -m "${2:?--nvidia needs a path}"); shift ;;
	--out) out=$(realpath -m "${2:?--out needs a dir}"); shift ;;
	--) shift; extra=("$@"); break ;;
	-h | --help) sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) die "unknown argument '$1' (see --help)" ;;
	esac
	shift
done

[ "$(id -u)" = 0 ] || die "run as root"
cd "$repo" || die "cannot cd to $repo"
say "$(date -u '+%Y-%m-%d %H:%M:%S UTC'), repo $repo, carry $carry, work $work"
rm -rf "$work/prefix" "$work/install" "$work/bin"
mkdir -p "$work/prefix" "$work/bin" || die "cannot create $work"

# --- containerd, runc, dockerd, docker, ctr: Debian 12's, unpacked from the carried debs
# (on this machine with --fake: the installed ones, unless debs are carried).
ld_path=
if ls "$carry"/debs/*.deb >/dev/null 2>&1; then
	for deb in "$carry"/debs/*.deb; do
		run dpkg-deb -x "$deb" "$work/prefix" || die "cannot unpack $deb"
	done
	PATH=$work/prefix/usr/bin:$work/prefix/usr/sbin:$work/prefix/bin:$work/prefix/sbin:$PATH
	ld_path=$work/prefix/lib/x86_64-linux-gnu:$work/prefix/usr/lib/x86_64-linux-gnu
elif [ "$fake" = 0 ]; then
	die "no debs in $carry/debs: run tests/gpu/k8s_prepare.sh where downloads work"
fi
export PATH
for tool in containerd containerd-shim-runc-v2 ctr dockerd docker runc busybox; do
	command -v "$tool" >/dev/null || die "no $tool (carry it: tests/gpu/k8s_prepare.sh)"
done
runc_bin=$(command -v runc)
LD_LIBRARY_PATH=$ld_path run dockerd --version || die "dockerd does not start (libraries?)"
run containerd --version || die "containerd does not start"
run "$runc_bin" --version || die "runc does not start"
# the images' busybox must be static
if ldd "$(command -v busybox)" >/dev/null 2>&1; then die "busybox is not static"; fi

# --- Python: nvhook's deps (cffi, pyelftools) and the CRI client's (grpcio, protobuf).
pythonpath=
if ! "$py" -c 'import cffi, _cffi_backend, elftools, grpc, google.protobuf' 2>/dev/null; then
	ls "$carry"/wheels/*.whl >/dev/null 2>&1 || die "$py lacks modules and no wheels are carried"
	rm -rf "$site"; mkdir -p "$site"
	for whl in "$carry"/wheels/*.whl; do
		run "$py" -m zipfile -e "$whl" "$site" >/dev/null || die "cannot unpack $whl"
	done
	pythonpath=$site
	PYTHONPATH=$site run "$py" -c 'import cffi, _cffi_backend, elftools, grpc, google.protobuf' \
		|| die "the carried wheels do not import with $py"
fi
desc_env=()
if ! PYTHONPATH=$pythonpath "$py" -c 'import grpc_tools' 2>/dev/null; then
	[ -f "$carry/cri.desc" ] || die "no grpc_tools and no $carry/cri.desc"
	desc_env=(NVHOOK_CRI_DESCRIPTORS="$carry/cri.desc")
fi

# --- nvhook: helper and launchers (nvhook, nvidia-container-runtime-hook, the shim).
PYTHONPATH=$pythonpath run "$py" -m nvhook.install --prefix "$work/install" \
	--helper-dir "$work/install/libexec" --python "$py" || die "nvhook.install failed"
bin=$work/install/bin
helper=$work/install/libexec/nvhook-helper
[ -x "$bin/nvidia-container-runtime" ] || die "nvhook.install wrote no nvidia-container-runtime"

cc=$(command -v gcc || command -v cc) || die "no C compiler"
run "$cc" -O2 -Wall -o "$work/bin/cuda_check" "$here/cuda_check.c" -ldl || die "cuda_check"
ptx_args=()
nvcc=$(command -v nvcc || ls /usr/local/cuda/bin/nvcc 2>/dev/null || true)
if [ "$fake" = 0 ] && [ -n "$nvcc" ] && run timeout 180 "$nvcc" -ptx -o "$work/bin/kernel.ptx" \
	"$here/kernel.cu"; then
	ptx_args=(--ptx "$work/bin/kernel.ptx")
fi

config_args=()
if [ "$fake" = 1 ]; then
	cfg=$(PYTHONPATH=$pythonpath run "$py" -m tests.fakedriver "$work/fake" --gpus 2 \
		--helper "$helper") || die "cannot build the fake driver"
	config_args=(--fake --config "$cfg")
fi

# --- the timing: NVIDIA's 1.17.2 runtime and hook, only run (never copied into the tree)
timing_args=()
if [ "$timing" != 0 ]; then
	if [ -z "$nvidia" ]; then
		for cand in "$carry/nvidia-1.17.2.tar.gz" "${NVHOOK_REFERENCE:-}" \
			"$repo/../shared/reference/nvidia-1.17.2/nvidia-1.17.2.tar.gz"; do
			if [ -n "$cand" ] && { [ -f "$cand" ] || [ -x "$cand/bin/nvidia-container-runtime" ]; }; then
				nvidia=$cand
				break
			fi
		done
	fi
	timing_args=(--timing "$timing" --stop-after "$((deadline - 20))")
	if [ -n "$nvidia" ]; then
		say "NVIDIA's 1.17.2 for the timing: $nvidia"
		timing_args+=(--nvidia "$nvidia")
	elif [ "$fake" = 0 ]; then
		die "--timing on a GPU host needs NVIDIA's 1.17.2: carry nvidia-1.17.2.tar.gz in $carry or pass --nvidia"
	else
		say "no NVIDIA 1.17.2 found: timing nvhook and plain runc only"
	fi
	[ -n "$out" ] && timing_args+=(--out "$out")
fi

run env PYTHONPATH="$pythonpath" "${desc_env[@]}" timeout -k 15 "$deadline" \
	"$py" -m tests.gpu.k8s_docker --bin "$bin" --helper "$helper" --runc "$runc_bin" \
	--cuda-check "$work/bin/cuda_check" "${ptx_args[@]}" "${config_args[@]}" \
	--work "$work/run" --ld-library-path "$ld_path" "${timing_args[@]}" "${extra[@]}"
rc=$?
[ "$rc" = 124 ] && say "stopped after --deadline $deadline s"
rm -rf "$work/prefix" "$work/install" "$work/fake"
say "exit $rc"
exit "$rc"
