/* Tensors: typed, strided views over a buffer that is either heap memory or a
 * read-only mmap of a checkpoint file.
 *
 * Dimension order follows ggml: ne[0] is the contiguous (fastest) dimension.
 * A PyTorch weight of shape [out, in] therefore has ne[0] = in, ne[1] = out.
 * nb[i] is the byte stride of dimension i: nb[0] = element size,
 * nb[i] = nb[i-1] * ne[i-1] for a contiguous tensor. */
#ifndef MOPT_TENSOR_H
#define MOPT_TENSOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mopt/error.h"
#include "mopt/export.h"

MOPT_EXTERN_C_BEGIN

#define MOPT_MAX_DIMS 4
#define MOPT_MAX_NAME 96

typedef enum mopt_dtype {
    MOPT_DTYPE_F32 = 0,
    MOPT_DTYPE_F16 = 1,
    MOPT_DTYPE_BF16 = 2,
    MOPT_DTYPE_I8 = 3,
    MOPT_DTYPE_I32 = 4,
    MOPT_DTYPE_U8 = 5,
    MOPT_DTYPE_I64 = 6,    /* as read from checkpoints (e.g. compressed-tensors weight_shape) */
    MOPT_DTYPE_F8E4M3 = 7, /* raw E4M3 bytes as read from checkpoints; mopt_fp8_pack makes them runnable */
    MOPT_DTYPE_I16 = 8,    /* as read from checkpoints (compressed-tensors marlin-24 metadata) */
    /* Packed quantized types start here; their element count is the logical
     * count and their scales/zero-points hang off mopt_tensor.quant. Layouts
     * are in mopt/quant.h. */
    MOPT_DTYPE_PACKED_FIRST = 64,
    MOPT_DTYPE_QINT = 64, /* b-bit integers (b = 2, 3, 4, 8) in 32-value blocks, group scales/zeros */
    MOPT_DTYPE_W8A8 = 65, /* int8 weights, per-row scale; activations quantized per token at run time */
    MOPT_DTYPE_FP8 = 66,  /* E4M3 weights, per-row or per-tensor scale */
    MOPT_DTYPE_SP24 = 67, /* 2:4 sparse: two kept values of every four inputs plus their 2-bit positions */
    MOPT_DTYPE_KQUANT = 68, /* ggml k-quant super-blocks (Q4_K, Q5_K, Q6_K) as GGUF files store them */
    MOPT_DTYPE_MXFP = 69,   /* block-scaled floats: NVFP4, MXFP4, MXFP8 */
    MOPT_DTYPE_COUNT
} mopt_dtype;

typedef enum mopt_device {
    MOPT_DEVICE_CPU = 0,
    MOPT_DEVICE_CUDA = 1
} mopt_device;

typedef enum mopt_buffer_kind {
    MOPT_BUFFER_HEAP = 0,  /* owned heap allocation, writable */
    MOPT_BUFFER_MMAP = 1,  /* read-only mapping of a file */
    MOPT_BUFFER_DEVICE = 2 /* memory owned by a backend */
} mopt_buffer_kind;

/* Reference-counted storage. Tensors point into it; it is freed when the last
 * reference drops. */
typedef struct mopt_buffer {
    mopt_buffer_kind kind;
    mopt_device device;
    void *base;
    size_t size;
    int32_t refcount;
    char origin[256]; /* file path for mmaps, "heap" otherwise */
} mopt_buffer;

/* Quantization side data for packed dtypes: group scales and zero-points are
 * ordinary tensors so exporters and kernels can read them directly. */
typedef struct mopt_quant_info {
    int32_t bits;
    int32_t group_size; /* along ne[0]; -1 for a whole row */
    uint32_t flags;     /* MOPT_QUANT_* in mopt/quant.h */
    float act_scale;    /* static per-tensor activations (MOPT_QUANT_ACT_STATIC): the calibrated scale */
    struct mopt_tensor *scale; /* owned */
    struct mopt_tensor *zero;  /* owned; NULL for symmetric formats */
    struct mopt_tensor *g_idx; /* owned; I32 [in] group of each input column (act-order), or NULL */
    float global_scale;        /* MXFP (NVFP4): the F32 scale every block scale is multiplied by; 1 for the MX formats;
                                  QINT with MOPT_QUANT_W_FP8: the weights' E4M3 scale */
} mopt_quant_info;

typedef struct mopt_tensor {
    mopt_dtype dtype;
    int32_t ndim;
    int64_t ne[MOPT_MAX_DIMS]; /* element counts, ne[0] contiguous; unused dims are 1 */
    size_t nb[MOPT_MAX_DIMS];  /* byte strides */
    void *data;                /* first element, inside buffer */
    mopt_buffer *buffer;       /* owner (holds a reference) */
    mopt_device device;
    mopt_quant_info *quant;    /* NULL for plain dtypes */
    void *extra;               /* backend-private */
    char name[MOPT_MAX_NAME];
} mopt_tensor;

/* Size in bytes of one element (0 for packed types, which are sized by their layout). */
MOPT_API size_t mopt_dtype_size(mopt_dtype t);
/* "f32", "f16", "bf16", "i8", "i32", "u8", "i64", "f8_e4m3", or a packed type's name. */
MOPT_API const char *mopt_dtype_name(mopt_dtype t);

MOPT_API int64_t mopt_tensor_nelements(const mopt_tensor *t);
MOPT_API size_t mopt_tensor_nbytes(const mopt_tensor *t);
MOPT_API bool mopt_tensor_is_contiguous(const mopt_tensor *t);
/* Writes the shape in PyTorch order ("[2048, 256]") into buf. */
MOPT_API const char *mopt_tensor_shape_str(const mopt_tensor *t, char *buf, size_t len);

/* Creates a contiguous heap tensor (zero-filled). dims are given in PyTorch
 * order (outermost first), e.g. {out, in} for a weight. Free with mopt_tensor_free. */
MOPT_API mopt_tensor *mopt_tensor_new(const char *name, mopt_dtype dtype, int32_t ndim, const int64_t *dims,
                                      mopt_error *err);
/* Drops the tensor and its reference to the buffer. NULL is a no-op. */
MOPT_API void mopt_tensor_free(mopt_tensor *t);
/* Hands the resident pages of a file-backed tensor (and of its scales,
 * zero-points and g_idx) back to the kernel: the next read maps them from the
 * file again. This bounds the memory of a pass that walks a large mapped
 * model once. Heap tensors are left alone. */
MOPT_API void mopt_tensor_drop_pages(const mopt_tensor *t);

/* A new tensor of float dtype F32, F16 or BF16 holding src (nelements
 * floats) rounded to nearest even: how fp32 work is stored back in a
 * checkpoint's own dtype. */
MOPT_API mopt_tensor *mopt_tensor_from_f32(const char *name, mopt_dtype dtype, int32_t ndim, const int64_t *dims, const float *src,
                                           mopt_error *err);
/* Converts `n` elements starting at element `offset` of a contiguous F32/F16/BF16
 * tensor into fp32 `out`. */
MOPT_API mopt_status mopt_tensor_read_f32(const mopt_tensor *t, int64_t offset, int64_t n, float *out,
                                          mopt_error *err);

/* Scalar conversions (round-to-nearest-even on the way down). */
MOPT_API float mopt_f16_to_f32(uint16_t h);
MOPT_API uint16_t mopt_f32_to_f16(float f);
MOPT_API float mopt_bf16_to_f32(uint16_t h);
MOPT_API uint16_t mopt_f32_to_bf16(float f);

MOPT_EXTERN_C_END

#endif
