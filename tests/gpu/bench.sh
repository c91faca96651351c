#!/bin/bash
# The side-by-side latency benchmark on a GPU host: nvhook and NVIDIA's toolkit 1.17.2, one
# run, every mode of bench/hook_latency.py (docs/performance.md shows its output).
#
#   bash tests/gpu/bench.sh [--out DIR] [-n N] [--fake] [--reference TARBALL_OR_DIR]
#
#   --out DIR        where each mode's JSON goes (default: the work dir; lost afterwards)
#   -n N             containers per variant in the sequential modes (default 100)
#   --fake           the fake driver instead of the host's (CI, or a machine without a GPU)
#   --reference X    NVIDIA's nvidia-1.17.2.tar.gz or its unpacked dir (default
#                    .gpu-carry/nvidia-1.17.2.tar.gz, else $NVHOOK_REFERENCE)
#
# It goes through tests/gpu/run.sh --no-checks (runc, busybox and the wheels from .gpu-carry,
# nvhook installed into the work dir: the front door and the Python launchers), so what it
# needs on a lent H200 is .gpu-carry/ (tests/gpu/prepare.sh) plus NVIDIA's tarball in it.
set -u -o pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
out=
n=100
fake=()
reference=
while [ $# -gt 0 ]; do
	case "$1" in
	--out) out=${2:?--out needs a dir}; shift ;;
	-n) n=${2:?-n needs a number}; shift ;;
	--fake) fake=(--fake) ;;
	--reference) reference=${2:?--reference needs a path}; shift ;;
	-h | --help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "bench.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
	esac
	shift
done
[ -n "$reference" ] || reference=$repo/.gpu-carry/nvidia-1.17.2.tar.gz
[ -e "$reference" ] || reference=${NVHOOK_REFERENCE:-}
ref=/var/tmp/nvhook-nvidia-ref
rm -rf "$ref"
if [ -f "$reference" ]; then
	mkdir -p "$ref" && tar -xzf "$reference" -C "$ref" || { echo "bench.sh: cannot unpack $reference"; exit 1; }
elif [ -d "$reference" ]; then
	ref=$reference
else
	echo "bench.sh: no NVIDIA reference (carry nvidia-1.17.2.tar.gz in .gpu-carry/, or" \
		"--reference): nvhook is timed alone"
	ref=
fi
nv=()
[ -n "$ref" ] && nv=(--nvidia "$ref")
json() { [ -n "$out" ] && echo "--json $out/$1.json"; }
[ -n "$out" ] && mkdir -p "$out"

echo "bench.sh: $(date -u '+%Y-%m-%d %H:%M:%S UTC'), tree $(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo '?')"
nproc; uname -r; nvidia-smi -L 2>/dev/null || /usr/local/nvidia/bin/nvidia-smi -L 2>/dev/null || true
# Each --bench is one bench/hook_latency.py run; run.sh word-splits its arguments.
bash "$here/run.sh" "${fake[@]}" --no-checks --deadline 110 \
	--bench "--mode gpu -n $n --rss 20 ${nv[*]} $(json gpu)" \
	--bench "--mode none -n $n ${nv[*]} $(json none)" \
	--bench "--mode cold -n $((n / 4 + 1)) --warmup 1 ${nv[*]} $(json cold)" \
	--bench "--mode shim -n $n ${nv[*]} $(json shim)" \
	--bench "--concurrent 64 --rounds 2 --warmup 1 ${nv[*]} $(json concurrent64)"
rc=$?
# Where the first container's Python time goes (every cache emptied), and a warm run.
if [ ${#fake[@]} = 0 ]; then
	root=/
	[ -e /usr/local/nvidia/lib64/libnvidia-ml.so.1 ] && root=/usr/local/nvidia
	cfg=/var/tmp/nvhook-phases.toml
	printf '[host]\ndriver-root = "%s"\n' "$root" >"$cfg"
	for mode in --cold ""; do
		# shellcheck disable=SC2086 # $mode is one option or none
		(cd "$repo" && timeout 120 /usr/bin/python3 bench/hook_phases.py --config "$cfg" $mode \
			--runs 15 --path /tmp/site) || { [ "$rc" = 0 ] && rc=1; }
	done
fi
exit "$rc"
