/* Reference-counted tensor storage: a read-only file mapping or a zeroed heap block. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <sys/mman.h>
#include <unistd.h>

#include "tensor_impl.h"

mopt_buffer *mopt_buffer_mmap(const char *path, mopt_error *err) {
    void *base;
    size_t size;
    if (mopt_map_file(path, &base, &size, err)) return NULL;
    mopt_buffer *b = calloc(1, sizeof *b);
    if (!b) {
        mopt_unmap_file(base, size);
        MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
        return NULL;
    }
    b->kind = MOPT_BUFFER_MMAP;
    b->base = base;
    b->size = size;
    b->refcount = 1;
    snprintf(b->origin, sizeof b->origin, "%s", path);
    return b;
}

mopt_buffer *mopt_buffer_heap(size_t size, mopt_error *err) {
    mopt_buffer *b = calloc(1, sizeof *b);
    if (!b) {
        MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
        return NULL;
    }
    b->base = mopt_alloc_zeroed(size);
    if (!b->base) {
        free(b);
        MOPT_FAIL(err, MOPT_E_NOMEM, "cannot allocate %zu bytes", size);
        return NULL;
    }
    b->kind = MOPT_BUFFER_HEAP;
    b->size = size;
    b->refcount = 1;
    snprintf(b->origin, sizeof b->origin, "heap");
    return b;
}

void mopt_buffer_retain(mopt_buffer *b) {
    if (b) b->refcount++;
}

void mopt_buffer_release(mopt_buffer *b) {
    if (!b || --b->refcount > 0) return;
    if (b->kind == MOPT_BUFFER_MMAP) mopt_unmap_file(b->base, b->size);
    else mopt_free_zeroed(b->base, b->size);
    free(b);
}

void mopt_buffer_drop(const mopt_buffer *b, const void *p, size_t n) {
    if (!b || b->kind != MOPT_BUFFER_MMAP || !p) return;
    const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE), s = (uintptr_t)p;
    const uintptr_t lo = (s + page - 1) & ~(page - 1), hi = (s + n) & ~(page - 1);
    if (hi > lo) madvise((void *)lo, hi - lo, MADV_DONTNEED); /* a read-only file mapping: nothing is lost */
}

static void drop_span(const mopt_tensor *t) {
    if (t) mopt_buffer_drop(t->buffer, t->data, mopt_tensor_nbytes(t));
}

void mopt_tensor_drop_pages(const mopt_tensor *t) {
    if (!t) return;
    drop_span(t);
    if (t->quant) {
        drop_span(t->quant->scale);
        drop_span(t->quant->zero);
        drop_span(t->quant->g_idx);
    }
}

static mopt_status spill_one(mopt_tensor *t, int fd, uint64_t *end, mopt_error *err) {
    if (!t || !t->buffer || t->buffer->kind != MOPT_BUFFER_HEAP || t->buffer->refcount != 1 || !t->buffer->size) return MOPT_OK;
    mopt_buffer *old = t->buffer;
    const uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE), at = (*end + page - 1) & ~(page - 1);
    const int e = mopt_write_all(fd, old->base, old->size, (int64_t)at);
    if (e) return MOPT_FAIL(err, MOPT_E_IO, "spill file: write failed: %s", strerror(e));
    void *base = mmap(NULL, old->size, PROT_READ, MAP_SHARED, fd, (off_t)at);
    if (base == MAP_FAILED) return MOPT_FAIL(err, MOPT_E_IO, "spill file: mmap failed: %s", strerror(errno));
    mopt_buffer *b = calloc(1, sizeof *b);
    if (!b) {
        munmap(base, old->size);
        return MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
    }
    b->kind = MOPT_BUFFER_MMAP;
    b->base = base;
    b->size = old->size;
    b->refcount = 1;
    snprintf(b->origin, sizeof b->origin, "spill");
    t->data = (char *)base + ((char *)t->data - (char *)old->base);
    t->buffer = b;
    mopt_buffer_release(old);
    *end = at + b->size;
    return MOPT_OK;
}

mopt_status mopt_tensor_spill(mopt_tensor *t, int fd, uint64_t *end, mopt_error *err) {
    mopt_status st = spill_one(t, fd, end, err);
    if (!st && t->quant) st = spill_one(t->quant->scale, fd, end, err);
    if (!st && t->quant) st = spill_one(t->quant->zero, fd, end, err);
    if (!st && t->quant) st = spill_one(t->quant->g_idx, fd, end, err);
    return st;
}
