#!/usr/bin/env python3
"""An independent reader of TensorRT-LLM checkpoints written from TRT-LLM's
checkpoint.md and ModelOpt's pack_int4_in_uint8, not from mopt's code (Python
standard library only; reuses the safetensors reader of hf_quant_reader.py).

usage: trtllm_reader.py TRT_DIR DENSE_DIR
Stitches the ranks together (qkv by heads, fc/gate by rows, dense/proj by
columns), dequantizes W4A16_AWQ / W4A8_AWQ / W8A16 / W8A8 / FP8 / NVFP4 weights and compares every
decoder linear with the same weight of DENSE_DIR (an F32 Hugging Face export of
the same LLaMA model): exit 0 when all agree to 1e-6 of the largest value."""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from hf_quant_reader import fp8_second_stage, nvfp4_pairs, read_dir, read_file  # noqa: E402  (safetensors, E2M1, FP8)


def main():
    tdir, ddir = Path(sys.argv[1]), sys.argv[2]
    cfg = json.loads((tdir / "config.json").read_text())
    tp = cfg["mapping"]["tp_size"]
    algo = cfg["quantization"]["quant_algo"]
    ranks = [read_file(tdir / f"rank{r}.safetensors") for r in range(tp)]
    dense = read_dir(ddir)
    hd, nh, nkv = cfg["head_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]

    def weight(r, base):
        (shape, w) = ranks[r][base + ".weight"]
        if algo is None:
            return [w[i * shape[1]:(i + 1) * shape[1]] for i in range(shape[0])]
        sshape, s = ranks[r][base + ".weights_scaling_factor"]
        if algo == "NVFP4":  # E2M1 pairs x E4M3 per 16 x weights_scaling_factor_2
            g = ranks[r][base + ".weights_scaling_factor_2"][1][0]
            return nvfp4_pairs((shape, w), (sshape, s), g)
        if algo in ("W4A16_AWQ", "W4A8_AWQ"):
            rows, cols = shape[0] * 2, shape[1]
            ng = sshape[1]
            gs = cols // ng
            out = []
            for o in range(rows):
                row = []
                for i in range(cols):
                    nib = ((w[(o // 2) * cols + i] & 0xFF) >> (4 * (o % 2))) & 15  # even rows in the low nibble
                    q = nib - 16 if nib >= 8 else nib
                    row.append(q * s[o * ng + i // gs])
                out.append(row)
            if algo == "W4A8_AWQ":  # TRT-LLM widens the int4 values to FP8 with weights_scaling_factor_2
                assert ranks[r][base + ".activation_scaling_factor"][1][0] > 0, base + ": needs an activation_scaling_factor"
                return fp8_second_stage(out, ranks[r][base + ".weights_scaling_factor_2"][1][0])
            return out
        rows, cols = shape
        return [[w[o * cols + i] * s[o if len(s) > 1 else 0] for i in range(cols)] for o in range(rows)]

    worst = 0.0
    for layer in range(cfg["num_hidden_layers"]):
        p = f"transformer.layers.{layer}."
        parts = [weight(r, p + "attention.qkv") for r in range(tp)]
        q, k, v = [], [], []
        qr, kr = nh * hd // tp, nkv * hd // tp
        for w in parts:  # each rank holds its q heads, then its k and v heads
            q += w[:qr]
            k += w[qr:qr + kr]
            v += w[qr + kr:]
        full = {"self_attn.q_proj": q, "self_attn.k_proj": k, "self_attn.v_proj": v}
        for trt, hf in (("mlp.fc", "mlp.gate_proj"), ("mlp.gate", "mlp.up_proj")):
            full[hf] = sum((weight(r, p + trt) for r in range(tp)), [])
        for trt, hf in (("attention.dense", "self_attn.o_proj"), ("mlp.proj", "mlp.down_proj")):
            pieces = [weight(r, p + trt) for r in range(tp)]
            full[hf] = [sum((pc[o] for pc in pieces), []) for o in range(len(pieces[0]))]
        for hf, w in full.items():
            (shape, ref) = dense[f"model.layers.{layer}.{hf}.weight"]
            assert [len(w), len(w[0])] == shape, f"{hf}: shape {[len(w), len(w[0])]} vs {shape}"
            amax = max(abs(x) for x in ref) or 1.0
            err = max(abs(w[o][i] - ref[o * shape[1] + i]) for o in range(shape[0]) for i in range(shape[1])) / amax
            worst = max(worst, err)
            if not err <= 1e-6:
                print(f"layer {layer} {hf}: differs by {err:.3g} of the largest value")
                return 1
    print(f"{algo or 'dense'} tp={tp}: {cfg['num_hidden_layers']} layers decoded, worst relative difference {worst:.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
