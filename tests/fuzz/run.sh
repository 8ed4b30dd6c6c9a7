#!/usr/bin/env bash
# Builds the libFuzzer harnesses (Debian's clang, -fsanitize=fuzzer,address,
# undefined) and runs each from the seed corpus in tests/fuzz/corpus/<harness>.
#   tests/fuzz/run.sh [SECONDS_PER_HARNESS] [HARNESS ...]     (default 60 s each, all)
#   MOPT_FUZZ_RUNS=1000000 tests/fuzz/run.sh 0 gguf          (a number of executions instead)
# New inputs go to build-fuzz/corpus/<harness> (the repository's seeds are not
# touched); a crash leaves crash-* there and makes the script exit non-zero.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${MOPT_FUZZ_BUILD:-$root/build-fuzz}
secs=${1:-60}
shift || true
harnesses=("$@")
[ ${#harnesses[@]} -gt 0 ] || harnesses=(safetensors gguf imatrix llama2c llama2c_tokenizer tokenizer_json checkpoint_dir pipeline_text serve_request chat_template)
command -v clang >/dev/null || { echo "fuzz: clang is missing (apt-get install clang)" >&2; exit 2; }
cmake -S "$root" -B "$build" -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMOPT_FUZZ=ON -DMOPT_BUILD_TESTS=OFF >/dev/null
cmake --build "$build" -j"$(nproc)" >/dev/null
status=0
for h in "${harnesses[@]}"; do
  corpus=$build/corpus/$h
  mkdir -p "$corpus" "$build/artifacts/$h"
  cp -n "$root/tests/fuzz/corpus/$h/"* "$corpus/" 2>/dev/null || true
  limit=(-max_total_time="$secs")
  [ -n "${MOPT_FUZZ_RUNS:-}" ] && limit=(-runs="$MOPT_FUZZ_RUNS")
  log=$build/artifacts/$h/log.txt
  start=$(date +%s)
  if ! ASAN_OPTIONS=detect_leaks=1 "$build/bin/fuzz_$h" "${limit[@]}" -max_len=131072 -timeout=20 -rss_limit_mb=4096 \
       -print_final_stats=1 -artifact_prefix="$build/artifacts/$h/" "$corpus" >"$log" 2>&1; then
    echo "fuzz_$h: FAILED (see $log and $build/artifacts/$h/)"
    status=1
    continue
  fi
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
  echo "fuzz_$h: $execs executions in $(( $(date +%s) - start )) s, no crash"
done
exit $status
