/* The base layer on its own: the byte/string buffer, JSON text as mopt writes
 * it, whole-file reads that refuse what is not a regular file, atomic writes,
 * memory for streamed arrays. */
#include <sys/stat.h>

#include "testutil.h"
#include "base.h"
#include "json_util.h"
#include "strbuf.h"

static void test_buffer_holds_text_and_bytes_with_nuls(void **state) {
    (void)state;
    sbuf b = {0};
    sb_printf(&b, "%s-%d", "ab", 7);
    const uint8_t raw[3] = {0, 255, 0};
    sb_put(&b, raw, 3);
    for (int i = 0; i < 5000; i++) sb_printf(&b, "x"); /* past the first allocation */
    assert_false(b.oom);
    assert_int_equal(b.n, 4 + 3 + 5000);
    assert_memory_equal(b.s, "ab-7", 4);
    assert_memory_equal(b.s + 4, raw, 3);
    assert_int_equal(b.s[b.n], 0); /* still a C string after the last append */
    free(b.s);
}

static void test_json_text_keeps_insertion_order_and_ends_as_asked(void **state) {
    (void)state;
    json_t *j = json_pack("{s:i, s:f, s:[s]}", "zeta", 1, "alpha", 0.1, "list", "x");
    char *a = mopt_json_dump_text(j, 1), *b = mopt_json_dump_text(j, 0);
    assert_non_null(a);
    assert_non_null(b);
    assert_true(strstr(a, "\"zeta\"") < strstr(a, "\"alpha\"")); /* not sorted */
    assert_non_null(strstr(a, "0.1")); /* 10 significant digits: 0.1, not 0.10000000000000001 */
    assert_null(strstr(a, "0.1000000"));
    assert_int_equal(a[strlen(a) - 1], '\n');
    assert_int_not_equal(b[strlen(b) - 1], '\n');
    assert_int_equal(strlen(a), strlen(b) + 1);
    free(a);
    free(b);
    json_decref(j);
}

static void test_reads_refuse_what_is_not_a_regular_file(void **state) {
    (void)state;
    char dir[1024], fifo[1100], path[1100];
    assert_non_null(test_tmpdir(dir, sizeof dir, "base"));
    snprintf(fifo, sizeof fifo, "%s/fifo", dir);
    assert_int_equal(mkfifo(fifo, 0600), 0);
    char *data;
    size_t len;
    mopt_error err = {0};
    assert_int_equal(mopt_read_file(fifo, &data, &len, &err), MOPT_E_IO); /* never blocks */
    CHECK_ERR(err, MOPT_E_IO, "not a regular file");
    assert_int_equal(mopt_read_file(dir, &data, &len, &err), MOPT_E_IO);
    snprintf(path, sizeof path, "%s/f.txt", dir);
    assert_int_equal(mopt_file_write_atomic(path, "hello", 5, NULL), MOPT_OK);
    assert_int_equal(mopt_read_file(path, &data, &len, NULL), MOPT_OK);
    assert_int_equal(len, 5);
    assert_string_equal(data, "hello"); /* NUL-terminated for text parsers */
    free(data);
    assert_int_equal(mopt_file_write_atomic(path, "bye", 3, NULL), MOPT_OK); /* replaced whole */
    assert_int_equal(mopt_read_file(path, &data, &len, NULL), MOPT_OK);
    assert_string_equal(data, "bye");
    free(data);
}

static void test_paths_outside_a_root_are_refused(void **state) {
    (void)state;
    char dir[1024], p[1200];
    assert_non_null(test_tmpdir(dir, sizeof dir, "within"));
    mopt_error err = {0};
    snprintf(p, sizeof p, "%s/a.json", dir);
    assert_int_equal(mopt_path_check_within(dir, p, NULL), MOPT_OK);
    snprintf(p, sizeof p, "%s/../escaped.json", dir);
    CHECK_ERR((mopt_path_check_within(dir, p, &err), err), MOPT_E_INVALID, "outside");
    snprintf(p, sizeof p, "%s/link", dir); /* a link inside that points out */
    assert_int_equal(symlink("/etc/hostname", p), 0);
    err = (mopt_error){0};
    CHECK_ERR((mopt_path_check_within(dir, p, &err), err), MOPT_E_INVALID, "symbolic link");
}

/* UTF-8 as RFC 3629 has it: every length of sequence, and each way one can be malformed */
static void test_utf8_text_accepts_well_formed_sequences_only(void **s) {
    static const struct {
        const char *text;
        size_t n;
        int ok;
    } cases[] = {
        {"", 0, 1},
        {"plain ascii", 11, 1},
        {"\xc2\x80 \xdf\xbf", 5, 1},           /* U+0080, U+07FF */
        {"\xe0\xa0\x80\xef\xbf\xbd", 6, 1},   /* U+0800, U+FFFD */
        {"\xf0\x90\x80\x80\xf4\x8f\xbf\xbf", 8, 1}, /* U+10000, U+10FFFF */
        {"a\0b", 3, 0},                       /* a NUL */
        {"\x80", 1, 0},                        /* a continuation byte first */
        {"\xc0\x80", 2, 0},                    /* overlong NUL */
        {"\xc1\xbf", 2, 0},                    /* overlong U+007F */
        {"\xe0\x9f\xbf", 3, 0},                /* overlong U+07FF */
        {"\xf0\x8f\xbf\xbf", 4, 0},            /* overlong U+FFFF */
        {"\xed\xa0\x80", 3, 0},                /* a surrogate, U+D800 */
        {"\xf4\x90\x80\x80", 4, 0},            /* U+110000 */
        {"\xf5\x80\x80\x80", 4, 0},            /* a lead byte no code point uses */
        {"\xe2\x82", 2, 0},                    /* cut short */
        {"\xc3\x28", 2, 0},                    /* a continuation that is not one */
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        if (mopt_utf8_text(cases[i].text, cases[i].n) != cases[i].ok) fprintf(stderr, "case %zu\n", i);
        assert_int_equal(mopt_utf8_text(cases[i].text, cases[i].n), cases[i].ok);
    }
}

/* Weights, KV caches and the bandwidth probe: zeroed, 64-byte aligned for the kernels' loads, 2 MiB-aligned from
 * 2 MiB up so that every whole huge page of the array can be one; every byte writable, up to the last */
static void test_large_arrays_are_zeroed_aligned_for_huge_pages_and_whole(void **state) {
    (void)state;
    const size_t huge = (size_t)2 << 20;
    const size_t sizes[] = {0, 1, 64, 4095, huge - 1, huge, huge + 1, 5 * huge + 17};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        unsigned char *p = mopt_alloc_zeroed(sizes[i]);
        assert_non_null(p);
        assert_int_equal((uintptr_t)p % (sizes[i] >= huge ? huge : 64), 0);
        for (size_t k = 0; k < sizes[i]; k += 4096) assert_int_equal(p[k], 0);
        if (sizes[i]) {
            assert_int_equal(p[sizes[i] - 1], 0);
            memset(p, 0xA5, sizes[i]);
            assert_int_equal(p[sizes[i] - 1], 0xA5);
        }
        mopt_free_zeroed(p, sizes[i]);
    }
}

/* Progress bars written to a file rather than a terminal come as whole lines, never carriage returns: the first at
 * once, the ones within the next 10 seconds held, the latest of them written before the next line. */
static void test_progress_in_a_log_file_comes_as_lines(void **state) {
    (void)state;
    char dir[1024], path[1100];
    test_tmpdir(dir, sizeof dir, "log");
    snprintf(path, sizeof path, "%s/stderr.txt", dir);
    fflush(stderr);
    const int saved = dup(fileno(stderr));
    FILE *f = fopen(path, "w");
    assert_true(saved >= 0 && f);
    assert_true(dup2(fileno(f), fileno(stderr)) >= 0);
    mopt_log_stderr(NULL, MOPT_LOG_PROGRESS, "bar 1");
    mopt_log_stderr(NULL, MOPT_LOG_PROGRESS, "bar 2");
    mopt_log_stderr(NULL, MOPT_LOG_PROGRESS, "bar 3");
    mopt_log_stderr(NULL, MOPT_LOG_INFO, "done");
    mopt_log_stderr(NULL, MOPT_LOG_PROGRESS, "bar 4"); /* within 10 s of bar 1: held until the flush */
    mopt_log_stderr_flush();
    fflush(stderr);
    assert_true(dup2(saved, fileno(stderr)) >= 0);
    close(saved);
    fclose(f);
    size_t n;
    char *text = NULL;
    assert_int_equal(mopt_read_file(path, &text, &n, NULL), MOPT_OK);
    assert_string_equal(text, "bar 1\nbar 3\ndone\nbar 4\n");
    free(text);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_buffer_holds_text_and_bytes_with_nuls),
        cmocka_unit_test(test_json_text_keeps_insertion_order_and_ends_as_asked),
        cmocka_unit_test(test_reads_refuse_what_is_not_a_regular_file),
        cmocka_unit_test(test_utf8_text_accepts_well_formed_sequences_only),
        cmocka_unit_test(test_paths_outside_a_root_are_refused),
        cmocka_unit_test(test_large_arrays_are_zeroed_aligned_for_huge_pages_and_whole),
        cmocka_unit_test(test_progress_in_a_log_file_comes_as_lines),
    };
    return test_run_tests(tests, NULL, NULL);
}
