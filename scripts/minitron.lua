-- Minitron, NVIDIA's recipe for a smaller model: prune widths (and depth) by
-- activation importance to a parameter budget or a shape, then recover by
-- distillation from the original as teacher; measure both against the
-- original and write report.json / report.md / report.html (sizes, ppl
-- before and after recovery, the loss curves).
--
--   mopt run scripts/minitron.lua model=../shared/models/lit-llama-7m \
--       train=../shared/data/lit-train.txt val=../shared/data/lit-val.txt \
--       [params=0.55 | hidden=192 ffn=512 heads=6 kv_heads=3 layers=8] [calib_samples=128] \
--       [tokens=1000000] [lr=1e-3] [hidden_loss=true] [max_ppl=43] [export=DIR] [out=reports]
local model = assert(args.model, "model=PATH is required")
local train = assert(args.train, "train=FILE (calibration and training text) is required")
local val = assert(args.val, "val=FILE (validation text, never the training text) is required")
local out = args.out or "reports"
local function int(k, default)
  local v = args[k] or default
  if v == nil then return nil end
  return assert(math.tointeger(tonumber(v)), k .. "= is an integer")
end

local cut = {calib = train, calib_samples = int("calib_samples", "128"), calib_len = int("calib_len", "512")}
local shaped = false
for _, k in ipairs({"hidden", "ffn", "heads", "kv_heads", "layers"}) do
  if args[k] then cut[k] = int(k); shaped = true end
end
if not shaped then cut.params = tonumber(args.params or "0.55") end

local recover = {
  teacher = model, data = train, eval = val, alpha = 0,
  tokens = int("tokens", "1000000"), lr = tonumber(args.lr or "1e-3"),
  ctx = int("ctx", "256"), batch = int("batch", "4"), eval_every = int("eval_every", "100"),
}
local distill = "distill.logits"
if args.hidden_loss == "true" then distill = "distill.hidden" end

local passes = {
  {"prune.minitron", cut},
  {"eval.perplexity", {data = val}}, -- the cut model before recovery
  {distill, recover},
  {"eval.compare", {baseline = model, data = val}},
}
if args.max_ppl then passes[#passes + 1] = {"eval.gate", {checks = "ppl<=" .. tonumber(args.max_ppl)}} end
if args.export then passes[#passes + 1] = {"export.hf", {out = args.export}} end

local m <close> = mopt.load(model)
local report <close> = mopt.pipeline(passes):run(m)
report:write(out, string.format("Minitron of %s", model))
local p = report.passes
local pruned, before = p[1].metrics, p[2].metrics
local r = report.metrics
print(string.format("Minitron: %d -> %d parameters (%.1f%%): hidden %d, ffn %d, heads %d in %d groups, layers %d",
  math.tointeger(pruned.params_before), math.tointeger(pruned.params_after), 100 * pruned.params_ratio,
  math.tointeger(pruned.hidden), math.tointeger(pruned.ffn), math.tointeger(pruned.heads),
  math.tointeger(pruned.kv_heads), math.tointeger(pruned.layers)))
print(string.format("ppl %.4f cut, %.4f after %s on %d tokens (the original: %.4f) -> %s",
  before.ppl, r.ppl, distill, math.tointeger(r.tokens_trained) or 0, r.ppl_baseline,
  report.gates_ok and "gates passed" or "gates FAILED"))
print("reports in " .. out)
