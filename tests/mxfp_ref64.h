/* Float64 fake quantization of the block-scaled float formats, written from
 * their definitions (ModelOpt's NVFP4: E2M1 values, an E4M3 scale per 16
 * values of max|v| / (6 G) with G = max|W| / (6 * 448); the OCP Microscaling
 * spec's MXFP4 / MXFP8: a power-of-two scale 2^(floor(log2 max|v|) - emax)
 * per 32 values) and not from mopt's code: every rounding is a search for the
 * nearest representable value, ties to the even code. */
#ifndef MOPT_TEST_MXFP_REF64_H
#define MOPT_TEST_MXFP_REF64_H

#include <math.h>
#include <stdint.h>

static const double ref64_e2m1_mag[8] = {0, 0.5, 1, 1.5, 2, 3, 4, 6};

/* the magnitude of E4M3 code c (0..0x7e): bias 7, subnormals 2^-9 apart */
static double ref64_e4m3_mag(int c) {
    const int e = c >> 3, m = c & 7;
    return e ? ldexp(1.0 + m / 8.0, e - 7) : ldexp((double)m, -9);
}

/* the code (sign in bit 3 or 7) of the representable value nearest v, ties to the even code, beyond the largest
 * magnitude the largest */
static int ref64_nearest(double v, int fp8) {
    const double a = fabs(v);
    const int n = fp8 ? 0x7f : 8;
    int best = 0;
    for (int c = 1; c < n; c++) {
        const double d = fabs(a - (fp8 ? ref64_e4m3_mag(c) : ref64_e2m1_mag[c])),
                     db = fabs(a - (fp8 ? ref64_e4m3_mag(best) : ref64_e2m1_mag[best]));
        if (d < db || (d == db && c % 2 == 0)) best = c;
    }
    return best | (v < 0 ? (fp8 ? 0x80 : 8) : 0);
}

static double ref64_value(int code, int fp8) {
    const double m = fp8 ? ref64_e4m3_mag(code & 0x7f) : ref64_e2m1_mag[code & 7];
    return (code & (fp8 ? 0x80 : 8)) ? -m : m;
}

/* kind: 1 NVFP4, 2 MXFP4, 3 MXFP8 (mopt_mxfp_kind's numbers). One block v[n]
 * with NVFP4's global scale G = gnum / gden: writes its codes and values,
 * returns its scale byte. NVFP4 scales are clamped to [2^-9, 448] and a block
 * of zeros gets 1.0 (ModelOpt's)
 * and MX scale 2^-127. Each quotient is formed from exact products and
 * divided once (max|v| gden / (6 gnum), v gden / (scale gnum)), so the exact
 * ties that bf16 weights often hit stay ties. */
static int ref64_mx_block(int kind, const float *v, int n, double gnum, double gden, int *codes, double *vals) {
    const int fp8 = kind == 3;
    double amax = 0, scale;
    int sbyte;
    for (int i = 0; i < n; i++) amax = fmax(amax, fabs((double)v[i]));
    if (kind == 1) {
        sbyte = amax > 0 ? ref64_nearest(fmax(amax * gden / (6.0 * gnum), ldexp(1.0, -9)), 1) : 0x38; /* clamped to [2^-9, 448] */
        for (int i = 0; i < n; i++) {
            const double den = ref64_e4m3_mag(sbyte) * gnum;
            codes[i] = ref64_nearest(den > 0 ? (double)v[i] * gden / den : 0.0, 0);
            vals[i] = ref64_value(codes[i], 0) * ref64_e4m3_mag(sbyte) * gnum / gden;
        }
        return sbyte;
    }
    int X = amax > 0 ? (int)floor(log2(amax)) - (fp8 ? 8 : 2) : -127;
    if (X < -127) X = -127;
    sbyte = X + 127;
    scale = ldexp(1.0, X);
    for (int i = 0; i < n; i++) {
        codes[i] = ref64_nearest((double)v[i] / scale, fp8);
        vals[i] = ref64_value(codes[i], fp8) * scale;
    }
    return sbyte;
}

/* Fake-quantizes W [out, in] (in a multiple of the block) into Wq; returns G
 * (amax / (6 * 448) for NVFP4, amax the larger of max|W| and group_amax, the
 * largest |w| of the linears fused with W; 1 for the MX formats). */
static double ref64_mx_matrix_shared(int kind, const float *W, int64_t out, int64_t in, double group_amax, double *Wq) {
    const int B = kind == 1 ? 16 : 32;
    double amax = group_amax;
    for (int64_t i = 0; i < out * in; i++) amax = fmax(amax, fabs((double)W[i]));
    const double gnum = kind == 1 && amax > 0 ? amax : 1.0, gden = kind == 1 && amax > 0 ? 6.0 * 448.0 : 1.0;
    int codes[32];
    for (int64_t b = 0; b < out * in; b += B) ref64_mx_block(kind, W + b, B, gnum, gden, codes, Wq + b);
    return gnum / gden;
}
static inline double ref64_mx_matrix(int kind, const float *W, int64_t out, int64_t in, double *Wq) {
    return ref64_mx_matrix_shared(kind, W, out, in, 0, Wq);
}

#endif
