#!/usr/bin/env bash
# mopt against llama.cpp on the same GGUF files, same threads, runs interleaved.
#
#   LLAMA_CPP_BIN=/path/to/llama.cpp/build/bin bench/vs_llamacpp.sh MODEL [WORKDIR]
#
# MODEL is any model mopt loads (e.g. `mopt synth --shape llama-1b -o DIR`).
# mopt exports it to GGUF as F16, Q8_0, Q4_0 and Q4_K (into WORKDIR, default
# /tmp/mopt-vs-llamacpp) and llama-quantize makes a Q4_K_M and a Q3_K_M from the
# F16 file (llama.cpp's own k-quant mixes, which mopt runs as stored), then REPS times
# runs llama-bench and `mopt bench` on
# each file one after the other, so both see the same machine state. Both decode
# after the prompt: `mopt bench` continues from it, llama-bench's generation
# test runs at that depth (-d PROMPT). It also
# times mopt's own packed formats (int8 per row, int4 g128 from quant.rtn) next
# to llama.cpp's Q8_0 / Q4_0. Prints one table of medians: prefill and decode
# tok/s, mopt / llama.cpp, and the fraction of the read bandwidth mopt measured
# beside each of its runs (the median over REPS, and the runs' range). Each
# invocation keeps its runs' JSON in a folder of its own (WORKDIR/runs-TIME-PID),
# so no run of an earlier invocation is ever read again.
#
# Both keep the KV cache in f16 (llama-bench's default; mopt bench --kv-cache
# KV_CACHE). The bandwidth column counts what mopt's decode reads, the weights
# and the cache up to its position, and after the range the weights alone.
#
# Environment: LLAMA_CPP_BIN (required: the folder holding llama-bench),
# MOPT (default build/bin/mopt), THREADS (2), PROMPT (512), GEN (32), REPS (3),
# KV_CACHE (f16; f32 for mopt's default cache). The table's heading names the GEMM kernels mopt's prefill
# ran (an OPENBLAS_CORETYPE in the environment picks them: unset it to let OpenBLAS choose).
set -euo pipefail

usage() { echo "usage: LLAMA_CPP_BIN=DIR $0 MODEL [WORKDIR]" >&2; exit 2; }
[ $# -ge 1 ] || usage
MODEL=$1
WORK=${2:-/tmp/mopt-vs-llamacpp}
MOPT=${MOPT:-build/bin/mopt}
THREADS=${THREADS:-2}
PROMPT=${PROMPT:-512}
GEN=${GEN:-32}
REPS=${REPS:-3}
KV_CACHE=${KV_CACHE:-f16}
[ -n "${LLAMA_CPP_BIN:-}" ] && [ -x "$LLAMA_CPP_BIN/llama-bench" ] ||
  { echo "vs_llamacpp: set LLAMA_CPP_BIN to the folder holding llama-bench" >&2; exit 2; }
[ -x "$MOPT" ] || { echo "vs_llamacpp: $MOPT not found (build mopt, or set MOPT)" >&2; exit 2; }
command -v python3 >/dev/null || { echo "vs_llamacpp: python3 is needed to read the JSON results" >&2; exit 2; }
# this invocation's runs: llama.cpp's of a GGUF file serve the rows that share it, never an earlier invocation's
RUNS=$WORK/runs-$(date -u +%Y%m%d-%H%M%S)-$$
mkdir -p "$RUNS"

for t in f16 q8_0 q4_0 q4_k; do
  f="$WORK/model-$t.gguf"
  [ -s "$f" ] || "$MOPT" export "$MODEL" --format gguf --type "$t" -o "$f" >/dev/null
done
[ -x "$LLAMA_CPP_BIN/llama-quantize" ] ||
  { echo "vs_llamacpp: $LLAMA_CPP_BIN/llama-quantize not found (build the llama-quantize target)" >&2; exit 2; }
for t in Q4_K_M Q3_K_M; do
  f="$WORK/model-$(echo "$t" | tr 'A-Z' 'a-z').gguf"
  [ -s "$f" ] || "$LLAMA_CPP_BIN/llama-quantize" "$WORK/model-f16.gguf" "$f" "$t" "$THREADS" >/dev/null 2>&1
done

# name | GGUF file for llama.cpp | what mopt runs | mopt --pipeline (or none)
ROWS=(
  "F16|model-f16.gguf|$WORK/model-f16.gguf|"
  "Q8_0|model-q8_0.gguf|$WORK/model-q8_0.gguf|"
  "Q4_0|model-q4_0.gguf|$WORK/model-q4_0.gguf|"
  "Q4_K (mopt's export)|model-q4_k.gguf|$WORK/model-q4_k.gguf|"
  "Q4_K_M (llama-quantize's)|model-q4_k_m.gguf|$WORK/model-q4_k_m.gguf|"
  "Q3_K_M (llama-quantize's)|model-q3_k_m.gguf|$WORK/model-q3_k_m.gguf|"
  "mopt int8 per row vs Q8_0|model-q8_0.gguf|$MODEL|quant.rtn<bits=8;group_size=-1;sym=true>"
  "mopt int4 g128 vs Q4_0|model-q4_0.gguf|$MODEL|quant.rtn<bits=4;group_size=128>"
)

for r in $(seq 1 "$REPS"); do
  for i in "${!ROWS[@]}"; do
    IFS='|' read -r name gguf what pipe <<<"${ROWS[$i]}"
    echo "round $r/$REPS: $name" >&2
    if [ ! -s "$RUNS/llama-$gguf-$r.json" ]; then
      # prefill of PROMPT tokens, then GEN decoded after PROMPT tokens of context (-d), as `mopt bench` decodes
      { "$LLAMA_CPP_BIN/llama-bench" -m "$WORK/$gguf" -t "$THREADS" -p "$PROMPT" -n 0 -r 1 -o jsonl
        "$LLAMA_CPP_BIN/llama-bench" -m "$WORK/$gguf" -t "$THREADS" -p 0 -n "$GEN" -d "$PROMPT" -r 1 -o jsonl
      } >"$RUNS/llama-$gguf-$r.json.tmp" 2>/dev/null
      mv "$RUNS/llama-$gguf-$r.json.tmp" "$RUNS/llama-$gguf-$r.json"
    fi
    args=(bench "$what" --threads "$THREADS" --prompt-len "$PROMPT" --gen "$GEN" --runs 1 --warmup 1 --quiet --kv-cache "$KV_CACHE"
          --json "$RUNS/mopt-$i-$r.json")
    [ -n "$pipe" ] && args+=(--pipeline "$pipe")
    "$MOPT" "${args[@]}" >/dev/null
  done
done

echo "runs: $RUNS" >&2
python3 - "$RUNS" "$REPS" "$THREADS" "$PROMPT" "$GEN" "$KV_CACHE" "${ROWS[@]}" <<'EOF'
import json, statistics, sys
runs, reps, threads, prompt, gen, kv = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6]
rows = [r.split("|") for r in sys.argv[7:]]
med = statistics.median

def llama(gguf):
    pp, tg = [], []
    for r in range(1, reps + 1):
        for line in open(f"{runs}/llama-{gguf}-{r}.json"):
            if line.strip():
                e = json.loads(line)
                (pp if e["n_prompt"] > 0 and e["n_gen"] == 0 else tg).append(e["avg_ts"])
    return med(pp), med(tg)

def mopt(i):
    d = [json.load(open(f"{runs}/mopt-{i}-{r}.json")) for r in range(1, reps + 1)]
    f = [x["decode_bandwidth_fraction"] for x in d]
    return (med(x["prefill_tok_s"] for x in d), med(x["decode_tok_s"] for x in d), med(f), min(f), max(f),
            med(x["decode_weight_bandwidth_fraction"] for x in d), med(x["read_gb_s"] for x in d))

first = json.load(open(f"{runs}/mopt-0-1.json"))
print(f"{threads} threads, prompt {prompt}, {gen} generated after it (llama-bench -d {prompt}), mopt's KV cache {kv}, "
      f"medians of {reps} interleaved runs; mopt's kernels {first.get('kernels', '?')}, its prefill GEMMs on "
      f"{first.get('gemm', '?')}\n")
print("| weights | llama.cpp prefill | mopt prefill | ratio | llama.cpp decode | mopt decode | ratio | mopt decode, of read bandwidth: median (runs' range; weights alone) |")
print("|---|---|---|---|---|---|---|---|")
for i, (name, gguf, _, _) in enumerate(rows):
    lpp, ltg = llama(gguf)
    mpp, mtg, frac, lo, hi, wfrac, bw = mopt(i)
    print(f"| {name} | {lpp:.1f} | {mpp:.1f} | {mpp / lpp:.2f}x | {ltg:.2f} | {mtg:.2f} | {mtg / ltg:.2f}x | "
          f"{100 * frac:.0f}% ({100 * lo:.0f}-{100 * hi:.0f}%; {100 * wfrac:.0f}%) of {bw:.1f} GB/s |")
EOF
