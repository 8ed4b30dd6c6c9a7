#!/usr/bin/env bash
# Continuous batching measured: one `mopt serve`, then `mopt loadtest` with 1
# client and with N clients (each request max_tokens tokens, prompts from
# lit-val lines), interleaved RUNS times; prints every run and the medians of
# generated tokens/s and their ratio.
#   bench/serve_load.sh [MODEL] [CLIENTS=8] [REQUESTS_PER_CLIENT=200] [RUNS=3] [MAX_TOKENS=64]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
mopt=${MOPT:-$root/build/bin/mopt}
model=${1:-$root/../shared/models/lit-llama-7m}
clients=${2:-8} per=${3:-200} runs=${4:-3} ntok=${5:-64}
work=$(mktemp -d) pid=
trap 'kill $pid 2> /dev/null || true; rm -rf "$work"' EXIT
awk 'NF && n < 64 {print; n++}' "$root/../shared/data/lit-val.txt" > "$work/prompts.txt"
"$mopt" serve "$model" --threads "${THREADS:-$(nproc)}" --max-seqs "$clients" --port 0 --port-file "$work/port" > "$work/serve.log" 2>&1 &
pid=$!
for _ in $(seq 600); do [ -s "$work/port" ] && break; sleep 0.1; done
url=http://127.0.0.1:$(cat "$work/port")
one=() many=()
for r in $(seq "$runs"); do
  "$mopt" loadtest "$url" --concurrency 1 --requests "$per" --max-tokens "$ntok" --prompts "$work/prompts.txt" --json "$work/one.json" | sed "s/^/run $r, 1 client: /"
  one+=("$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["tokens_per_s"])' "$work/one.json")")
  "$mopt" loadtest "$url" --concurrency "$clients" --requests $((clients * per)) --max-tokens "$ntok" --prompts "$work/prompts.txt" --json "$work/many.json" | sed "s/^/run $r, $clients clients: /"
  many+=("$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["tokens_per_s"])' "$work/many.json")")
done
python3 - "${one[*]}" "${many[*]}" "$clients" << 'PY'
import statistics, sys
one = [float(x) for x in sys.argv[1].split()]
many = [float(x) for x in sys.argv[2].split()]
m1, mn = statistics.median(one), statistics.median(many)
print(f"median generated tokens/s: 1 client {m1:.1f}, {sys.argv[3]} clients {mn:.1f}, ratio {mn / m1:.2f}x")
PY
curl -sS "$url/metrics" | grep -E '^mopt_batch_sequences_(sum|count)' || true
