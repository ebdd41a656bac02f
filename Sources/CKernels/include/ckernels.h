#ifndef ZO_CKERNELS_H
#define ZO_CKERNELS_H
#include <stdint.h>

/// out[r][j] = bias[j] + sum_k x[r][k] * w[j][k] for r < rows and j in [j0, j1), exactly
/// (int64 result). x is int16 [rows][k], w int8 [n][k] (row j at w + j*k), out int64 [rows][n]
/// with row stride n. bias may be NULL. Uses AVX2 when the CPU has it (checked once), else a
/// portable loop; both give the same integers.
void zo_fc_i16_i8(const int16_t *x, int rows, int k, const int8_t *w, int n, int j0, int j1,
                  const int64_t *bias, int64_t *out);

/// zo_fc_i16_i8 followed by zo_rescale in one pass: each sum is rescaled by m[j], s[j] of its
/// output column j (width 1: m[0], s[0] for all) and saturated to out_bits (16 or 32) into y
/// [rows][n]; the int64 sums are never stored.
void zo_fc_rescale_i16_i8(const int16_t *x, int rows, int k, const int8_t *w, int n, int j0, int j1, const int64_t *bias,
                          const int64_t *m, const int32_t *s, int width, int out_bits, void *y);

/// block_fully_connected: out[r][j] = sum over blocks b of scale[j][b] * (sum_{i in b} x[r][i] * w[j][i])
/// + offset[j][b] * (sum_{i in b} x[r][i]), exactly (int64). Blocks are `block` consecutive inputs;
/// scale and offset are int16 [n][k / block]. bits 8: w is int8 [n][k]; bits 4: w holds levels
/// 0...15, two per byte ([n][k / 2], input 2i in the low nibble). Returns -1 (nothing written)
/// unless 1 <= block <= 512 divides k (and is even for bits 4). AVX2 when the CPU has it and
/// block % 16 == 0, else portable; the same integers.
int zo_block_fc_i16_i8(const int16_t *x, int rows, int k, const int8_t *w, int bits, const int16_t *scale, const int16_t *offset,
                       int block, int n, int j0, int j1, int64_t *out);

/// zo_block_fc_i16_i8 with each sum rescaled as in zo_fc_rescale_i16_i8.
int zo_block_fc_rescale_i16_i8(const int16_t *x, int rows, int k, const int8_t *w, int bits, const int16_t *scale, const int16_t *offset,
                               int block, int n, int j0, int j1, const int64_t *m, const int32_t *s, int width, int out_bits, void *y);

/// y[i] = saturate_bits(round(x[i] * m[c] / 2^s[c])) with c = i % width (width 1: per tensor),
/// round half toward +inf, the product exact (128-bit when 64 do not hold it). in_bits and
/// out_bits are 8, 16, 32 or 64: x and y point to that many bits per element.
void zo_rescale(const void *x, int in_bits, long count, int width, const int64_t *m, const int32_t *s,
                int out_bits, void *y);

/// y = a op b (op 0 add, 1 sub, 2 mul), exact in int64 (saturating there), then saturated to
/// obits. The output is row-major over `shape` (rank <= 8); sa and sb are the operands' element
/// strides per axis (0 where an operand is broadcast). Operand and output widths: 8/16/32/64 bits.
void zo_binary(int op, const void *a, int abits, const void *b, int bbits, int rank,
               const long *shape, const long *sa, const long *sb, int obits, void *y);

/// zo_binary (its int64 result, obits 64) followed by zo_rescale in one pass: the int64 values
/// are never stored whole. m and s hold `width` multipliers and shifts (1: per tensor; else one
/// per index of the output's last axis, which has `width` elements); `first` is the flat output
/// index of y[0] (where a part of a split tensor starts). out_bits 16 or 32.
void zo_binary_rescale(int op, const void *a, int abits, const void *b, int bbits, int rank,
                       const long *shape, const long *sa, const long *sb, const int64_t *m, const int32_t *s, long width,
                       long first, int out_bits, void *y);

/// The catalog's table: y[e] = t[i]·128 + (t[i+1] − t[i])·(u & 127) with u = x[e] + 32768 and
/// i = u >> 7; t holds 513 entries.
void zo_table(const int16_t *x, long count, const int16_t *t, int32_t *y);

/// Batched c[t][i][j] = sum_l a[t][i][l] * b[t][l][j] (b[t][j][l] when transpose_b), exact int64.
void zo_matmul_i16(const int16_t *a, const int16_t *b, int batches, int m, int k, int n, int transpose_b, int64_t *c);

/// Copies the elements of `shape` (rank <= 8; `elem` bytes each: 1, 2, 4 or 8) from src to dst,
/// element (i0, i1, ...) at offsets sum(i_a * src_stride[a]) and sum(i_a * dst_stride[a]) (in
/// elements): transpose, slice and concat. Contiguous inner runs go through memcpy.
void zo_strided_copy(const void *src, void *dst, int elem, int rank, const long *shape, const long *src_stride, const long *dst_stride);

/// Runs fn(ctx, p) for p = 0 ..< parts on up to `threads` threads (the caller and a pool of
/// threads - 1 workers, started on first use, which spin a little after each job before they
/// sleep) and returns when every part is done. Parts run serially in the caller with one thread,
/// more than 65535 parts, or while another call is running (a part that calls it, say).
typedef void (*zo_task_fn)(void *ctx, int part);
void zo_parallel_for(int parts, int threads, zo_task_fn fn, void *ctx);

/// A tight loop of int16 multiply-adds on registers (vpdpwssd when zo_has_vnni, else vpmaddwd +
/// vpaddd), for the benchmark's peak; returns how many multiply-adds it did (0 without AVX2).
long zo_madd_peak(long iterations);

/// 1 when the AVX2 path is in use.
int zo_has_avx2(void);

/// 1 when the block kernels (and the peak loop) multiply-add with AVX-512 VNNI's vpdpwssd on
/// 256-bit registers and rescales use AVX-512VL's shifts and saturating stores (the CPU has
/// avx512f, avx512vl and avx512vnni, and ZO_VNNI is not 0).
int zo_has_vnni(void);

/// Turns the VNNI path on (where the CPU has it) or off, for tests and benchmarks of both paths;
/// returns zo_has_vnni(). Not while kernels run.
int zo_use_vnni(int enabled);

#endif
