#!/bin/bash
# The GPU proof: on a host with an NVIDIA driver, as root, start containers through runc with
# nvhook as their prestart hook and check what they see (nvidia-smi, a CUDA kernel, PyTorch,
# the device cgroup, GPU selection), each check also once without the hook. Exit 0 = all pass.
#
#   tests/gpu/run.sh [--fake] [--work DIR] [--keep] [--deadline SECONDS] [-- GPU_CHECK_ARGS]
#
#   --fake       no GPU here: build tests/fakedriver (2 GPUs) and check against it
#   --fake-layout debian|driver-root   the fake driver's shape (default debian)
#   --work DIR   scratch dir (default /var/tmp/nvhook-gpu); emptied first
#   --keep       keep the containers' rootfs and bundles for a look afterwards
#   --deadline   kill the checks after this many seconds (default 540)
#   --python PY  the interpreter for nvhook's launchers (default /usr/bin/python3)
#   --carry DIR  the carried tools (default .gpu-carry in the repo)
#   --bench "ARGS"  afterwards, run bench/hook_latency.py with the same install, driver and
#                runc, plus ARGS (e.g. "-n 100 --profile 20"); may be given several times
#   --no-checks  skip the checks (to run only --bench)
#   after --:    passed to tests/gpu/gpu_check.py (--skip torch, --torch-python PY,
#                --driver-root DIR, --torch-rootfs overlay|farm, --timeout S)
#
# What it needs that a GPU machine may lack (runc, libseccomp, a static busybox, wheels of
# cffi, pycparser and pyelftools) is taken from .gpu-carry/, which tests/gpu/prepare.sh fills
# on a machine that can download. See tests/gpu/README.md.
set -u -o pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
carry=$repo/.gpu-carry
work=/var/tmp/nvhook-gpu
site=/tmp/site
fake=0
fake_layout=debian
keep=0
deadline=540
py=
checks=1
benches=()
extra=()

say() { echo "run.sh: $*"; }
die() { echo "run.sh: FAIL: $*"; exit 1; }
# Log every command before it runs (on stderr, so that $(run ...) captures only its output).
run() { echo "+ $*" >&2; "$@"; }

while [ $# -gt 0 ]; do
	case "$1" in
	--fake) fake=1 ;;
	--fake-layout) fake_layout=${2:?--fake-layout needs debian or driver-root}; shift ;;
	--work) work=${2:?--work needs a dir}; shift ;;
	--keep) keep=1 ;;
	--deadline) deadline=${2:?--deadline needs seconds}; shift ;;
	--python) py=${2:?--python needs an interpreter}; shift ;;
	--bench) benches+=("${2?--bench needs its arguments (may be \"\")}"); shift ;;
	--no-checks) checks=0 ;;
	--carry) carry=$(cd "${2:?--carry needs a dir}" && pwd) || die "no dir $2"; shift ;;
	--) shift; extra=("$@"); break ;;
	-h | --help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) die "unknown argument '$1' (see --help)" ;;
	esac
	shift
done

[ "$(id -u)" = 0 ] || die "run as root: runc and the hook mount and create device nodes"
cd "$repo" || die "cannot cd to $repo"
say "$(date -u '+%Y-%m-%d %H:%M:%S UTC'), repo $repo, work $work"

# --- Python: the hook's launcher runs it with -IS, so it needs tomllib (3.11+) on its own.
if [ -z "$py" ]; then
	py=/usr/bin/python3
	[ -x "$py" ] || py=$(command -v python3) || die "no python3"
fi
run "$py" -c 'import sys; assert sys.version_info >= (3, 11), sys.version' \
	|| die "$py is older than 3.11 (nvhook reads its config with tomllib)"

mkdir -p "$work/bin" || die "cannot create $work"
PATH=$work/bin:$carry/bin:$PATH
export PATH

# --- runc (and libseccomp for it), busybox: the system's, else the carried ones.
runc_bin=$(command -v runc) || die "no runc: run tests/gpu/prepare.sh on a machine with runc " \
	"and carry .gpu-carry/"
if ldd "$runc_bin" 2>/dev/null | grep -q 'libseccomp.so.2 => not found'; then
	[ -e "$carry/lib/libseccomp.so.2" ] || die "$runc_bin needs libseccomp.so.2; carry it"
	# Only runc (and its re-executed `runc init`) sees this; hooks get the env of the spec.
	printf '#!/bin/sh\nLD_LIBRARY_PATH=%s exec %s "$@"\n' "$carry/lib" "$runc_bin" \
		>"$work/bin/runc"
	chmod 755 "$work/bin/runc"
	runc_bin=$work/bin/runc
fi
run "$runc_bin" --version || die "runc does not start"
command -v busybox >/dev/null || die "no busybox: carry a static one in .gpu-carry/bin"
if ldd "$(command -v busybox)" >/dev/null 2>&1; then
	die "$(command -v busybox) is dynamically linked; the rootfs needs a static busybox"
fi

# --- cffi and pyelftools: the system's, else the carried wheels unpacked into $site.
pythonpath=
if ! "$py" -c 'import cffi, _cffi_backend, elftools' 2>/dev/null; then
	ls "$carry"/wheels/*.whl >/dev/null 2>&1 \
		|| die "$py lacks cffi/pyelftools and .gpu-carry/wheels is empty (tests/gpu/prepare.sh)"
	mkdir -p "$site"
	for whl in "$carry"/wheels/*.whl; do
		run "$py" -m zipfile -e "$whl" "$site" || die "cannot unpack $whl"
	done
	pythonpath=$site
	PYTHONPATH=$site run "$py" -c 'import cffi, _cffi_backend, elftools' \
		|| die "the carried wheels do not import with $py"
fi

# --- nvhook: the helper and the launchers (nvhook, nvidia-container-runtime-hook).
rm -rf "$work/install"
PYTHONPATH=$pythonpath run "$py" -m nvhook.install --prefix "$work/install" \
	--helper-dir "$work/install/libexec" --python "$py" || die "nvhook.install failed"
hook=$work/install/bin/nvidia-container-runtime-hook
helper=$work/install/libexec/nvhook-helper
run head -3 "$work/install/libexec/py/nvidia-container-runtime-hook"   # what the front door execs

# --- the CUDA driver-API program, and its kernel through nvcc when nvcc is here.
cc=$(command -v gcc || command -v cc) || die "no C compiler"
run "$cc" -O2 -Wall -Wextra -o "$work/bin/cuda_check" "$here/cuda_check.c" -ldl \
	|| die "cannot build cuda_check"
ptx_args=()
nvcc=$(command -v nvcc || ls /usr/local/cuda/bin/nvcc 2>/dev/null || true)
if [ "$fake" = 0 ] && [ -n "$nvcc" ]; then
	if run timeout 180 "$nvcc" -ptx -o "$work/bin/kernel.ptx" "$here/kernel.cu"; then
		ptx_args=(--ptx "$work/bin/kernel.ptx")
	else
		say "nvcc could not build kernel.cu: only the built-in PTX kernel runs"
	fi
else
	say "no nvcc here (or --fake): only the built-in PTX kernel runs"
fi

# --- the driver: the host's, or the fake one.
config_args=()
if [ "$fake" = 1 ]; then
	rm -rf "$work/fake"
	cfg=$(run "$py" -m tests.fakedriver "$work/fake" --gpus 2 \
		--layout "$fake_layout" --helper "$helper") \
		|| die "cannot build the fake driver"
	config_args=(--fake --config "$cfg")
fi
keep_args=()
[ "$keep" = 1 ] && keep_args=(--keep)

rc=0
if [ "$checks" = 1 ]; then
	run timeout -k 15 "$deadline" "$py" -m tests.gpu.gpu_check --work "$work" --hook "$hook" \
		--helper "$helper" --cuda-check "$work/bin/cuda_check" --runc "$runc_bin" \
		"${ptx_args[@]}" "${config_args[@]}" "${keep_args[@]}" "${extra[@]}"
	rc=$?
fi
for bench in "${benches[@]}"; do
	if [ "$fake" = 1 ]; then
		driver_args=(--hook-config "$cfg")
	else
		driver_args=(--driver-root auto --helper "$helper")
	fi
	# Word splitting of ARGS is wanted here: they are options.
	# shellcheck disable=SC2086
	run timeout -k 15 "$deadline" "$py" bench/hook_latency.py --hook "$hook" "${driver_args[@]}" \
		--runc "$runc_bin" --work "$work/bench" $bench
	brc=$?
	[ "$rc" = 0 ] && rc=$brc
done
[ "$rc" = 124 ] && say "the checks ran past --deadline $deadline s and were stopped"
if [ "$keep" = 0 ]; then
	rm -rf "$work/fake" "$work/install" "$work/bin"
fi
say "exit $rc"
exit "$rc"
