#!/usr/bin/env bash
# mopt serve's status page (GET /) in headless Chromium: after a few requests
# the page's script has read /metrics and drawn a row per arm with the
# generated-token count the server reports; a screenshot is not blank.
set -euo pipefail
mopt=$1 src=$2 work=$3
shared=${MOPT_SHARED:-$src/../shared}
[ -d "$shared/models" ] || { echo "skipping: fixtures folder $shared not present"; exit 77; }
source "$src/tests/e2e/chromium.sh"
rm -rf "$work" && mkdir -p "$work"
"$mopt" serve "$shared/models/lit-llama-7m" --candidate "$shared/models/lit-gpt2-1m" --split 0.5 --threads 2 \
  --port 0 --port-file "$work/port" > "$work/serve.log" 2>&1 &
pid=$!
trap 'kill $pid 2> /dev/null || true' EXIT
for _ in $(seq 600); do [ -s "$work/port" ] && break; sleep 0.1; done
[ -s "$work/port" ] || { echo "the server did not start:"; cat "$work/serve.log"; exit 1; }
url=http://127.0.0.1:$(cat "$work/port")
for i in $(seq 20); do
  curl -sS --fail "$url/v1/completions" -d "{\"prompt\": \"ROMEO:\", \"max_tokens\": 8, \"seed\": $i}" > /dev/null
done
tokens=$(curl -sS "$url/metrics" | awk '/^mopt_generated_tokens_total\{arm="lit-llama-7m"\}/ {print $2}')
timeout 120 "$browser" "${chromium_flags[@]}" --virtual-time-budget=5000 --dump-dom "$url/" > "$work/dom.html" 2> "$work/chromium.log" || true
grep -q "<td>lit-llama-7m</td><td>[0-9]*</td><td>0</td><td>$tokens</td>" "$work/dom.html" ||
  { echo "the page has no row for lit-llama-7m with $tokens generated tokens:"; grep -o "<tbody>.*</tbody>" "$work/dom.html" | head -c 600; exit 1; }
grep -q "<td>lit-gpt2-1m</td>" "$work/dom.html" || { echo "the page has no row for the candidate"; exit 1; }
timeout 120 "$browser" "${chromium_flags[@]}" --virtual-time-budget=5000 --window-size=1000,700 \
  --screenshot="$work/shot.png" "$url/" > "$work/chromium-shot.log" 2>&1 || true
[ -s "$work/shot.png" ] || { echo "chromium produced no screenshot:"; tail -5 "$work/chromium-shot.log"; exit 1; }
python3 "$src/tests/png_nonblank.py" "$work/shot.png"
kill -TERM $pid
wait $pid
trap - EXIT
echo "the status page draws both arms from /metrics ($tokens tokens for the baseline)"
