#!/usr/bin/env python3
"""Writes the libFuzzer seed corpus (tests/fuzz/corpus/<harness>/) from two
tiny models made here with random weights, and mopt's own exporters for every
other format. The seeds are kept small (a few KB to ~50 KB each); none is a
copy of a ../shared fixture.

    python3 tests/fuzz/make_corpus.py build/bin/mopt tests/fuzz/corpus

Python standard library only. Deterministic (fixed seed)."""
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile

rnd = random.Random(1234)

# --- a tiny llama2.c model and tokenizer ----------------------------------------------
# dim 32, FFN 64, 1 layer, 4 heads, 2 KV heads (head size 8), vocab 64, context 16:
# every linear is a whole number of 32-value groups, so every format can hold it.
DIM, FFN, LAYERS, HEADS, KV, VOCAB, SEQ = 32, 64, 1, 4, 2, 64, 16


def floats(n, scale=0.1):
    return [rnd.uniform(-scale, scale) for _ in range(n)]


def llama2c_model(ffn=FFN):
    hs = DIM // HEADS
    kvd = KV * hs
    w = []
    w += floats(VOCAB * DIM)                  # token embedding
    w += [1.0] * (LAYERS * DIM)               # rms_att
    w += floats(LAYERS * DIM * DIM)           # wq
    w += floats(LAYERS * kvd * DIM)           # wk
    w += floats(LAYERS * kvd * DIM)           # wv
    w += floats(LAYERS * DIM * DIM)           # wo
    w += [1.0] * (LAYERS * DIM)               # rms_ffn
    w += floats(LAYERS * ffn * DIM)           # w1
    w += floats(LAYERS * DIM * ffn)           # w2
    w += floats(LAYERS * ffn * DIM)           # w3
    w += [1.0] * DIM                          # rms_final
    w += [0.0] * (SEQ * hs)                   # freq_cis real + imag (unused)
    return struct.pack("<7i", DIM, ffn, LAYERS, HEADS, KV, VOCAB, SEQ) + struct.pack("<%df" % len(w), *w)


def llama2c_tokenizer():
    toks = ["<unk>", "<s>", "</s>"] + [chr(c) for c in range(ord("a"), ord("z") + 1)] + [" ", ".", ",", "\n"]
    toks += [" a", " t", "he", " the", "in", "er", "an", "on", "re", " s", "at", "en", "Once", " upon", " time",
             "ti", "me", " u", "up", "pon", "On", "ce"]
    toks = toks[:VOCAB]
    while len(toks) < VOCAB:
        toks.append("x%d" % len(toks))
    out = struct.pack("<i", max(len(t.encode()) for t in toks))
    for i, t in enumerate(toks):
        b = t.encode()
        out += struct.pack("<fi", -float(i), len(b)) + b
    return out


# --- a tiny GPT-2 (HF safetensors) and a byte-level BPE tokenizer.json ---------------

def byte_alphabet():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def gpt2_tokenizer():
    alpha = byte_alphabet()
    vocab = {"<|endoftext|>": 0}
    for ch in alpha:
        vocab[ch] = len(vocab)
    merges = [("Ġ", "t"), ("h", "e"), ("Ġ", "a"), ("Ġt", "he"), ("i", "n"), ("e", "r")]
    for a, b in merges:
        vocab[a + b] = len(vocab)
    return {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": 0, "content": "<|endoftext|>", "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False, "special": True}],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": [[a, b] for a, b in merges]},
    }


def spm_tokenizer():
    """Llama-2 / Mistral style: Prepend + Replace normalizer, byte fallback, <s> template."""
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab["<0x%02X>" % b] = len(vocab)
    for t in ["▁", "t", "h", "e", "a", "▁t", "he", "▁the", "o", "n", "▁a"]:
        vocab.setdefault(t, len(vocab))
    merges = [["▁", "t"], ["h", "e"], ["▁t", "he"], ["▁", "a"]]
    special = lambda i, c: {"id": i, "content": c, "single_word": False, "lstrip": False, "rstrip": False,
                            "normalized": False, "special": True}
    return {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [special(0, "<unk>"), special(1, "<s>"), special(2, "</s>")],
        "normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "▁"},
                                                           {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
        "pre_tokenizer": None,
        "post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                                                                   {"Sequence": {"id": "A", "type_id": 0}}],
                           "pair": [], "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
        "decoder": {"type": "Sequence", "decoders": [{"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
                                                     {"type": "ByteFallback"}, {"type": "Fuse"},
                                                     {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
                  "vocab": vocab, "merges": merges},
    }


def llama3_tokenizer():
    """Llama-3 / Qwen2 style: a Split regex then ByteLevel without regex, ignore_merges, BOS template."""
    t = gpt2_tokenizer()
    t["added_tokens"][0]["content"] = "<|begin_of_text|>"
    t["model"]["vocab"] = {("<|begin_of_text|>" if k == "<|endoftext|>" else k): v for k, v in t["model"]["vocab"].items()}
    t["model"]["ignore_merges"] = True
    t["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
         "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}
    t["post_processor"] = {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
                                                                   {"Sequence": {"id": "A", "type_id": 0}}],
                           "pair": [], "special_tokens": {"<|begin_of_text|>": {"id": "<|begin_of_text|>", "ids": [0], "tokens": ["<|begin_of_text|>"]}}}
    return t


def safetensors(tensors):
    """tensors: list of (name, dtype, shape, list of floats) in F32."""
    header, data = {}, b""
    for name, shape, vals in sorted(tensors, key=lambda t: t[0]):
        b = struct.pack("<%df" % len(vals), *vals)
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [len(data), len(data) + len(b)]}
        data += b
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    return struct.pack("<Q", len(h)) + h + data


def gpt2_checkpoint(d):
    D, L, V, P = 32, 1, len(gpt2_tokenizer()["model"]["vocab"]), 16
    t = [("transformer.wte.weight", [V, D], floats(V * D)), ("transformer.wpe.weight", [P, D], floats(P * D)),
         ("transformer.ln_f.weight", [D], [1.0] * D), ("transformer.ln_f.bias", [D], [0.0] * D)]
    for l in range(L):
        p = "transformer.h.%d." % l
        t += [(p + "ln_1.weight", [D], [1.0] * D), (p + "ln_1.bias", [D], [0.0] * D),
              (p + "ln_2.weight", [D], [1.0] * D), (p + "ln_2.bias", [D], [0.0] * D),
              (p + "attn.c_attn.weight", [D, 3 * D], floats(3 * D * D)), (p + "attn.c_attn.bias", [3 * D], floats(3 * D)),
              (p + "attn.c_proj.weight", [D, D], floats(D * D)), (p + "attn.c_proj.bias", [D], floats(D)),
              (p + "mlp.c_fc.weight", [D, 4 * D], floats(4 * D * D)), (p + "mlp.c_fc.bias", [4 * D], floats(4 * D)),
              (p + "mlp.c_proj.weight", [4 * D, D], floats(4 * D * D)), (p + "mlp.c_proj.bias", [D], floats(D))]
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "model.safetensors"), "wb") as f:
        f.write(safetensors(t))
    cfg = {"model_type": "gpt2", "n_embd": D, "n_layer": L, "n_head": 4, "n_positions": P, "vocab_size": V,
           "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5, "bos_token_id": 0, "eos_token_id": 0}
    json.dump(cfg, open(os.path.join(d, "config.json"), "w"))
    json.dump(gpt2_tokenizer(), open(os.path.join(d, "tokenizer.json"), "w"), ensure_ascii=False)


# --- the archive format of fuzz_checkpoint_dir ---------------------------------------

def archive(d):
    out = b""
    for name in sorted(os.listdir(d)):
        if name.startswith(".") or name == "MOPT_EXPORT_INCOMPLETE":
            continue
        b = open(os.path.join(d, name), "rb").read()
        out += bytes([len(name)]) + name.encode() + struct.pack("<I", len(b)) + b
    return out


def imatrix_seeds():
    """llama.cpp's importance matrices for two weights of the tiny llama: the legacy imatrix.dat (sums over ncall
    calls) and the GGUF imatrix (in_sum2 and counts per weight, sorted by name)"""
    names, ncall, chunk = ["blk.0.attn_q.weight", "blk.0.ffn_down.weight"], 2, 16
    vals = {"blk.0.attn_q.weight": [rnd.uniform(0, 2) for _ in range(DIM)], "blk.0.ffn_down.weight": [rnd.uniform(0, 2) for _ in range(FFN)]}
    dat = struct.pack("<i", len(names))
    for n in names:
        dat += struct.pack("<i", len(n)) + n.encode() + struct.pack("<ii", ncall, len(vals[n]))
        dat += struct.pack("<%df" % len(vals[n]), *[v * ncall for v in vals[n]])
    dat += struct.pack("<ii", ncall, 5) + b"calib"

    def gstr(s):
        return struct.pack("<Q", len(s)) + s.encode()
    kv = gstr("general.type") + struct.pack("<I", 8) + gstr("imatrix")
    kv += gstr("imatrix.datasets") + struct.pack("<IIQ", 9, 8, 1) + gstr("calib")
    kv += gstr("imatrix.chunk_count") + struct.pack("<II", 4, ncall)
    kv += gstr("imatrix.chunk_size") + struct.pack("<II", 4, chunk)
    info, data = b"", b""
    for n in names:
        for suffix, values in ((".in_sum2", [v * ncall * chunk for v in vals[n]]), (".counts", [float(ncall * chunk)])):
            info += gstr(n + suffix) + struct.pack("<IQIQ", 1, len(values), 0, len(data))
            data += struct.pack("<%df" % len(values), *values)
            data += b"\0" * (-len(data) % 32)
    head = b"GGUF" + struct.pack("<IQQ", 3, 2 * len(names), 4) + kv + info
    return dat, head + b"\0" * (-len(head) % 32) + data


# mopt serve's request bodies: byte 0 picks the endpoint (0: completions, 1: chat), the rest is the body.
# Some are libFuzzer finds kept for the paths they reached (a raw newline in a string, stops out of order).
SERVE_SEEDS = {
    'chat': b'\x01{"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"caf\\u00e9 \\u20ac"}],"stop":"User:","max_completion_tokens":9}',
    'completion': b'\x00{"prompt":"ROMEO:\\nBut soft","max_tokens":16,"temperature":0,"stop":["\\n\\n","soft"],"stream":true,"seed":3}',
    'completion_logprobs': b'\x00{"prompt":"a","max_tokens":2,"logprobs":5,"stop":["x"]}',
    'content_parts': b'\x01{"messages":[{"role":"system","content":[{"type":"text","text":"Be brief."}]},{"role":"user","content":[{"type":"text","text":"Hi"},{"type":"text","text":"there"},{"type":"image_url","image_url":{"url":"x"}}]}],"max_tokens":4}',
    'logprobs_penalties': b'\x01{"messages":[{"role":"user","content":"Hi"}],"max_tokens":4,"logprobs":true,"top_logprobs":3,"presence_penalty":0.5,"frequency_penalty":-0.5,"stream":true,"stream_options":{"include_usage":true}}',
    'prompt_list': b'\x00{"prompt":["one"],"n":1,"top_p":0.5,"user":"u1","model":"m","stop":null}',
    'raw_newline_escape': b'\x00{"prompt":"ROMEt\\nuB:O soft","max_tokens":16,"teMperature":0,"stop":["\\\n\nnA","soft"],"stream":true,"seed":1}',
    'stops_out_of_order': b'\x01{"messages":[{"role":"system","content":"nullrief. \\u20ac"}],"stompt":"[R$$$ft","_e":0,"stop":["\\n","e","t"],"sp":"User:","max_":9}',
}


def calib_text():
    """Calibration text for the calibrated formats' seeds: words the 64-token vocabulary spells."""
    words = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "far", "away", "home", "in", "sun"]
    return " ".join(rnd.choice(words) for _ in range(3000))


def main():
    mopt, out = sys.argv[1], sys.argv[2]
    shutil.rmtree(out, ignore_errors=True)
    tmp = tempfile.mkdtemp()
    def put(harness, name, data):
        os.makedirs(os.path.join(out, harness), exist_ok=True)
        with open(os.path.join(out, harness, name), "wb") as f:
            f.write(data)
    def run(*args):
        subprocess.run([mopt] + list(args) + ["--quiet"], check=True, stdout=subprocess.DEVNULL)

    l2c = os.path.join(tmp, "tiny.bin")
    open(l2c, "wb").write(llama2c_model())
    open(os.path.join(tmp, "tok64.bin"), "wb").write(llama2c_tokenizer())
    gpt2 = os.path.join(tmp, "gpt2")
    gpt2_checkpoint(gpt2)

    put("llama2c", "tiny.bin", open(l2c, "rb").read())
    dat, gimat = imatrix_seeds()
    put("imatrix", "tiny.imatrix.dat", dat)
    put("imatrix", "tiny-imatrix.gguf", gimat)
    put("llama2c_tokenizer", "tok64", bytes([16]) + llama2c_tokenizer())  # first byte: vocab = 1 + 4 * 16
    for name, tok in (("bytelevel", gpt2_tokenizer()), ("spm", spm_tokenizer()), ("llama3", llama3_tokenizer())):
        put("tokenizer_json", name + ".json", json.dumps(tok, ensure_ascii=False).encode())
    # q2_k: the seed's rows of 32 fall back to IQ4_NL blocks, as llama-quantize's do
    for t in ("f32", "f16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q2_k"):
        g = os.path.join(tmp, "%s.gguf" % t)
        run("export", l2c, "-o", g, "--format", "gguf", "--type", t)
        put("gguf", "llama-%s.gguf" % t, open(g, "rb").read())
    g = os.path.join(tmp, "gpt2.gguf")
    run("export", gpt2, "-o", g, "--format", "gguf", "--type", "f16")
    put("gguf", "gpt2-f16.gguf", open(g, "rb").read())
    put("safetensors", "gpt2.safetensors", open(os.path.join(gpt2, "model.safetensors"), "rb").read())

    cal = os.path.join(tmp, "calib.txt")
    open(cal, "w").write(calib_text())
    calib = ["--calib", cal, "--calib-samples", "4", "--calib-len", "16"]
    dirs = {"hf-gpt2": gpt2}
    for name, args in (("hf-llama", ["export", l2c, "--dtype", "f16"]),
                       ("awq", ["quantize", l2c, "--method", "rtn", "--bits", "4", "--group", "32", "--format", "awq"]),
                       ("gptq", ["quantize", l2c, "--method", "rtn", "--bits", "4", "--group", "32", "--sym", "--format", "gptq"]),
                       ("ct-pack", ["quantize", l2c, "--method", "rtn", "--bits", "4", "--group", "32", "--format", "compressed-tensors"]),
                       ("ct-fp8", ["quantize", l2c, "--method", "fp8", "--format", "compressed-tensors"]),
                       ("mo-int4", ["quantize", l2c, "--method", "rtn", "--bits", "4", "--group", "32", "--sym", "--format", "modelopt"]),
                       ("trt", ["export", l2c, "--format", "trtllm", "--tp", "2"]),
                       ("trt-w4a16", ["quantize", l2c, "--method", "rtn", "--bits", "4", "--group", "32", "--sym", "--format", "trtllm"]),
                       ("trt-fp8", ["quantize", l2c, "--method", "fp8", "--format", "trtllm"]),
                       ("mo-fp8", ["quantize", l2c, "--method", "fp8", "--format", "modelopt"]),
                       ("mo-nvfp4", ["quantize", l2c, "--method", "nvfp4", "--act", "static", "--format", "modelopt"] + calib),
                       ("ct-nvfp4", ["quantize", l2c, "--method", "nvfp4", "--act", "none", "--format", "compressed-tensors"]),
                       ("ct-mxfp4", ["quantize", l2c, "--method", "mxfp4", "--format", "compressed-tensors"]),
                       ("mo-w4a8", ["quantize", l2c, "--method", "awq", "--bits", "4", "--group", "32", "--sym", "--act", "fp8_static",
                                    "--format", "modelopt", "--search-samples", "4"] + calib),
                       ("ct-w8a8", ["quantize", l2c, "--method", "smoothquant", "--format", "compressed-tensors"] + calib),
                       ("mo-kv-fp8", ["quantize", l2c, "--method", "fp8", "--kv-cache", "fp8", "--format", "modelopt"] + calib),
                       ("sp24", ["prune", l2c, "--method", "magnitude", "--pattern", "2:4", "--pack"]),
                       ("ct-sp24-w8a8", ["prune", l2c, "--method", "magnitude", "--pattern", "2:4", "--pack", "--values", "int8",
                                         "--format", "compressed-tensors"])):
        d = os.path.join(tmp, name)
        run(*(args + ["-o", d]))
        dirs[name] = d
    # k-quant blocks hold 256 inputs: a second model, FFN 256, has its down projection in them (the rest falls back)
    kq = os.path.join(tmp, "ffn256.bin")
    open(kq, "wb").write(llama2c_model(ffn=256))
    for t in ("q2_k", "q3_k", "q4_k", "q5_k", "q6_k"):
        g = os.path.join(tmp, "ffn256-%s.gguf" % t)
        run("export", kq, "-o", g, "--format", "gguf", "--type", t)
        put("gguf", "llama-ffn256-%s.gguf" % t, open(g, "rb").read())
    for name, d in dirs.items():
        put("checkpoint_dir", name, archive(d))
        st = os.path.join(d, "model.safetensors")
        if os.path.exists(st) and name != "hf-gpt2":
            put("safetensors", name + ".safetensors", open(st, "rb").read())
    for i, text in enumerate(["eval.perplexity<data=val.txt;ctx=256;stride=128>",
                              "quant.rtn<bits=4;group_size=128;exclude=*mlp*,*o_proj*>,export.gguf<out=m.gguf;type=q4_k>",
                              "quant.gptq<bits=3;act_order=true;calib=c.txt>,eval.gate<metrics=ppl:max:40>",
                              "specdec.generate<k=auto;temp=0.7;top_p=0.9;n=16;prompt=a b>"]):
        put("pipeline_text", "p%d.txt" % i, text.encode())
    for name, body in SERVE_SEEDS.items():
        put("serve_request", name, body)
    fixture = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "chat_templates.json")
    for name, src in json.load(open(fixture))["templates"].items():
        put("chat_template", name + ".jinja", src.encode())
    shutil.rmtree(tmp)
    total = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(out) for f in fs)
    print("seed corpus: %d files, %d KB in %s" % (sum(len(fs) for _, _, fs in os.walk(out)), total // 1024, out))


if __name__ == "__main__":
    main()
