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

echo
echo "== lit-llama-7m: int4 (RTN, groups of 128) saved as compressed-tensors, and a GGUF Q4_K for llama.cpp;"
echo "   both evaluated from disk"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$mopt" quantize "$models/lit-llama-7m" --method rtn --bits 4 --group 128 -o "$tmp/llama-int4" --quiet
"$mopt" eval "$tmp/llama-int4" --data "$shared/data/lit-val.txt" --ctx 256
"$mopt" export "$models/lit-llama-7m" -o "$tmp/llama-q4k.gguf" --format gguf --type q4_k --quiet
"$mopt" eval "$tmp/llama-q4k.gguf" --data "$shared/data/lit-val.txt" --ctx 256
