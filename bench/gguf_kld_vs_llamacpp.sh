#!/usr/bin/env bash
# GGUF quality, mopt against llama.cpp: KL divergence from the F32 model and bits per weight of both tools' files,
# measured by upstream llama-perplexity on the same text.
#
#   LLAMA_CPP_BIN=/path/to/llama.cpp/build/bin bench/gguf_kld_vs_llamacpp.sh MODEL CALIB.txt EVAL.txt [WORKDIR]
#
# mopt writes MODEL as an F32 GGUF; llama-perplexity saves its logits on EVAL (--kl-divergence-base, ctx CTX).
# Importance matrices come from CALIB: llama-imatrix's (CHUNKS chunks of 512, when llama-imatrix is in
# LLAMA_CPP_BIN) and mopt's (quant.imatrix, CHUNKS windows of 512). For every type in TYPES it makes
#   llama.cpp   llama-quantize F32.gguf, without and with each matrix
#   mopt        mopt export --type, without and with each matrix
# checks which of mopt's files hold exactly llama-quantize's tensors (those need no run of their own: their KLD is
# llama.cpp's), runs llama-perplexity --kl-divergence on the rest, and prints one table: bits per weight, mean KLD,
# ppl ratio and same-top-token rate.
#
# GPTQ=1 adds mopt's `export --method gptq` file of each type (128 windows of 512 from CALIB; no matrix), AWQ=1 its
# `export --method awq` file (AWQ's scales searched on the blocks; then a matrix from CALIB for what AWQ leaves).
# Environment: LLAMA_CPP_BIN (required: llama-quantize and llama-perplexity), MOPT (build/bin/mopt), THREADS (2),
# CTX (256), CHUNKS (32), TYPES ("q4_0 q4_k_s q4_k_m q5_k_m q6_k"; any of mopt's GGUF types and mixes, e.g.
# "q2_k q3_k_s q3_k_m q3_k_l"; q2_k_s runs with the matrices only, as llama-quantize refuses it without one).
set -euo pipefail

usage() { echo "usage: LLAMA_CPP_BIN=DIR $0 MODEL CALIB.txt EVAL.txt [WORKDIR]" >&2; exit 2; }
[ $# -ge 3 ] || usage
MODEL=$1 CALIB=$2 EVAL=$3
WORK=${4:-/tmp/mopt-gguf-kld}
MOPT=${MOPT:-build/bin/mopt}
THREADS=${THREADS:-2}
CTX=${CTX:-256}
CHUNKS=${CHUNKS:-32}
TYPES=${TYPES:-q4_0 q4_k_s q4_k_m q5_k_m q6_k}
L=${LLAMA_CPP_BIN:-}
[ -n "$L" ] && [ -x "$L/llama-quantize" ] && [ -x "$L/llama-perplexity" ] ||
  { echo "gguf_kld_vs_llamacpp: set LLAMA_CPP_BIN to the folder holding llama-quantize and llama-perplexity" >&2; exit 2; }
[ -x "$MOPT" ] || { echo "gguf_kld_vs_llamacpp: $MOPT not found (build mopt, or set MOPT)" >&2; exit 2; }
command -v python3 >/dev/null || { echo "gguf_kld_vs_llamacpp: python3 is needed" >&2; exit 2; }
HERE=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$WORK"

F32=$WORK/f32.gguf
[ -s "$F32" ] || "$MOPT" export "$MODEL" --format gguf --type f32 -o "$F32" --quiet
[ -s "$WORK/base.kld" ] || "$L/llama-perplexity" -m "$F32" -f "$EVAL" -c "$CTX" -t "$THREADS" --kl-divergence-base "$WORK/base.kld" \
  >"$WORK/base.log" 2>&1
[ -s "$WORK/mopt.dat" ] || "$MOPT" pipeline "quant.imatrix<out=$WORK/mopt.dat;calib=$CALIB;calib_samples=$CHUNKS;calib_len=512>" \
  "$MODEL" >/dev/null
MATS="mopt"
if [ -x "$L/llama-imatrix" ]; then
  [ -s "$WORK/llama.dat" ] || "$L/llama-imatrix" -m "$F32" -f "$CALIB" -o "$WORK/llama.dat" -c 512 --chunks "$CHUNKS" -t "$THREADS" \
    >"$WORK/imatrix.log" 2>&1
  MATS="mopt llama"
fi

# file: tool type matrix
: >"$WORK/files.txt"
for t in $TYPES; do
  T=$(echo "$t" | tr a-z A-Z)
  for m in none $MATS; do
    [ "$t" = q2_k_s ] && [ "$m" = none ] && continue
    im=(); [ "$m" = none ] || im=(--imatrix "$WORK/$m.dat")
    f="$WORK/mopt-$t-$m.gguf"
    [ -s "$f" ] || "$MOPT" export "$MODEL" --format gguf --type "$t" "${im[@]}" -o "$f" --quiet
    echo "$f mopt $t $m" >>"$WORK/files.txt"
    f="$WORK/llama-$t-$m.gguf"
    [ -s "$f" ] || "$L/llama-quantize" "${im[@]}" "$F32" "$f" "$T" >/dev/null 2>&1
    echo "$f llama.cpp $t $m" >>"$WORK/files.txt"
  done
  for method in ${GPTQ:+gptq} ${AWQ:+awq}; do # mopt's GPTQ / AWQ onto the same blocks (the types their gguf_type takes)
    case " q4_0 q8_0 q2_k q2_k_s q3_k q3_k_s q3_k_m q3_k_l q4_k q5_k q6_k q4_k_s q4_k_m q5_k_s q5_k_m " in
    *" $t "*)
      f="$WORK/mopt-$t-$method.gguf"
      [ -s "$f" ] || "$MOPT" export "$MODEL" --format gguf --type "$t" --method "$method" --calib "$CALIB" -o "$f" --force --quiet
      echo "$f mopt $t $method" >>"$WORK/files.txt" ;;
    esac
  done
done

python3 - "$WORK" "$L" "$EVAL" "$CTX" "$THREADS" "$HERE/tests" <<'EOF'
import os, re, subprocess, sys
work, lbin, evalf, ctx, threads, tests = sys.argv[1:]
sys.path.insert(0, tests)
from gguf_reader import parse
rows = [l.split() for l in open(os.path.join(work, "files.txt"))]
tensors = {}
def data(f):
    if f not in tensors:
        tensors[f] = {k: v[2] for k, v in parse(f)[1].items()}
    return tensors[f]
def kld(f):
    log = f + ".kld.log"
    if not os.path.exists(log):
        with open(log, "w") as out:
            subprocess.run([f"{lbin}/llama-perplexity", "-m", f, "-f", evalf, "-c", ctx, "-t", threads,
                            "--kl-divergence-base", os.path.join(work, "base.kld"), "--kl-divergence"], stdout=out, stderr=subprocess.STDOUT, check=True)
    text = open(log).read()
    get = lambda pat: float(re.search(pat, text).group(1))
    return get(r"\((\d+\.\d+) BPW\)"), get(r"Mean\s+KLD:\s+(-?\d+\.\d+)"), get(r"Mean PPL\(Q\)/PPL\(base\)\s+:\s+(\d+\.\d+)"), get(r"Same top p:\s+(\d+\.\d+)")
print(f"| type | tool | importance matrix | bits/weight | mean KLD | ppl ratio | same top token | tensors |")
print(f"|---|---|---|---|---|---|---|---|")
for f, tool, t, m in rows:
    twin = os.path.join(work, f"llama-{t}-{m}.gguf")
    note = ""
    src = f
    if tool == "mopt" and os.path.exists(twin):
        same = data(f) == data(twin)
        note = "= llama.cpp's" if same else "differ from llama.cpp's"
        if same: src = twin
    bpw, k, r, top = kld(src)
    print(f"| {t} | {tool} | {m} | {bpw:.3f} | {k:.6f} | {r:.5f} | {top:.3f}% | {note} |")
EOF
