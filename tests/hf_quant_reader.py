#!/usr/bin/env python3
"""An independent reader of quantized Hugging Face checkpoints, written from the
published layouts (AutoAWQ WQLinear_GEMM, AutoGPTQ qlinear pack (v1 zeros),
compressed-tensors pack_to_int32 / int- and float-quantized / sparse-24-bitmask
(numpy.packbits little-endian bitmasks) / marlin-24 (Marlin24Compressor with
sparse_semi_structured_from_dense_cutlass and get_permutations_24), ModelOpt's
pack_int4_in_uint8 for W4A16_AWQ, W4A8_AWQ (the same int4 values, then
ModelOpt's second, per-tensor FP8 quantizer: E4M3(q * weight_scale /
weight_scale_2) * weight_scale_2), its NVFP4 tensors (E2M1 pairs, even
value in the low nibble; e2m1 * weight_scale * weight_scale_2), and
compressed-tensors' nvfp4-pack-quantized (the same, / weight_global_scale) and mxfp4-pack-quantized
(E8M0 scale bytes per 32)), not from mopt's
code. Python standard library only.

usage: hf_quant_reader.py QUANT_DIR DENSE_DIR
Decodes every quantized linear of QUANT_DIR to float and compares it with the
same weight in DENSE_DIR (an F32 export of the same model). Exit 0 when every
element agrees to 1e-6 relative to the tensor's largest value."""
import json
import math
import struct
import sys
from pathlib import Path

SIZES = {"F32": 4, "F16": 2, "BF16": 2, "I32": 4, "I16": 2, "I64": 8, "I8": 1, "U8": 1, "F8_E4M3": 1}


def e4m3(b):
    s = -1.0 if b & 0x80 else 1.0
    e, m = (b >> 3) & 15, b & 7
    if e == 15 and m == 7:
        return math.nan
    if e == 0:
        return s * m / 8.0 * 2.0 ** -6
    return s * (1 + m / 8.0) * 2.0 ** (e - 7)


def round_e4m3(x):
    """x onto the E4M3 grid (OCP FP8: 3 mantissa bits, subnormals 2^-9 apart below 2^-6, largest 448), ties to even."""
    if x != x:
        return x
    a = abs(x)
    step = 2.0 ** -9 if a < 2.0 ** -6 else 2.0 ** (math.frexp(a)[1] - 1 - 3)
    return math.copysign(min(round(a / step) * step, 448.0), x)  # round(): half to even; past 448 saturates


def decode(dtype, raw):
    n = len(raw) // SIZES[dtype]
    if dtype == "F32":
        return list(struct.unpack(f"<{n}f", raw))
    if dtype == "F16":
        return list(struct.unpack(f"<{n}e", raw))
    if dtype == "BF16":
        return [struct.unpack("<f", b"\0\0" + raw[2 * i:2 * i + 2])[0] for i in range(n)]
    if dtype == "I32":
        return list(struct.unpack(f"<{n}I", raw))  # packed words: unsigned
    if dtype == "I16":
        return list(struct.unpack(f"<{n}H", raw))  # metadata bits: unsigned
    if dtype == "I64":
        return list(struct.unpack(f"<{n}q", raw))
    if dtype == "I8":
        return list(struct.unpack(f"<{n}b", raw))
    if dtype == "F8_E4M3":
        return [e4m3(b) for b in raw]
    return list(raw)


def read_file(f):
    tensors = {}
    data = Path(f).read_bytes()
    (hlen,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + hlen])
    base = 8 + hlen
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        tensors[name] = (info["shape"], decode(info["dtype"], data[base + b:base + e]))
    return tensors


def read_dir(d):
    tensors = {}
    for f in sorted(Path(d).glob("*.safetensors")):
        tensors.update(read_file(f))
    return tensors


def awq(t, p, qc):
    (i_n, o8), qw = t[p + ".qweight"]
    _, qz = t[p + ".qzeros"]
    (ng, out), sc = t[p + ".scales"]
    gs = qc["group_size"] if qc["group_size"] > 0 else i_n
    order = [0, 2, 4, 6, 1, 3, 5, 7]  # output column 8c + order[k] sits at bits 4k of word c
    w = [[0.0] * i_n for _ in range(out)]
    for i in range(i_n):
        g = i // gs
        for c in range(o8):
            word, zw = qw[i * o8 + c], qz[g * o8 + c]
            for k in range(8):
                o = 8 * c + order[k]
                q, z = (word >> (4 * k)) & 15, (zw >> (4 * k)) & 15
                w[o][i] = (q - z) * sc[g * out + o]
    return w


def gptq(t, p, qc):
    b = qc["bits"]
    pf, mask = 32 // b, (1 << b) - 1
    (rows, out), qw = t[p + ".qweight"]
    _, qz = t[p + ".qzeros"]
    _, sc = t[p + ".scales"]
    _, g_idx = t[p + ".g_idx"]
    i_n = rows * pf
    w = [[0.0] * i_n for _ in range(out)]
    for i in range(i_n):
        g = g_idx[i]
        for o in range(out):
            q = (qw[(i // pf) * out + o] >> (b * (i % pf))) & mask
            z = ((qz[g * (out // pf) + o // pf] >> (b * (o % pf))) + 1) & mask  # v1 stores zero - 1
            w[o][i] = (q - z) * sc[g * out + o]
    return w


def ct_packed(t, p, qc):
    grp = next(iter(qc["config_groups"].values()))["weights"]
    b = grp["num_bits"]
    pf, mask, off = 32 // b, (1 << b) - 1, 1 << (b - 1)
    _, (out, i_n) = t[p + ".weight_shape"]
    _, wp = t[p + ".weight_packed"]
    (_, ng), sc = t[p + ".weight_scale"]
    zp = t.get(p + ".weight_zero_point")
    g_idx = t.get(p + ".weight_g_idx")
    gs = grp["group_size"] or i_n
    words = (i_n + pf - 1) // pf
    w = [[0.0] * i_n for _ in range(out)]
    for o in range(out):
        for i in range(i_n):
            g = g_idx[1][i] if g_idx else i // gs
            q = ((wp[o * words + i // pf] >> (b * (i % pf))) & mask) - off  # signed value
            z = (((zp[1][(o // pf) * ng + g] >> (b * (o % pf))) & mask) - off) if zp else 0
            w[o][i] = (q - z) * sc[o * ng + g]
    return w


def ct_8bit(t, p, qc):
    (out, i_n), q = t[p + ".weight"]
    _, sc = t[p + ".weight_scale"]
    return [[q[o * i_n + i] * sc[o if len(sc) > 1 else 0] for i in range(i_n)] for o in range(out)]


def modelopt_int4(t, p, qc):
    (o2, i_n), packed = t[p + ".weight"]
    (out, ng), sc = t[p + ".weight_scale"]
    gs = i_n // ng
    w = [[0.0] * i_n for _ in range(out)]
    for o in range(out):
        for i in range(i_n):
            nib = (packed[(o // 2) * i_n + i] >> (4 * (o % 2))) & 15  # even rows in the low nibble
            q = nib - 16 if nib >= 8 else nib  # signed int4
            w[o][i] = q * sc[o * ng + i // gs]
    if qc.get("quant_algo") == "W4A8_AWQ":  # the per-tensor FP8 quantizer after the int4 one
        g = t[p + ".weight_scale_2"][1][0]
        assert t[p + ".input_scale"][1][0] > 0, p + ": W4A8_AWQ needs a positive input_scale"
        w = fp8_second_stage(w, g)
    return w


def fp8_second_stage(w, g):
    """W4A8_AWQ: int4-dequantized weights w quantized again to FP8 with the per-tensor scale g (ModelOpt's
    SequentialQuantizer [int4 per block, FP8 per tensor]; TensorRT-LLM widens int4 to FP8 the same way)."""
    f32 = lambda v: struct.unpack("<f", struct.pack("<f", v))[0]  # the float32 product and quotient a kernel forms
    return [[f32(round_e4m3(f32(f32(x) / g)) * g) for x in row] for row in w]


def sparse24(t, p, qc):
    _, (out, i_n) = t[p + ".shape"]
    _, vals = t[p + ".compressed"]
    (_, nb), bits = t[p + ".bitmask"]
    scale = [1.0] * out
    if qc.get("config_groups"):  # quantized values (int8, W8A8): weight_scale [out, 1] or one per tensor
        _, sc = t[p + ".weight_scale"]
        scale = sc if len(sc) == out else sc * out
    w = [[0.0] * i_n for _ in range(out)]
    k = 0
    for o in range(out):
        for i in range(i_n):
            if bits[o * nb + i // 8] >> (i % 8) & 1:  # packbits(bitorder="little"): input 8c + j at bit j of byte c
                w[o][i] = vals[k] * scale[o]
                k += 1
    if k != len(vals):
        raise ValueError(f"{p}: {len(vals)} values but {k} set bits")
    return w


def marlin24_weight_perm():
    """get_permutations_24(4)[0]: position p of every 1024 packed values holds perm[p] of the tiled order."""
    perm = []
    for i in range(32):
        perm1 = []
        col, col_o = i // 4, i // 8
        for block in (0, 1):
            for row in (2 * (i % 4), 2 * (i % 4) + 1, 2 * (i % 4 + 4), 2 * (i % 4 + 4) + 1):
                perm1.append(16 * row + col_o * 256 + 8 * (col % 2) + 4 * block)
        for j in range(4):
            perm.extend(x + j for x in perm1)
    interleave = (0, 2, 4, 6, 1, 3, 5, 7)
    return [perm[c * 8 + interleave[k]] for c in range(len(perm) // 8) for k in range(8)]


def cutlass_meta_offsets(m, ncols):
    """_calculate_meta_reordering_scatter_offsets for int16 metadata: element (r, c) of [m, ncols] goes to the offset."""
    offs = {}
    for r0 in range(m):
        for c0 in range(ncols):
            r = r0 // 64 * 64 + (r0 % 2) * 2 + (r0 % 8) // 4 + ((r0 % 32) % 4) // 2 * 32 + ((r0 % 64) // 8) * 4
            c = c0
            topright = 1 if (r % 2 == 0 and c % 2 == 1) else 0
            bottomleft = 1 if (r % 2 == 1 and c % 2 == 0) else 0
            r, c = r + topright - bottomleft, c - (topright - bottomleft)
            offs[(r0, c0)] = (c // 2) * m * 2 + r * 2 + c % 2
    return offs


def marlin24(t, p, qc):
    grp = next(iter(qc["config_groups"].values()))["weights"]
    _, (n, k) = t[p + ".weight_shape"]
    (rows, cols), wp = t[p + ".weight_packed"]  # [k/32, 2n]: eight 4-bit values per word, value 8j + i at bits 4i
    _, meta = t[p + ".meta"]
    (ng, _), sc = t[p + ".scale_packed"]
    gs = grp["group_size"] or k
    vals = [(wp[r * cols + j] >> (4 * i)) & 15 for r in range(rows) for j in range(cols) for i in range(8)]
    perm = marlin24_weight_perm()
    tiled = [0] * len(vals)
    for c in range(len(vals) // 1024):  # undo q_w[:, perm]
        for q in range(1024):
            tiled[c * 1024 + perm[q]] = vals[c * 1024 + q]
    comp = [[0] * (k // 2) for _ in range(n)]  # [n, k/2] signed levels, as compressed
    width = 16 * n
    for a in range(k // 32):  # undo the 16 x 16 tiling of the transposed [k/2, n] values
        for b in range(16):
            for c in range(n // 16):
                for d in range(16):
                    comp[c * 16 + d][a * 16 + b] = tiled[a * width + c * 256 + b * 16 + d] - 8
    offs = cutlass_meta_offsets(n, k // 16)
    scales = list(sc)
    if ng > 1:  # scale_perm_2_4: position q of every 64 holds scale_perm[q]
        sperm = [i * 8 + j for i in range(8) for j in (0, 4, 1, 5, 2, 6, 3, 7)]
        for c in range(len(sc) // 64):
            for q in range(64):
                scales[c * 64 + sperm[q]] = sc[c * 64 + q]
    w = [[0.0] * k for _ in range(n)]
    for r in range(n):
        for g in range(k // 4):
            nib = (meta[offs[(r, g // 4)]] >> (4 * (g % 4))) & 15
            i0, i1 = nib & 3, nib >> 2
            if i0 >= i1:
                raise ValueError(f"{p}: metadata of row {r}, group {g} is not a 2:4 pair")
            s = scales[(4 * g // gs) * n + r]
            w[r][4 * g + i0] = comp[r][2 * g] * s
            w[r][4 * g + i1] = comp[r][2 * g + 1] * s
    return w


E2M1 = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]


def nvfp4_pairs(packed_t, scale_t, g, block=16):
    """E2M1 pairs (even values in the low nibble) times their block scale (E4M3 per 16 as decoded, or the
    scales given per `block`) times the global scale g"""
    (out, half), packed = packed_t
    (_, nb), sc = scale_t
    i_n = 2 * half
    w = [[0.0] * i_n for _ in range(out)]
    for o in range(out):
        for i in range(i_n):
            nib = (packed[o * half + i // 2] >> (4 * (i % 2))) & 15
            v = -E2M1[nib & 7] if nib & 8 else E2M1[nib & 7]
            w[o][i] = v * sc[o * nb + i // block] * g
    return w


def ct_mxfp4(t, p, qc):
    """compressed-tensors' mxfp4-pack-quantized: the same pairs, an E8M0 byte per 32 values (2^(e - 127)), no global scale"""
    shape, e8m0 = t[p + ".weight_scale"]
    return nvfp4_pairs(t[p + ".weight_packed"], (shape, [2.0 ** (e - 127) for e in e8m0]), 1.0, 32)


def modelopt_nvfp4(t, p, qc):
    return nvfp4_pairs(t[p + ".weight"], t[p + ".weight_scale"], t[p + ".weight_scale_2"][1][0])


def ct_nvfp4(t, p, qc):
    """compressed-tensors' nvfp4-pack-quantized: the same pairs, the global scale stored inverted"""
    return nvfp4_pairs(t[p + ".weight_packed"], t[p + ".weight_scale"], 1.0 / t[p + ".weight_global_scale"][1][0])


def main():
    qdir, ddir = sys.argv[1], sys.argv[2]
    qc = json.loads((Path(qdir) / "config.json").read_text())["quantization_config"]
    t, dense = read_dir(qdir), read_dir(ddir)
    method = qc["quant_method"]
    if method == "awq":
        marker, fn = ".qweight", awq
    elif method == "gptq":
        marker, fn = ".qweight", gptq
    elif method == "modelopt":
        algo = qc["quant_algo"]
        int4 = algo in ("W4A16_AWQ", "W4A8_AWQ")
        marker, fn = ".weight_scale", modelopt_int4 if int4 else modelopt_nvfp4 if algo == "NVFP4" else ct_8bit
    elif qc.get("format") == "nvfp4-pack-quantized":
        marker, fn = ".weight_packed", ct_nvfp4
    elif qc.get("format") == "mxfp4-pack-quantized":
        marker, fn = ".weight_packed", ct_mxfp4
    elif qc.get("format") == "marlin-24":
        marker, fn = ".weight_packed", marlin24
    elif (qc.get("sparsity_config") or {}).get("format") == "sparse-24-bitmask":
        marker, fn = ".compressed", sparse24
    elif qc["format"] == "pack-quantized":
        marker, fn = ".weight_packed", ct_packed
    else:
        marker, fn = ".weight_scale", ct_8bit
    prefixes = sorted(n[: -len(marker)] for n in t if n.endswith(marker))
    worst = 0.0
    for p in prefixes:
        w = fn(t, p, qc)
        (out, i_n), ref = dense[p + ".weight"]
        amax = max(abs(x) for x in ref) or 1.0
        err = max(abs(w[o][i] - ref[o * i_n + i]) for o in range(out) for i in range(i_n)) / amax
        worst = max(worst, err)
        if not err <= 1e-6:
            print(f"{p}: decoded weights differ from the dense export by {err:.3g} (relative)")
            return 1
    if not prefixes:
        print(f"{qdir}: no quantized linears found")
        return 1
    print(f"{method} {qc.get('format') or ''} {(qc.get('sparsity_config') or {}).get('format', '')}: {len(prefixes)} linears decoded, worst relative difference {worst:.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
