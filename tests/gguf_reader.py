#!/usr/bin/env python3
"""An independent GGUF reader written from ggml's docs/gguf.md and the block
layouts of ggml-common.h / dequantize_row_* in ggml-quants.c, not from mopt's
code. Python standard library only.

usage: gguf_reader.py QUANT.gguf REF_F32.gguf MAX_REL_RMS
Checks QUANT.gguf's structure (magic, version 3, key/values, tensor infos, the
32-byte alignment of the data section and of every tensor, sizes within the
file), decodes every tensor, and compares it with the same tensor of
REF_F32.gguf (an f32 file): a tensor stored as f32/f16 there must agree to 1e-6
relative to its largest value when REF is mopt's decoding of QUANT (MAX_REL_RMS
= 0), or else have an RMS error at most MAX_REL_RMS times the tensor's RMS."""
import math
import struct
import sys

# type id: (name, values per block, bytes per block)
TYPES = {0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20), 6: ("Q5_0", 32, 22),
         7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34), 10: ("Q2_K", 256, 84), 11: ("Q3_K", 256, 110),
         12: ("Q4_K", 256, 144), 13: ("Q5_K", 256, 176),
         14: ("Q6_K", 256, 210), 20: ("IQ4_NL", 32, 18), 30: ("BF16", 1, 2)}
# IQ4_NL's 16 levels, from ggml-quants.c (kvalues_iq4nl)
IQ4NL = (-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113)
SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}


class Reader:
    def __init__(self, data):
        self.d, self.p = data, 0

    def take(self, n):
        if self.p + n > len(self.d):
            raise ValueError(f"truncated at byte {self.p} (need {n})")
        b = self.d[self.p:self.p + n]
        self.p += n
        return b

    def scalar(self, t):
        fmt = SCALAR[t]
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self):
        (n,) = struct.unpack("<Q", self.take(8))
        return self.take(n).decode("utf-8")

    def value(self, t):
        if t == 8:
            return self.string()
        if t == 9:
            (et,) = struct.unpack("<I", self.take(4))
            (n,) = struct.unpack("<Q", self.take(8))
            return [self.value(et) for _ in range(n)]
        return self.scalar(t)


def parse(path):
    data = open(path, "rb").read()
    r = Reader(data)
    assert r.take(4) == b"GGUF", "bad magic"
    version, n_t, n_kv = struct.unpack("<IQQ", r.take(20))
    assert version == 3, f"version {version}"
    kv = {}
    for _ in range(n_kv):
        key = r.string()
        (t,) = struct.unpack("<I", r.take(4))
        kv[key] = r.value(t)
    align = kv.get("general.alignment", 32)
    assert align == 32, f"alignment {align}"
    infos = []
    for _ in range(n_t):
        name = r.string()
        (nd,) = struct.unpack("<I", r.take(4))
        dims = list(struct.unpack(f"<{nd}Q", r.take(8 * nd)))
        t, off = struct.unpack("<IQ", r.take(12))
        assert off % align == 0, f"{name}: offset {off} not aligned"
        infos.append((name, dims, t, off))
    base = (r.p + align - 1) // align * align
    assert all(b == 0 for b in data[r.p:base]), "padding before the data is not zero"
    tensors = {}
    for name, dims, t, off in infos:
        tname, bs, bb = TYPES[t]
        n = math.prod(dims)
        assert dims[0] % bs == 0, f"{name}: row {dims[0]} not whole {tname} blocks"
        size = n // bs * bb
        assert base + off + size <= len(data), f"{name}: data past the end"
        tensors[name] = (dims, t, data[base + off:base + off + size])
    for key in ("general.architecture",):
        assert key in kv, f"missing {key}"
    return kv, tensors


def f16(b, i):
    return struct.unpack_from("<e", b, i)[0]


def decode(t, raw, n):
    name, bs, bb = TYPES[t]
    if name == "F32":
        return list(struct.unpack(f"<{n}f", raw))
    if name == "F16":
        return list(struct.unpack(f"<{n}e", raw))
    if name == "BF16":
        return [struct.unpack("<f", b"\0\0" + raw[2 * i:2 * i + 2])[0] for i in range(n)]
    out = []
    for k in range(n // bs):
        b = raw[k * bb:(k + 1) * bb]
        if name == "Q8_0":
            d = f16(b, 0)
            out += [d * q for q in struct.unpack("<32b", b[2:34])]
        elif name == "IQ4_NL":  # f16 d, then byte j: index of value j (low nibble) and of value j + 16 (high)
            d = f16(b, 0)
            out += [d * IQ4NL[q & 15] for q in b[2:18]] + [d * IQ4NL[q >> 4] for q in b[2:18]]
        elif name in ("Q4_0", "Q4_1"):
            d = f16(b, 0)
            m = f16(b, 2) if name == "Q4_1" else None
            qs = b[4:20] if m is not None else b[2:18]
            lo = [x & 15 for x in qs]
            hi = [x >> 4 for x in qs]
            qv = lo + hi  # byte j holds values j and j + 16
            out += [d * q + m for q in qv] if m is not None else [d * (q - 8) for q in qv]
        elif name in ("Q5_0", "Q5_1"):
            d = f16(b, 0)
            m = f16(b, 2) if name == "Q5_1" else None
            (qh,) = struct.unpack_from("<I", b, 4 if m is not None else 2)
            qs = b[8:24] if m is not None else b[6:22]
            qv = [(qs[j] & 15) | (((qh >> j) & 1) << 4) for j in range(16)] + \
                 [(qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4) for j in range(16)]
            out += [d * q + m for q in qv] if m is not None else [d * (q - 16) for q in qv]
        elif name == "Q6_K":  # ql[128], qh[64], int8 scales[16], f16 d
            ql, qh, sc = b[0:128], b[128:192], struct.unpack("<16b", b[192:208])
            d = f16(b, 208)
            vals = [0.0] * 256
            for half in range(2):
                for l in range(32):
                    a, c, h = ql[64 * half + l], ql[64 * half + l + 32], qh[32 * half + l]
                    qv = [(a & 15) | ((h & 3) << 4), (c & 15) | (((h >> 2) & 3) << 4),
                          (a >> 4) | (((h >> 4) & 3) << 4), (c >> 4) | (((h >> 6) & 3) << 4)]
                    for k in range(4):  # values l, l+32, l+64, l+96 of this half, sub-block (l // 16) + 2k
                        vals[128 * half + 32 * k + l] = d * sc[8 * half + l // 16 + 2 * k] * (qv[k] - 32)
            out += vals
        elif name in ("Q2_K", "Q3_K"):  # 16 sub-blocks of 16; 2-bit levels: bits 2k of byte l = value 32k + l per 128
            qs = b[16:80] if name == "Q2_K" else b[32:96]
            if name == "Q2_K":
                d, dmin = f16(b, 80), f16(b, 82)
                scales, mins = [x & 15 for x in b[0:16]], [x >> 4 for x in b[0:16]]
            else:  # 6-bit scales - 32: low nibbles from bytes 0-7 (j >= 8: the high nibble), top bits from bytes 8-11
                d, dmin, s = f16(b, 108), 0.0, b[96:108]
                scales = [(((s[j % 8] >> (4 * (j // 8))) & 15) | (((s[8 + j % 4] >> (2 * (j // 4))) & 3) << 4)) - 32
                          for j in range(16)]
                mins = [0] * 16
            for v in range(256):
                half, k, l = v // 128, (v % 128) // 32, v % 32
                q = (qs[32 * half + l] >> (2 * k)) & 3
                if name == "Q3_K" and not (b[l] >> (v // 32)) & 1:  # hmask: the high bit, clear means q - 4
                    q -= 4
                out.append(d * scales[v // 16] * q - dmin * mins[v // 16])
        elif name in ("Q4_K", "Q5_K"):
            d, dmin = f16(b, 0), f16(b, 2)
            sc = b[4:16]
            qh, qs = (b[16:48], b[48:176]) if name == "Q5_K" else (None, b[16:144])

            def scale_min(j):
                if j < 4:
                    return sc[j] & 63, sc[j + 4] & 63
                return (sc[j + 4] & 15) | ((sc[j - 4] >> 6) << 4), (sc[j + 4] >> 4) | ((sc[j] >> 6) << 4)

            for c in range(4):  # 64 values per 32 bytes: low nibbles, then high nibbles
                s1, m1 = scale_min(2 * c)
                s2, m2 = scale_min(2 * c + 1)
                chunk = qs[32 * c:32 * c + 32]
                hi1 = [((h >> (2 * c)) & 1) << 4 for h in qh] if qh else [0] * 32  # Q5_K: fifth bits
                hi2 = [((h >> (2 * c + 1)) & 1) << 4 for h in qh] if qh else [0] * 32
                out += [d * s1 * ((q & 15) + e) - dmin * m1 for q, e in zip(chunk, hi1)]
                out += [d * s2 * ((q >> 4) + e) - dmin * m2 for q, e in zip(chunk, hi2)]
    return out


def main():
    qpath, rpath, tol = sys.argv[1], sys.argv[2], float(sys.argv[3])
    qkv, qt = parse(qpath)
    rkv, rt = parse(rpath)
    arch = qkv["general.architecture"]
    for key in (f"{arch}.context_length", f"{arch}.embedding_length", f"{arch}.block_count",
                f"{arch}.feed_forward_length", f"{arch}.attention.head_count"):
        assert key in qkv, f"missing {key}"
        assert qkv[key] == rkv[key], f"{key}: {qkv[key]} vs {rkv[key]}"
    assert set(qt) == set(rt), "different tensor sets"
    worst, types = 0.0, {}
    for name, (dims, t, raw) in qt.items():
        n = math.prod(dims)
        got = decode(t, raw, n)
        rdims, rtype, rraw = rt[name]
        assert rdims == dims, f"{name}: dims {dims} vs {rdims}"
        ref = decode(rtype, rraw, n)
        types[TYPES[t][0]] = types.get(TYPES[t][0], 0) + 1
        if tol == 0:
            amax = max(abs(x) for x in ref) or 1.0
            err = max(abs(a - b) for a, b in zip(got, ref)) / amax
            if not err <= 1e-6:
                print(f"{name}: decoded values differ from the reference by {err:.3g} of the largest value")
                return 1
        else:
            rms = math.sqrt(sum(x * x for x in ref) / n) or 1.0
            err = math.sqrt(sum((a - b) ** 2 for a, b in zip(got, ref)) / n) / rms
            if not err <= tol:
                print(f"{name} ({TYPES[t][0]}): relative RMS error {err:.4g} above {tol}")
                return 1
        worst = max(worst, err)
    print(f"{qpath}: {len(qt)} tensors {types}, {len(qkv)} keys, worst error {worst:.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
