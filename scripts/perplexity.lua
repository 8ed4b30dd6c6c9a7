-- Perplexity of a model as a pipeline (the same pass `mopt eval` runs).
--   mopt run scripts/perplexity.lua model=../shared/models/lit-llama-7m data=../shared/data/lit-val.txt [ctx=256]
local model_path = assert(args.model, "model=PATH is required")
local data = assert(args.data, "data=FILE is required")
local ctx = math.tointeger(tonumber(args.ctx or "256"))

local m <close> = mopt.load(model_path)
local pipeline = mopt.pipeline{
  {"eval.perplexity", {data = data, ctx = ctx}},
}
local report <close> = pipeline:run(m)
local r = report.metrics
print(string.format("ppl %.4f  (nll %.6f over %d tokens, %d windows of %d)",
  r.ppl, r.nll, math.tointeger(r.tokens_scored), math.tointeger(r.windows), ctx))
if args.json then
  local f = assert(io.open(args.json, "w"))
  f:write(report:json(), "\n")
  f:close()
end
