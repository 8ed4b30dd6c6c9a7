-- Quantization-aware distillation (QAD), NVIDIA's recipe: quantize, then train
-- the quantized model through fake quantization on the unquantized model's
-- distributions; compare with the original, gate on the loss of quality, and
-- write report.json / report.md / report.html (the loss curves are drawn).
--
--   mopt run scripts/qad.lua model=../shared/models/lit-llama-7m \
--       train=../shared/data/lit-train.txt val=../shared/data/lit-val.txt \
--       [bits=4] [group=128] [init=rtn|awq|gptq] [calib_samples=128] [tokens=200000] [lr=5e-5] \
--       [max_ppl_increase=0.05] [checkpoint=qad.state] [resume=qad.state] \
--       [export=DIR] [out=reports]
local model = assert(args.model, "model=PATH is required")
local train = assert(args.train, "train=FILE (training text) is required")
local val = assert(args.val, "val=FILE (validation text, never the training text) is required")
local out = args.out or "reports"
local bits = math.tointeger(tonumber(args.bits or "4"))
local group = math.tointeger(tonumber(args.group or "128"))
local init = args.init or "rtn"
assert(init == "rtn" or init == "awq" or init == "gptq", "init= is rtn, awq or gptq")
assert(bits and group, "bits= and group= are integers")

local passes = {}
if init ~= "rtn" then -- QAT starts from this PTQ pass's packed weights (the same format)
  passes[#passes + 1] = {"quant." .. init, {bits = bits, group_size = group, calib = train,
    calib_samples = math.tointeger(tonumber(args.calib_samples or "128"))}}
end
passes[#passes + 1] = {"quant.qat", {
  bits = bits, group_size = group, teacher = model, alpha = 0,
  data = train, eval = val,
  tokens = math.tointeger(tonumber(args.tokens or "200000")),
  lr = tonumber(args.lr or "5e-5"),
  ctx = math.tointeger(tonumber(args.ctx or "256")),
  batch = math.tointeger(tonumber(args.batch or "4")),
  checkpoint = args.checkpoint, resume = args.resume,
}}
passes[#passes + 1] = {"eval.compare", {baseline = model, data = val}}
passes[#passes + 1] = {"eval.gate", {max_ppl_increase = tonumber(args.max_ppl_increase or "0.05")}}
if args.export then passes[#passes + 1] = {"export.hf", {out = args.export}} end

local m <close> = mopt.load(model)
local report <close> = mopt.pipeline(passes):run(m)
report:write(out, string.format("QAD of %s: int%d g%d from %s", model, bits, group, init))
local r = report.metrics
print(string.format("QAD int%d g%d (init %s): ppl %.4f vs %.4f (ratio %.4f), %.3f bits/weight, %d tokens in %.0f s -> gates %s",
  bits, group, init, r.ppl, r.ppl_baseline, r.ppl_ratio, r.bits_per_weight, math.tointeger(r.tokens_trained) or 0,
  r.seconds or 0, report.gates_ok and "passed" or "FAILED"))
print("reports in " .. out)
