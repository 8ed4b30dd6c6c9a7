#!/usr/bin/env bash
# report.html renders in headless Chromium: run a pipeline that fills every
# chart (ppl and size bars, latency histogram, per-window NLL scatter), take a
# screenshot and check it is not blank. Chromium comes from Debian; when it
# cannot be had the test is skipped (exit 77) with a message.
set -euo pipefail
mopt=$1 src=$2 work=$3
shared=${MOPT_SHARED:-$src/../shared}
[ -d "$shared/models" ] || { echo "skipping: fixtures folder $shared not present"; exit 77; }
source "$src/tests/e2e/chromium.sh"
rm -rf "$work" && mkdir -p "$work"
head -c 30000 "$shared/data/lit-val.txt" > "$work/val.txt"
"$mopt" pipeline "quant.rtn<bits=4;group_size=128>,eval.compare<baseline=$shared/models/lit-gpt2-1m;data=$work/val.txt>,eval.bench<prompt_len=32;gen=16;runs=3>,eval.ab<candidate=$shared/models/lit-gpt2-1m;data=$work/val.txt;requests=16;gen=8;prompt_tokens=32>" \
  "$shared/models/lit-gpt2-1m" --report-dir "$work/report" --quiet > /dev/null
grep -q "<svg" "$work/report/report.html"
test "$(grep -c "<svg" "$work/report/report.html")" -ge 4   # bars x2, histogram, scatter
timeout 120 "$browser" "${chromium_flags[@]}" --window-size=1100,2600 --screenshot="$work/shot.png" "file://$work/report/report.html" > "$work/chromium.log" 2>&1 || true
[ -s "$work/shot.png" ] || { echo "chromium produced no screenshot:"; tail -5 "$work/chromium.log"; exit 1; }
python3 "$src/tests/png_nonblank.py" "$work/shot.png"
