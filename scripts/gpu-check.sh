#!/usr/bin/env bash
# Everything that needs a GPU, in one run: builds mopt with the CUDA backend,
# runs the GPU tests (which fail here, instead of skipping, when no GPU is
# found), then the CUDA benchmark on the 1B-class layer shapes, and prints one
# table to paste into docs/BENCHMARKS.md with the GPU's name and the date.
#
#   scripts/gpu-check.sh                 build into build-cuda/, then check
#   scripts/gpu-check.sh --prebuilt DIR  use DIR/bin and DIR/lib built elsewhere
#                                        (a GPU machine without the Debian -dev packages)
#   BENCH_ARGS="--layers 4" scripts/gpu-check.sh   arguments for mopt-bench-cuda
set -euo pipefail
cd "$(dirname "$0")/.."

dir=build-cuda
if [[ "${1:-}" == "--prebuilt" ]]; then
  [[ -n "${2:-}" && -x "${2:-}/bin/test_cuda_linear" ]] || { echo "gpu-check: --prebuilt DIR needs DIR/bin/test_cuda_linear" >&2; exit 2; }
  dir=$2
  export LD_LIBRARY_PATH="$dir/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
elif [[ $# -gt 0 ]]; then
  echo "usage: scripts/gpu-check.sh [--prebuilt DIR]" >&2
  exit 2
else
  command -v nvcc >/dev/null || export PATH="/usr/local/cuda/bin:$PATH"
  configured=$(cmake -B "$dir" -DCMAKE_BUILD_TYPE=Release -DMOPT_CUDA=ON 2>&1)
  grep -q 'mopt: CUDA backend ON' <<<"$configured" ||
    { echo "gpu-check: CMake found no CUDA compiler or toolkit (is nvcc on PATH?)" >&2; exit 1; }
  cmake --build "$dir" -j"$(nproc)" --target test_cuda_linear mopt_bench_cuda
fi

command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader

echo "== GPU tests"
MOPT_CUDA_REQUIRE=1 "$dir/bin/test_cuda_linear"

echo "== CUDA benchmark"
# shellcheck disable=SC2086
"$dir/bin/mopt-bench-cuda" ${BENCH_ARGS:-}
echo "gpu-check: done $(date -u +%Y-%m-%dT%H:%MZ)"
