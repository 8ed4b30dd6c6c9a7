#!/usr/bin/env bash
# The SDK end to end: install mopt into a prefix, build plugins/example out of
# tree against it (find_package(mopt)), load it through MOPT_PLUGIN_PATH and run
# it from a Lua script with the installed CLI. Also checks pkg-config.
set -euo pipefail
src=$1 build=$2 work=$3
rm -rf "$work" && mkdir -p "$work"
cmake --install "$build" --prefix "$work/prefix" > "$work/install.log"
cmake -S "$src/plugins/example" -B "$work/example" -DCMAKE_PREFIX_PATH="$work/prefix" -DCMAKE_BUILD_TYPE=Release > "$work/configure.log"
cmake --build "$work/example" > "$work/build.log"
test -f "$work/example/lib/mopt/libmopt-example.so"
# the installed plugin folder holds eval but not the example
test -f "$work/prefix/lib/mopt/libmopt-eval.so"
test ! -e "$work/prefix/lib/mopt/libmopt-example.so"
export MOPT_PLUGIN_PATH="$work/example/lib/mopt"
mopt="$work/prefix/bin/mopt"
"$mopt" plugins --json > "$work/plugins.json"
grep -q "\"file\": \"$work/example/lib/mopt/libmopt-example.so\"" "$work/plugins.json"
grep -q '"name": "eval.perplexity"' "$work/plugins.json"
"$mopt" describe example.weight_stats | grep -q "layers"
shared=${MOPT_SHARED:-$src/../shared}
if [ -d "$shared/models" ]; then
  cat > "$work/stats.lua" <<LUA
local m <close> = mopt.load(args.model)
local r = mopt.pipeline{ {"example.weight_stats", {layers = "mlp"}} }:run(m)
assert(r.metrics.linear_layers == 8 * 3, r.metrics.linear_layers)
assert(r.metrics.absmax > 0)
print(string.format("example.weight_stats: %d linears, absmax %.4f", r.metrics.linear_layers, r.metrics.absmax))
LUA
  MOPT_QUIET=1 "$mopt" run "$work/stats.lua" model="$shared/models/lit-llama-7m"
fi
# pkg-config sees the installed library
PKG_CONFIG_PATH="$work/prefix/lib/pkgconfig" pkg-config --cflags --libs mopt | grep -q -- "-lmopt"
# an embedder links the core alone: no Lua on its link line or in its loaded libraries
export PKG_CONFIG_PATH="$work/prefix/lib/pkgconfig"
libs=$(pkg-config --libs mopt)
case "$libs" in *lua*) echo "pkg-config --libs mopt names Lua: $libs" >&2; exit 1 ;; esac
# a sanitizer build of the library needs its runtime first in the embedder too
san=""
if ldd "$work/prefix/lib/libmopt.so" | grep -q libasan; then san="-fsanitize=address,undefined"; fi
cc -std=c11 $san -o "$work/embed" "$src/tests/e2e/sdk/embed.c" $(pkg-config --cflags mopt) $libs -Wl,-rpath,"$work/prefix/lib"
if ldd "$work/embed" | grep -q liblua; then echo "the core pulls in Lua:" >&2; ldd "$work/embed" >&2; exit 1; fi
if [ -d "$shared/models" ]; then
  next=$("$work/embed" "$shared/models/lit-llama-7m" "ROMEO:")
  [ "$next" -ge 0 ] 2>/dev/null || { echo "embed printed '$next'" >&2; exit 1; }
  echo "sdk: an embedder of the core alone ran a forward pass (next token $next)"
fi
echo "sdk: out-of-tree plugin built, loaded and run"
