-- Export sweep: one model written in every format mopt exports, each loaded back
-- from disk and scored, next to the in-process model it came from. One table
-- (Markdown and JSON) of bytes on disk, export seconds and perplexity.
--
--   mkdir -p /tmp/xs && mopt run scripts/export_sweep.lua model=../shared/models/lit-llama-7m \
--       eval=../shared/data/lit-val.txt out=/tmp/xs [limit_tokens=0]
local model_path = assert(args.model, "model=PATH is required")
local eval = assert(args.eval, "eval=FILE is required")
local out = assert(args.out, "out=DIR (an existing directory) is required")
local limit = math.tointeger(tonumber(args.limit_tokens or "0"))
local ppl_opts = {data = eval, limit_tokens = limit}

-- {label, quantization pass or nil, export pass, its options}
local cases = {
  {"bf16 -> HF dense", nil, "export.hf", {format = "dense"}},
  {"bf16 -> GGUF f16", nil, "export.gguf", {type = "f16"}},
  {"bf16 -> GGUF q8_0", nil, "export.gguf", {type = "q8_0"}},
  {"bf16 -> GGUF q6_k", nil, "export.gguf", {type = "q6_k"}},
  {"bf16 -> GGUF q5_k", nil, "export.gguf", {type = "q5_k"}},
  {"bf16 -> GGUF q5_1", nil, "export.gguf", {type = "q5_1"}},
  {"bf16 -> GGUF q5_0", nil, "export.gguf", {type = "q5_0"}},
  {"bf16 -> GGUF q4_1", nil, "export.gguf", {type = "q4_1"}},
  {"bf16 -> GGUF q4_0", nil, "export.gguf", {type = "q4_0"}},
  {"bf16 -> GGUF q4_k", nil, "export.gguf", {type = "q4_k"}},
  {"rtn int4 g128 -> AWQ", {"quant.rtn", {bits = 4, group_size = 128}}, "export.hf", {format = "awq"}},
  {"rtn int4 g128 -> GPTQ", {"quant.rtn", {bits = 4, group_size = 128}}, "export.hf", {format = "gptq"}},
  {"rtn int4 g128 -> compressed-tensors", {"quant.rtn", {bits = 4, group_size = 128}}, "export.hf", {format = "compressed-tensors"}},
  {"rtn int4 g128 sym -> ModelOpt W4A16_AWQ", {"quant.rtn", {bits = 4, group_size = 128, sym = true}}, "export.hf", {format = "modelopt"}},
  {"rtn int4 g128 sym -> TRT-LLM W4A16_AWQ tp2", {"quant.rtn", {bits = 4, group_size = 128, sym = true}}, "export.trtllm", {tp = 2}},
  {"rtn int4 g32 sym -> GGUF q4_0 (exact)", {"quant.rtn", {bits = 4, group_size = 32, sym = true}}, "export.gguf", {type = "auto"}},
  {"fp8 -> compressed-tensors", {"quant.fp8", {}}, "export.hf", {format = "compressed-tensors"}},
  {"fp8 -> TRT-LLM FP8 per channel tp2", {"quant.fp8", {}}, "export.trtllm", {tp = 2}},
}

local rows = {}
for i, c in ipairs(cases) do
  local label, quant, pass, opts = c[1], c[2], c[3], c[4]
  local target = string.format("%s/x%02d%s", out, i, pass == "export.gguf" and ".gguf" or "")
  opts.out, opts.force = target, true
  local steps = {}
  if quant then steps[#steps + 1] = quant end
  steps[#steps + 1] = {pass, opts}
  steps[#steps + 1] = {"eval.perplexity", ppl_opts} -- the in-process model
  local m <close> = mopt.load(model_path)
  local report <close> = mopt.pipeline(steps):run(m)
  local xs = report.passes[#steps - 1]
  local e <close> = mopt.load(target)
  local from_disk <close> = mopt.pipeline({{"eval.perplexity", ppl_opts}}):run(e)
  rows[#rows + 1] = {label = label, bytes = xs.metrics.bytes, seconds = xs.seconds,
                     ppl_mem = report.metrics.ppl, ppl_disk = from_disk.metrics.ppl}
  print(string.format("%-44s %8.2f MB  %6.2f s  ppl %.4f (in process %.4f)", label, rows[#rows].bytes / 1e6,
    rows[#rows].seconds, rows[#rows].ppl_disk, rows[#rows].ppl_mem))
end

local md = {"| export | MB on disk | export s | ppl from disk | in-process ppl | rel. difference |",
            "|---|---|---|---|---|---|"}
local js = {}
for _, r in ipairs(rows) do
  md[#md + 1] = string.format("| %s | %.2f | %.2f | %.4f | %.4f | %.1e |", r.label, r.bytes / 1e6, r.seconds, r.ppl_disk,
    r.ppl_mem, math.abs(r.ppl_disk / r.ppl_mem - 1))
  js[#js + 1] = string.format('{"export": "%s", "bytes": %d, "seconds": %.3f, "ppl_disk": %.6f, "ppl_in_process": %.6f}',
    r.label, math.tointeger(r.bytes) or 0, r.seconds, r.ppl_disk, r.ppl_mem)
end
local f = assert(io.open(out .. "/export_sweep.md", "w"))
f:write(table.concat(md, "\n"), "\n")
f:close()
f = assert(io.open(out .. "/export_sweep.json", "w"))
f:write("[\n  ", table.concat(js, ",\n  "), "\n]\n")
f:close()
print(table.concat(md, "\n"))
