-- Quantization sweep: methods x bits x group sizes on one model, one table of
-- perplexity, bits/weight and time, written as Markdown and JSON.
--
--   mopt run scripts/quant_sweep.lua model=../shared/models/lit-llama-7m \
--       calib=../shared/data/lit-train.txt eval=../shared/data/lit-val.txt \
--       [methods=rtn,gptq,awq,smoothquant,fp8,nvfp4,mxfp4,mxfp8,kv] [bits=4,3] [groups=128,64] [out=sweep]
--       [calib_samples=128] [w4a8=1]
--
-- nvfp4, mxfp4 and mxfp8 run weight-only and with activations; w4a8=1 adds each
-- integer variant again with FP8 activations per token. kv quantizes only the KV
-- cache (quant.kv: FP8 and int8, scales per layer and per KV head), weights kept.
-- Each variant starts from a freshly loaded model (weights are mapped, so this
-- is cheap). smoothquant and fp8 have fixed formats and run once each when listed.
local function list(s, default)
  local t = {}
  for item in string.gmatch(s or default, "[^,]+") do t[#t + 1] = item end
  return t
end

local model_path = assert(args.model, "model=PATH is required")
local eval = assert(args.eval, "eval=FILE is required")
local calib = args.calib
local methods = list(args.methods, "rtn,gptq,awq")
local bits = list(args.bits, "4,3")
local groups = list(args.groups, "128")
local out = args.out or "sweep"
local samples = math.tointeger(tonumber(args.calib_samples or "128"))

local function run(label, steps)
  local m <close> = mopt.load(model_path)
  steps[#steps + 1] = {"eval.perplexity", {data = eval}}
  local t0 = os.clock()
  local report <close> = mopt.pipeline(steps):run(m)
  local r = report.metrics
  local quant_seconds = #steps > 1 and report.passes[1].seconds or 0
  return {variant = label, ppl = r.ppl, bits_per_weight = r.bits_per_weight or 16, kv_bytes = r.kv_bytes_per_token,
          weight_bytes = r.weight_bytes, seconds = quant_seconds}
end

local rows = {run("baseline", {})}
for _, method in ipairs(methods) do
  if method == "smoothquant" then
    rows[#rows + 1] = run("smoothquant w8a8", {{"quant.smoothquant", {calib = calib, calib_samples = samples}}})
  elseif method == "kv" then
    for _, f in ipairs({"fp8", "int8"}) do
      for _, g in ipairs({"tensor", "head"}) do
        rows[#rows + 1] = run(string.format("%s KV cache, scales per %s", f, g == "tensor" and "layer" or "KV head"),
          {{"quant.kv", {format = f, granularity = g, calib = calib, calib_samples = samples}}})
      end
    end
  elseif method == "fp8" then
    rows[#rows + 1] = run("fp8 e4m3", {{"quant.fp8", {}}})
  elseif method == "nvfp4" or method == "mxfp4" or method == "mxfp8" then
    -- weight-only, then weights and activations (NVFP4 also with its calibrated global activation scale)
    rows[#rows + 1] = run(method .. " weights", {{"quant." .. method, {activations = "none"}}})
    rows[#rows + 1] = run(method .. " weights+activations", {{"quant." .. method, {activations = "dynamic"}}})
    if method == "nvfp4" then
      rows[#rows + 1] = run(method .. " weights+activations static", {{"quant.nvfp4",
        {activations = "static", calib = calib, calib_samples = samples}}})
    end
  else
    for _, b in ipairs(bits) do
      for _, g in ipairs(groups) do
        local opts = {bits = math.tointeger(tonumber(b)), group_size = math.tointeger(tonumber(g))}
        if method ~= "rtn" then opts.calib = calib; opts.calib_samples = samples end
        rows[#rows + 1] = run(string.format("%s int%s g%s", method, b, g), {{"quant." .. method, opts}})
        if args.w4a8 == "1" then -- the same with FP8 activations per token
          opts.activations = "fp8"
          rows[#rows + 1] = run(string.format("%s int%s g%s, fp8 activations", method, b, g), {{"quant." .. method, opts}})
        end
      end
    end
  end
end

local base = rows[1].ppl
local md = {"| variant | ppl | vs baseline | bits/weight | KV bytes/token | quantize s |", "|---|---|---|---|---|---|"}
local js = {}
for _, r in ipairs(rows) do
  md[#md + 1] = string.format("| %s | %.4f | %+.3f%% | %.3f | %s | %.1f |", r.variant, r.ppl, 100 * (r.ppl / base - 1),
    r.bits_per_weight, r.kv_bytes and string.format("%d", math.tointeger(r.kv_bytes)) or "float", r.seconds)
  js[#js + 1] = string.format('{"variant": "%s", "ppl": %.6f, "ppl_ratio": %.6f, "bits_per_weight": %.4f, "seconds": %.2f}',
    r.variant, r.ppl, r.ppl / base, r.bits_per_weight, r.seconds)
end
local f = assert(io.open(out .. ".md", "w"))
f:write(table.concat(md, "\n"), "\n")
f:close()
f = assert(io.open(out .. ".json", "w"))
f:write("[\n  ", table.concat(js, ",\n  "), "\n]\n")
f:close()
print(table.concat(md, "\n"))
print("wrote " .. out .. ".md and " .. out .. ".json")
