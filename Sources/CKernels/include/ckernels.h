#ifndef ZO_CKERNELS_H
#define ZO_CKERNELS_H
#include <stdint.h>

/// out[r][j] = bias[j] + sum_k x[r][k] * w[j][k] for r < rows and j in [j0, j1), exactly
/// (int64 result). x is int16 [rows][k], w int8 [n][k] (row j at w + j*k), out int64 [rows][n]
/// with row stride n. bias may be NULL. Uses AVX2 when the CPU has it (checked once), else a
/// portable loop; both give the same integers.
void zo_fc_i16_i8(const int16_t *x, int rows, int k, const int8_t *w, int n, int j0, int j1,
                  const int64_t *bias, int64_t *out);

/// y[i] = saturate_bits(round(x[i] * m[c] / 2^s[c])) with c = i % width (width 1: per tensor),
/// round half toward +inf, the product exact (128-bit when 64 do not hold it). in_bits and
/// out_bits are 8, 16, 32 or 64: x and y point to that many bits per element.
void zo_rescale(const void *x, int in_bits, long count, int width, const int64_t *m, const int32_t *s,
                int out_bits, void *y);

/// 1 when the AVX2 path is in use.
int zo_has_avx2(void);

#endif
