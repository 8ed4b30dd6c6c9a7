-- Serving gate for CI: start `mopt serve` on a free port, load it with
-- `mopt loadtest`, scrape /metrics, stop the server with SIGTERM, and fail
-- (exit 3) when throughput, latency or errors cross the thresholds.
--
--   mopt run scripts/serve-gate.lua model=../shared/models/lit-llama-7m \
--       [candidate=DIR split=0.3 shadow=1 gate=min_top1_agree=0.8] \
--       [mopt=build/bin/mopt] [concurrency=8] [requests=200] [max_tokens=64] [prompts=FILE] \
--       [min_tok_s=100] [max_p95_s=5] [max_errors=0] [max_rollbacks=-1]
local model = assert(args.model, "model=PATH is required")
local mopt_bin = args.mopt or "build/bin/mopt"
local function num(key, default) return tonumber(args[key] or default) end
local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end
local function sh(cmd) return os.execute(cmd) == true end

local mk = io.popen("mktemp -d") -- a new private directory: the only thing this script removes
local work = assert(mk:read("l"), "mktemp -d failed")
mk:close()

local serve = {q(mopt_bin), "serve", q(model), "--port 0", "--port-file", q(work .. "/port"), "--threads 2"}
if args.candidate then
  for _, kv in ipairs{{"--candidate", args.candidate}, {"--split", args.split or "0.1"}, {"--shadow", args.shadow},
                      {"--gate", args.gate}, {"--gate-window", args.gate_window}} do
    if kv[2] then serve[#serve + 1] = kv[1] .. " " .. q(kv[2]) end
  end
end
assert(sh(table.concat(serve, " ") .. " > " .. q(work .. "/serve.log") .. " 2>&1 & echo $! > " .. q(work .. "/pid")))
local pid = io.open(work .. "/pid"):read("l")

local function read_all(path)
  local f = io.open(path)
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

local port
for _ = 1, 600 do -- up to a minute for the models to load
  port = tonumber(read_all(work .. "/port") or "")
  if port or not sh("kill -0 " .. pid .. " 2> /dev/null") then break end
  sh("sleep 0.1")
end
if not port then
  sh("kill -TERM " .. pid .. " 2> /dev/null")
  error("the server did not start: " .. (read_all(work .. "/serve.log") or ""))
end
local url = "http://127.0.0.1:" .. port

local load_cmd = {q(mopt_bin), "loadtest", url, "--concurrency", num("concurrency", 8), "--requests", num("requests", 200),
                  "--max-tokens", num("max_tokens", 64), "--json", q(work .. "/load.json")}
if args.prompts then load_cmd[#load_cmd + 1] = "--prompts " .. q(args.prompts) end
sh(table.concat(load_cmd, " ")) -- a failed request makes it exit 1; the gate below judges that

local metrics = {}
local scrape = io.popen("curl -sS --max-time 30 " .. q(url .. "/metrics"))
for line in scrape:lines() do
  local name, value = line:match("^([^#%s][^%s]*) ([^%s]+)$")
  if name then metrics[name] = tonumber(value) end
end
scrape:close()

sh("kill -TERM " .. pid)
for _ = 1, 600 do
  if not sh("kill -0 " .. pid .. " 2> /dev/null") then break end
  sh("sleep 0.1")
end

local load = read_all(work .. "/load.json") or "{}"
local function field(k) return tonumber(load:match('"' .. k .. '":%s*([-%d.eE+]+)')) end
local ok_n, failed, tok_s, p95 = field("ok") or 0, field("failed") or -1, field("tokens_per_s") or 0, field("p95_s") or 1e9
local internal = metrics['mopt_errors_total{kind="internal"}'] or 0
local rollbacks = metrics["mopt_rollbacks_total"] or 0

local failures = {}
local function gate(cond, what) if not cond then failures[#failures + 1] = what end end
gate(failed >= 0 and failed + internal <= num("max_errors", 0),
  string.format("%d failed requests and %d server errors > max_errors %g", failed, internal, num("max_errors", 0)))
gate(tok_s >= num("min_tok_s", 0), string.format("%.1f tokens/s < min_tok_s %g", tok_s, num("min_tok_s", 0)))
gate(p95 <= num("max_p95_s", 1e9), string.format("p95 %.3f s > max_p95_s %g", p95, num("max_p95_s", 1e9)))
if num("max_rollbacks", -1) >= 0 then
  gate(rollbacks <= num("max_rollbacks", -1), string.format("%d rollbacks > max_rollbacks %g", rollbacks, num("max_rollbacks", -1)))
end

print(string.format("serve gate: %d ok, %d failed, %.1f tokens/s, p95 %.3f s, %d rollbacks -> %s", ok_n, failed, tok_s,
  p95, rollbacks, #failures == 0 and "passed" or "FAILED"))
for _, f in ipairs(failures) do print("  " .. f) end
sh("rm -rf " .. q(work))
if #failures > 0 then os.exit(3) end
