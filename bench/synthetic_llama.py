#!/usr/bin/env python3
"""A random-weight LLaMA checkpoint (bf16 safetensors + config.json) for speed
measurements at sizes where weights no longer fit in cache: the kernels' speed
does not depend on what the weights mean. Every block reuses one block's random
bytes (a 97M-parameter model is written in seconds). Standard library only.

usage: synthetic_llama.py OUT_DIR (a new directory, written atomically) [--dim 1024] [--ffn 2816] [--layers 8] [--heads 16] [--kv-heads 8] [--vocab 2048]
The tokenizer is copied from TOKENIZER_DIR when given (--tokenizer DIR)."""
import argparse
import json
import random
import shutil
import struct
import sys
from pathlib import Path


def bf16_bytes(n, scale, rng):
    # gaussian weights, truncated to bf16 (the top half of the fp32 bit pattern)
    out = bytearray(2 * n)
    for i in range(n):
        out[2 * i:2 * i + 2] = struct.pack("<f", rng.gauss(0.0, scale))[2:4]
    return bytes(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--ffn", type=int, default=2816)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--kv-heads", type=int, default=8)
    ap.add_argument("--vocab", type=int, default=2048)
    ap.add_argument("--tokenizer")
    a = ap.parse_args()
    hd = a.dim // a.heads
    rng = random.Random(1)
    block = {
        "input_layernorm.weight": ([a.dim], None),
        "post_attention_layernorm.weight": ([a.dim], None),
        "self_attn.q_proj.weight": ([a.heads * hd, a.dim], a.dim),
        "self_attn.k_proj.weight": ([a.kv_heads * hd, a.dim], a.dim),
        "self_attn.v_proj.weight": ([a.kv_heads * hd, a.dim], a.dim),
        "self_attn.o_proj.weight": ([a.dim, a.heads * hd], a.heads * hd),
        "mlp.gate_proj.weight": ([a.ffn, a.dim], a.dim),
        "mlp.up_proj.weight": ([a.ffn, a.dim], a.dim),
        "mlp.down_proj.weight": ([a.dim, a.ffn], a.ffn),
    }
    data = {}
    for name, (shape, fan_in) in block.items():
        n = 1
        for d in shape:
            n *= d
        data[name] = struct.pack("<H", 0x3F80) * n if fan_in is None else bf16_bytes(n, fan_in ** -0.5, rng)
    tensors = [("model.embed_tokens.weight", [a.vocab, a.dim], bf16_bytes(a.vocab * a.dim, 0.02, rng)),
               ("model.norm.weight", [a.dim], struct.pack("<H", 0x3F80) * a.dim),
               ("lm_head.weight", [a.vocab, a.dim], bf16_bytes(a.vocab * a.dim, a.dim ** -0.5, rng))]
    for l in range(a.layers):
        for name, (shape, _) in block.items():
            tensors.append((f"model.layers.{l}.{name}", shape, data[name]))
    header, off = {}, 0
    for name, shape, raw in tensors:
        header[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [off, off + len(raw)]}
        off += len(raw)
    hj = json.dumps(header).encode()
    hj += b" " * (-len(hj) % 8)
    out = Path(a.out)
    if out.exists() or out.is_symlink():  # never overwrite what this script did not create
        sys.exit(f"synthetic_llama.py: {out} already exists; give a new directory")
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists() or tmp.is_symlink():
        sys.exit(f"synthetic_llama.py: {tmp} already exists (left by an interrupted run?); remove it or choose another OUT_DIR")
    tmp.mkdir(parents=True)
    with open(tmp / "model.safetensors", "wb") as f:
        f.write(struct.pack("<Q", len(hj)) + hj)
        for _, _, raw in tensors:
            f.write(raw)
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": a.dim, "intermediate_size": a.ffn,
           "num_hidden_layers": a.layers, "num_attention_heads": a.heads, "num_key_value_heads": a.kv_heads, "head_dim": hd,
           "max_position_embeddings": 2048, "vocab_size": a.vocab, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
           "tie_word_embeddings": False, "hidden_act": "silu", "torch_dtype": "bfloat16", "bos_token_id": 0, "eos_token_id": 0}
    (tmp / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    if a.tokenizer:
        shutil.copy(Path(a.tokenizer) / "tokenizer.json", tmp / "tokenizer.json")
    tmp.rename(out)  # the directory appears whole or not at all
    print(f"{out}: {off / 2 / 1e6:.1f}M parameters, {off / 1e6:.0f} MB bf16")


if __name__ == "__main__":
    main()
