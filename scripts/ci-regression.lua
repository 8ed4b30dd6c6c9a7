-- CI regression gate: quantize a model, compare it with the original, time it,
-- gate on quality and speed, and write report.json / report.md / report.html.
-- `mopt run` exits 3 when a gate fails (after the reports are written), so a
-- CI job goes red on a regression and 1/2 on a broken run.
--
--   mopt run scripts/ci-regression.lua model=../shared/models/lit-llama-7m \
--       data=../shared/data/lit-val.txt out=reports [bits=4] [group=128] \
--       [max_ppl_increase=0.02] [min_top1_agree=0.9] [max_p95_ms=50]
local model = assert(args.model, "model=PATH is required")
local data = assert(args.data, "data=FILE is required")
local out = args.out or "reports"
local bits = math.tointeger(tonumber(args.bits or "4"))
local group = math.tointeger(tonumber(args.group or "128"))

local m <close> = mopt.load(model)
local report <close> = mopt.pipeline{
  {"quant.rtn", {bits = bits, group_size = group, sym = bits == 8}},
  {"eval.compare", {baseline = model, data = data}},
  {"eval.bench", {prompt_len = {64}, gen = 32, runs = 3}},
  {"eval.gate", {
    max_ppl_increase = tonumber(args.max_ppl_increase or "0.02"),
    min_top1_agree = tonumber(args.min_top1_agree or "0.9"),
    max_p95_ms = tonumber(args.max_p95_ms or "50"),
  }},
}:run(m)
report:write(out, "CI regression: " .. model .. string.format(" int%d g%d", bits, group))
local r = report.metrics
print(string.format("ppl %.4f vs %.4f (ratio %.4f, 95%% CI [%.4f, %.4f]), top-1 %.3f, p95 %.3f ms -> gates %s",
  r.ppl, r.ppl_baseline, r.ppl_ratio, r.ppl_ratio_ci95_lo, r.ppl_ratio_ci95_hi, r.top1_agree,
  r.latency_ms_p95, report.gates_ok and "passed" or "FAILED"))
print("reports in " .. out)
