/* The CUDA backend as it stands: the linears and the LM head run on the GPU
 * through libmopt-cuda, loaded at run time (so libmopt builds and runs where
 * there is no toolkit), over weights uploaded once in their stored form. The
 * other ops run on the CPU backend; activations cross to the device and back
 * around each linear. A weight the GPU cannot run yet (mopt/cuda.h lists
 * what it can) stays on the CPU. */
#include <dlfcn.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend_impl.h"
#include "base.h"
#include "mopt/cuda.h"

typedef struct cuda_api {
    mopt_status (*open)(int32_t, mopt_cuda **, mopt_error *);
    void (*close)(mopt_cuda *);
    mopt_status (*alloc)(mopt_cuda *, size_t, void **, mopt_error *);
    void (*free)(void *);
    mopt_status (*copy)(mopt_cuda *, void *, const void *, size_t, int, mopt_error *);
    mopt_status (*sync)(mopt_cuda *, mopt_error *);
    mopt_status (*upload)(mopt_cuda *, const mopt_tensor *, mopt_cuda_linear **, mopt_error *);
    void (*linear_free)(mopt_cuda_linear *);
    mopt_status (*linear_run)(mopt_cuda *, const mopt_cuda_linear *, const float *, int32_t, float *, mopt_error *);
} cuda_api;

typedef struct cuda_ctx {
    void *cpu; /* the CPU backend: every op the GPU does not take */
    void *lib;
    cuda_api f;
    mopt_cuda *gpu;
    const mopt_graph *g;
    mopt_cuda_linear **lin; /* per node: its weight on the GPU, or NULL */
    float **bias;           /* per node on the GPU with a bias: the bias in fp32, read once */
    int32_t n_nodes;
    void *dx, *dy; /* device activations */
    size_t dx_cap, dy_cap;
    float *hx, *hy; /* host staging for strided rows */
    size_t hx_cap, hy_cap;
} cuda_ctx;

/* libmopt-cuda.so beside libmopt (build/lib, <prefix>/lib), or in ../lib from a program in build/bin that
 * links the static library; $MOPT_CUDA_LIB names another. */
static void *load_library(char *tried, size_t cap) {
    const char *env = getenv("MOPT_CUDA_LIB");
    if (env && *env) {
        snprintf(tried, cap, "%s", env);
        return dlopen(env, RTLD_NOW | RTLD_LOCAL);
    }
    Dl_info info;
    if (dladdr((void *)&load_library, &info) && info.dli_fname) {
        char tmp[4096];
        snprintf(tmp, sizeof tmp, "%s", info.dli_fname);
        const char *dir = dirname(tmp);
        const char *base = strrchr(dir, '/');
        snprintf(tried, cap, strcmp(base ? base + 1 : dir, "bin") == 0 ? "%s/../lib/libmopt-cuda.so" : "%s/libmopt-cuda.so", dir);
        void *h = dlopen(tried, RTLD_NOW | RTLD_LOCAL);
        if (h) return h;
    }
    snprintf(tried, cap, "libmopt-cuda.so");
    return dlopen(tried, RTLD_NOW | RTLD_LOCAL);
}

static mopt_status bind_api(cuda_ctx *c, mopt_error *err) {
    char tried[4200];
    c->lib = load_library(tried, sizeof tried);
    if (!c->lib)
        return MOPT_FAIL(err, MOPT_E_BACKEND, "--device cuda needs libmopt-cuda.so, which this build does not have (%s: %s); "
                                              "build on a machine with the CUDA toolkit",
                         tried, dlerror());
    struct {
        const char *name;
        void **slot;
    } syms[] = {{"mopt_cuda_open", (void **)&c->f.open},       {"mopt_cuda_close", (void **)&c->f.close},
                {"mopt_cuda_alloc", (void **)&c->f.alloc},     {"mopt_cuda_free", (void **)&c->f.free},
                {"mopt_cuda_copy", (void **)&c->f.copy},       {"mopt_cuda_sync", (void **)&c->f.sync},
                {"mopt_cuda_upload", (void **)&c->f.upload},   {"mopt_cuda_linear_free", (void **)&c->f.linear_free},
                {"mopt_cuda_linear_run", (void **)&c->f.linear_run}};
    for (size_t i = 0; i < sizeof syms / sizeof *syms; i++)
        if (!(*syms[i].slot = dlsym(c->lib, syms[i].name)))
            return MOPT_FAIL(err, MOPT_E_BACKEND, "%s lacks %s: a libmopt-cuda from another version", tried, syms[i].name);
    return MOPT_OK;
}

static void cuda_free_ctx(void *p) {
    cuda_ctx *c = p;
    if (!c) return;
    for (int32_t i = 0; c->lin && i < c->n_nodes; i++) {
        if (c->lin[i]) c->f.linear_free(c->lin[i]);
        if (c->bias) free(c->bias[i]);
    }
    if (c->gpu) {
        c->f.free(c->dx);
        c->f.free(c->dy);
        c->f.close(c->gpu);
    }
    if (c->cpu) mopt_backend_cpu.free(c->cpu);
    if (c->lib) dlclose(c->lib);
    free(c->lin);
    free(c->bias);
    free(c->hx);
    free(c->hy);
    free(c);
}

static mopt_status cuda_init(void **out, const mopt_graph *g, int32_t n_threads, int32_t max_ctx, int32_t device, mopt_error *err) {
    *out = NULL;
    cuda_ctx *c = calloc(1, sizeof *c);
    if (!c) return MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
    c->g = g;
    c->n_nodes = mopt_graph_n_nodes(g);
    mopt_status st = bind_api(c, err);
    if (!st) st = c->f.open(device, &c->gpu, err);
    if (!st) st = mopt_backend_cpu.init(&c->cpu, g, n_threads, max_ctx, 0, err);
    const size_t slots = (size_t)(c->n_nodes ? c->n_nodes : 1);
    if (!st && (!(c->lin = calloc(slots, sizeof *c->lin)) || !(c->bias = calloc(slots, sizeof *c->bias))))
        st = MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
    for (int32_t i = 0; !st && i < c->n_nodes; i++) {
        const mopt_node *n = mopt_graph_node(g, i);
        if ((n->op != MOPT_OP_LINEAR && n->op != MOPT_OP_LM_HEAD) || !n->weight) continue;
        mopt_error e = {0};
        st = c->f.upload(c->gpu, n->weight, &c->lin[i], &e);
        if (st == MOPT_E_UNSUPPORTED) st = MOPT_OK; /* stays on the CPU */
        else if (st) MOPT_FAIL(err, st, "%s", e.msg);
        if (!st && c->lin[i] && n->bias) {
            const int64_t out = n->weight->ne[1];
            if (!(c->bias[i] = malloc((size_t)out * sizeof(float)))) st = MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
            else st = mopt_tensor_read_f32(n->bias, 0, out, c->bias[i], err);
        }
    }
    if (st) {
        cuda_free_ctx(c);
        return st;
    }
    *out = c;
    return MOPT_OK;
}

static mopt_status grow_device(cuda_ctx *c, void **buf, size_t *cap, size_t bytes, mopt_error *err) {
    if (bytes <= *cap) return MOPT_OK;
    c->f.free(*buf);
    *buf = NULL;
    *cap = 0;
    mopt_status st = c->f.alloc(c->gpu, bytes, buf, err);
    if (!st) *cap = bytes;
    return st;
}

static float *grow_host(float **buf, size_t *cap, size_t n) {
    return mopt_grow((void **)buf, cap, n, sizeof **buf) ? *buf : NULL;
}

/* y [T, out] (rows ys apart) = x [T, in] (rows xs apart) @ w^T + bias (NULL: none) on the GPU */
static mopt_status gpu_linear(cuda_ctx *c, const mopt_node *n, const mopt_cuda_linear *l, const float *bias, const float *x, int32_t T,
                              int32_t xs, float *y, int32_t ys, mopt_error *err) {
    if (T <= 0) return MOPT_OK;
    const size_t in = (size_t)n->weight->ne[0], out = (size_t)n->weight->ne[1], nx = (size_t)T * in, ny = (size_t)T * out;
    mopt_status st = grow_device(c, &c->dx, &c->dx_cap, nx * sizeof(float), err);
    if (!st) st = grow_device(c, &c->dy, &c->dy_cap, ny * sizeof(float), err);
    if (st) return st;
    const float *hx = x;
    if ((size_t)xs != in) { /* rows of a wider buffer: packed first, so one copy moves them */
        float *p = grow_host(&c->hx, &c->hx_cap, nx);
        if (!p) return MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
        for (int32_t t = 0; t < T; t++) memcpy(p + (size_t)t * in, x + (size_t)t * xs, in * sizeof *p);
        hx = p;
    }
    float *hy = (size_t)ys == out ? y : grow_host(&c->hy, &c->hy_cap, ny);
    if (!hy) return MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
    st = c->f.copy(c->gpu, c->dx, hx, nx * sizeof(float), 0, err);
    if (!st) st = c->f.linear_run(c->gpu, l, c->dx, T, c->dy, err);
    if (!st) st = c->f.copy(c->gpu, hy, c->dy, ny * sizeof(float), 1, err);
    if (!st) st = c->f.sync(c->gpu, err);
    if (st) return st;
    if (hy != y)
        for (int32_t t = 0; t < T; t++) memcpy(y + (size_t)t * ys, hy + (size_t)t * out, out * sizeof *y);
    if (bias)
        for (int32_t t = 0; t < T; t++)
            for (size_t o = 0; o < out; o++) y[(size_t)t * ys + o] += bias[o];
    return MOPT_OK;
}

/* n's index in the graph, whose weight and bias slots it names; -1 for a node of another graph */
static ptrdiff_t node_index(const cuda_ctx *c, const mopt_node *n) {
    const mopt_node *first = mopt_graph_node(c->g, 0);
    const ptrdiff_t i = first ? n - first : -1;
    return i >= 0 && i < c->n_nodes ? i : -1;
}

static mopt_status cuda_forward(void *p, const mopt_op_args *a, mopt_error *err) {
    cuda_ctx *c = p;
    if (a->n_group > 0) { /* linears that read one input: each where its weight is */
        for (int32_t k = 0; k < a->n_group; k++) {
            mopt_status st = cuda_forward(c, &a->group[k], err);
            if (st) return st;
        }
        return MOPT_OK;
    }
    const mopt_node *n = a->node;
    const ptrdiff_t i = node_index(c, n);
    if (i < 0 || !c->lin[i]) return mopt_backend_cpu.forward(c->cpu, a, err);
    if (n->op == MOPT_OP_LM_HEAD)
        return gpu_linear(c, n, c->lin[i], c->bias[i], a->in[0] + (size_t)a->row0 * a->in_width[0], a->rows, a->in_width[0], a->out,
                          a->out_width, err);
    return gpu_linear(c, n, c->lin[i], c->bias[i], a->in[0], a->T, a->in_width[0], a->out, a->out_width, err);
}

static int32_t cuda_n_threads(const void *p) { return mopt_backend_cpu.n_threads(((const cuda_ctx *)p)->cpu); }

static void cuda_parallel_for(void *p, int64_t n_tasks, void (*fn)(void *user, int64_t task, int32_t thread), void *user) {
    mopt_backend_cpu.parallel_for(((cuda_ctx *)p)->cpu, n_tasks, fn, user);
}

const mopt_backend_i mopt_backend_cuda = {"cuda", cuda_init, cuda_free_ctx, cuda_forward, cuda_n_threads, cuda_parallel_for};
