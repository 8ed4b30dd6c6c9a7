#!/usr/bin/env bash
# The demo: greedy generation and perplexity of the bundled models.
# Run from the project root after building (cmake -B build && cmake --build build -j).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
mopt="$root/build/bin/mopt"
shared="${MOPT_SHARED:-$root/../shared}"
models="$shared/models"

echo "== stories260K (llama2.c checkpoint), greedy, 256 tokens"
"$mopt" generate "$models/stories260K/stories260K.bin" --temp 0 -n 256

for m in lit-llama-7m lit-gpt2-1m; do
  echo
  echo "== $m: greedy continuation of \"KING HENRY:\\nWhat news\""
  "$mopt" generate "$models/$m" --prompt $'KING HENRY:\nWhat news' -n 64 --temp 0
  echo "== $m: perplexity on lit-val.txt, ctx 256 (reference: shared/reference/lit.json ppl_ctx256)"
  "$mopt" eval "$models/$m" --data "$shared/data/lit-val.txt" --ctx 256
done
