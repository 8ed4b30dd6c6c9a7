/* The tensor layer on its own: transposing a Conv1D weight, and packed QINT
 * levels that read back as stored and dequantize as w = (q - z) s. */
#include <math.h>

#include "testutil.h"
#include "tensor_impl.h"
#include "mopt/quant.h"

static void test_transposing_columns_gives_linear_rows(void **state) {
    (void)state;
    int64_t dims[2] = {3, 4}; /* [in 3, out 4] as GPT-2 stores a Conv1D weight */
    mopt_tensor *t = mopt_tensor_new("c", MOPT_DTYPE_F32, 2, dims, NULL);
    for (int i = 0; i < 12; i++) ((float *)t->data)[i] = (float)i;
    mopt_tensor *o = mopt_tensor_transpose2d(t, "part", 1, 2, NULL); /* outputs 1 and 2 */
    assert_non_null(o);
    assert_int_equal(o->ne[1], 2);
    assert_int_equal(o->ne[0], 3);
    const float want[6] = {1, 5, 9, 2, 6, 10}; /* out[i][j] = t[j][1 + i] */
    assert_memory_equal(o->data, want, sizeof want);
    mopt_error err = {0};
    assert_null(mopt_tensor_transpose2d(t, "x", 3, 2, &err)); /* past the last column */
    assert_int_equal(err.code, MOPT_E_UNSUPPORTED);
    mopt_tensor_free(o);
    mopt_tensor_free(t);
}

static void test_packed_levels_read_back_and_dequantize(void **state) {
    (void)state;
    enum { OUT = 2, IN = 64, GS = 32 };
    uint8_t q[OUT * IN], z[OUT * 2];
    float s[OUT * 2];
    for (int i = 0; i < OUT * IN; i++) q[i] = (uint8_t)((i * 7) % 16);
    for (int i = 0; i < OUT * 2; i++) z[i] = (uint8_t)(3 + i), s[i] = 0.25f * (float)(i + 1);
    mopt_tensor *t = mopt_qint_pack("w", OUT, IN, 4, GS, q, s, z, NULL, NULL);
    assert_non_null(t);
    assert_int_equal(mopt_qint_n_groups(IN, GS), 2);
    float row[IN];
    for (int r = 0; r < OUT; r++) {
        assert_int_equal(mopt_weight_row_f32(t, r, row, NULL), MOPT_OK);
        for (int c = 0; c < IN; c++) {
            assert_int_equal(mopt_qint_get(t, r, c), q[r * IN + c]);
            const int g = r * 2 + c / GS;
            assert_float_equal(row[c], ((float)q[r * IN + c] - z[g]) * s[g], 0.0f); /* f16 scales hold these exactly */
        }
    }
    mopt_tensor_free(t);
}

/* 2:4 storage: the documented bytes (values in order, then a nibble i0 | i1 << 2
 * per group, even groups low; rows padded to 4 bytes), exact rows back, the size, and refusals. */
static void test_sp24_packs_the_documented_layout_and_reads_back(void **state) {
    (void)state;
    enum { OUT = 3, IN = 16 };
    float W[OUT * IN] = {0};
    /* row 0: two non-zeros per group; row 1: one or none (zeros fill the lowest free positions); row 2: all zero */
    const float r0[IN] = {0, 1.5f, 0, -2, 3, 0, 0, 4, 0, 0, 5, 6, 7, 0, 8, 0};
    const float r1[IN] = {0, 0, 9, 0, 0, 0, 0, 0, -1, 0, 0, 0, 0, 0, 0, 2};
    memcpy(W, r0, sizeof r0);
    memcpy(W + IN, r1, sizeof r1);
    mopt_error err = {0};
    mopt_tensor *t = mopt_sp24_pack("w", OUT, IN, MOPT_DTYPE_BF16, W, &err);
    assert_non_null(t);
    assert_int_equal(t->dtype, MOPT_DTYPE_SP24);
    assert_int_equal(mopt_weight_storage_bytes(t), OUT * 20); /* 16 value bytes + 2 position bytes, padded to 4 */
    const uint8_t *row0 = t->data, *row1 = (const uint8_t *)t->data + t->nb[1];
    /* row 0 positions: groups (1,3) (0,3) (2,3) (0,2) */
    assert_int_equal(row0[16], (1 | 3 << 2) | (0 | 3 << 2) << 4);
    assert_int_equal(row0[17], (2 | 3 << 2) | (0 | 2 << 2) << 4);
    /* row 1: {2} -> (0,2); {} -> (0,1); {0} -> (0,1); {3} -> (0,3) */
    assert_int_equal(row1[16], (0 | 2 << 2) | (0 | 1 << 2) << 4);
    assert_int_equal(row1[17], (0 | 1 << 2) | (0 | 3 << 2) << 4);
    uint16_t v;
    memcpy(&v, row0 + 2, 2); /* the second kept value of row 0 is -2 */
    assert_true(mopt_bf16_to_f32(v) == -2.0f);
    float back[IN];
    for (int r = 0; r < OUT; r++) {
        assert_int_equal(mopt_weight_row_f32(t, r, back, &err), MOPT_OK);
        assert_memory_equal(back, W + r * IN, sizeof back);
    }
    mopt_tensor_free(t);
    W[0] = 1; /* row 0, group 0 now holds three non-zeros */
    assert_null(mopt_sp24_pack("w", OUT, IN, MOPT_DTYPE_F16, W, &err));
    assert_non_null(strstr(err.msg, "row 0, inputs 0..3 hold more than two non-zeros"));
    assert_null(mopt_sp24_pack("w", 1, 12, MOPT_DTYPE_F16, W, &err));
    assert_non_null(strstr(err.msg, "multiple of 8"));
}

/* 2:4 with int8 values: one byte per kept value, then the same positions, a
 * scale per row; rows read back as level x scale; bad scales are refused. */
static void test_sp24_int8_values_pack_and_read_back(void **state) {
    (void)state;
    enum { OUT = 2, IN = 16 };
    const int8_t q[OUT * IN] = {0, 5, 0, -7, 127, 0, 0, -128, 0, 0, 1, 2, 3, 0, 4, 0, /* row 1: one or none per group */
                                0, 0, 9, 0, 0, 0, 0, 0, -1, 0, 0, 0, 0, 0, 0, 2};
    const float sc[OUT] = {0.5f, 0.25f};
    mopt_error err = {0};
    mopt_tensor *t = mopt_sp24_pack_i8("w", OUT, IN, q, sc, &err);
    assert_non_null(t);
    assert_true(t->quant->flags & MOPT_QUANT_VALUES_I8);
    assert_int_equal(t->nb[1], 12); /* 8 value bytes + 2 position bytes, padded to 4 */
    assert_int_equal(mopt_weight_storage_bytes(t), OUT * 12 + OUT * 4);
    const int8_t *v0 = t->data;
    const int8_t want[8] = {5, -7, 127, -128, 1, 2, 3, 4};
    assert_memory_equal(v0, want, 8);
    assert_int_equal(((const uint8_t *)t->data)[8], (1 | 3 << 2) | (0 | 3 << 2) << 4);
    float back[IN];
    for (int r = 0; r < OUT; r++) {
        assert_int_equal(mopt_weight_row_f32(t, r, back, &err), MOPT_OK);
        for (int i = 0; i < IN; i++) assert_true(back[i] == (float)q[r * IN + i] * sc[r]);
    }
    mopt_tensor_free(t);
    const float bad[OUT] = {0.5f, 0.0f};
    assert_null(mopt_sp24_pack_i8("w", OUT, IN, q, bad, &err));
    assert_non_null(strstr(err.msg, "row 1 has scale 0"));
}

/* 2:4 with int4 values: the kept levels in QINT 4-bit blocks of 32 (byte j =
 * u[j] | u[j+16] << 4, u = level + 8), then the positions; an f16 scale per
 * group of inputs; rows read back as level x their group's scale; bad
 * widths, groups, levels and scales are refused. */
static void test_sp24_int4_values_pack_and_read_back(void **state) {
    (void)state;
    enum { OUT = 2, IN = 128, GS = 64, NG = IN / GS };
    uint8_t u[OUT * IN];
    for (int r = 0; r < OUT; r++)
        for (int c = 0; c < IN; c++) /* kept: the inputs 0 and 2 of each group of four (row 1: 1 and 3) */
            u[r * IN + c] = c % 4 == 2 * 0 + r || c % 4 == 2 + r ? (uint8_t)((c / 4 * 5 + r) % 16) : 8;
    const float sc[OUT * NG] = {0.5f, 0.25f, 2.0f, 0.125f};
    mopt_error err = {0};
    mopt_tensor *t = mopt_sp24_pack_i4("w", OUT, IN, GS, u, sc, &err);
    assert_non_null(t);
    assert_true(t->quant->flags & MOPT_QUANT_VALUES_I4);
    assert_int_equal(t->quant->bits, 4);
    assert_int_equal(t->quant->group_size, GS);
    assert_int_equal(t->nb[1], IN / 4 + IN / 8); /* 32 value bytes + 16 position bytes */
    assert_int_equal(mopt_weight_storage_bytes(t), OUT * (IN / 4 + IN / 8) + OUT * NG * 2);
    const uint8_t *row0 = t->data;
    /* kept value k of row 0 is input 2k's level (groups keep inputs 0 and 2): block 0 byte j holds k = j and j + 16 */
    for (int j = 0; j < 16; j++) assert_int_equal(row0[j], u[2 * j] | u[2 * (j + 16)] << 4);
    assert_int_equal(row0[IN / 4], (0 | 2 << 2) | (0 | 2 << 2) << 4);
    float back[IN];
    for (int r = 0; r < OUT; r++) {
        assert_int_equal(mopt_weight_row_f32(t, r, back, &err), MOPT_OK);
        for (int c = 0; c < IN; c++) assert_true(back[c] == ((float)u[r * IN + c] - 8) * sc[r * NG + c / GS]);
    }
    mopt_tensor_free(t);
    assert_null(mopt_sp24_pack_i4("w", OUT, 96, -1, u, sc, &err));
    assert_non_null(strstr(err.msg, "multiple of 64"));
    assert_null(mopt_sp24_pack_i4("w", OUT, IN, 32, u, sc, &err));
    assert_non_null(strstr(err.msg, "groups must be a multiple of 64 inputs"));
    const float bad[OUT * NG] = {0.5f, 0.25f, -1.0f, 0.125f};
    assert_null(mopt_sp24_pack_i4("w", OUT, IN, GS, u, bad, &err));
    assert_non_null(strstr(err.msg, "row 1 has scale -1"));
    u[5] = 16;
    assert_null(mopt_sp24_pack_i4("w", OUT, IN, GS, u, sc, &err));
    assert_non_null(strstr(err.msg, "level 16 at [0, 5]"));
    u[5] = 3; /* input 5 is not kept in row 0: group 1 now holds three non-zeros */
    assert_null(mopt_sp24_pack_i4("w", OUT, IN, GS, u, sc, &err));
    assert_non_null(strstr(err.msg, "row 0, inputs 4..7 hold more than two non-zeros"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sp24_int8_values_pack_and_read_back),
        cmocka_unit_test(test_sp24_int4_values_pack_and_read_back),
        cmocka_unit_test(test_transposing_columns_gives_linear_rows),
        cmocka_unit_test(test_packed_levels_read_back_and_dequantize),
        cmocka_unit_test(test_sp24_packs_the_documented_layout_and_reads_back),
    };
    return test_run_tests(tests, NULL, NULL);
}
