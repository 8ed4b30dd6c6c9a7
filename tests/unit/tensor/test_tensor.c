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

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_transposing_columns_gives_linear_rows),
        cmocka_unit_test(test_packed_levels_read_back_and_dequantize),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
