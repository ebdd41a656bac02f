#include "ckernels.h"
#include <stddef.h>
#include <pthread.h>
#include <stdlib.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

// Each thread's scratch buffers, kept between calls (a fresh ~200 KiB packed tile per call is a
// fresh mapping: page faults, and unmapping it interrupts the other thread; the others are small,
// but a step graph makes thousands of these calls). One buffer per use in a call; freed at thread
// exit.
enum { TILE_WEIGHTS, TILE_SCALES, TILE_OFFSETS, ROW_SUMS, ROW_SUMS_F64, RESCALE_SCRATCH, SCRATCH_SLOTS };
static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;
struct scratch { size_t capacity[SCRATCH_SLOTS]; void *bytes[SCRATCH_SLOTS]; };
static void free_scratch(void *p) {
    struct scratch *b = p;
    for (int i = 0; i < SCRATCH_SLOTS; i++) free(b->bytes[i]);
    free(b);
}
static void make_scratch_key(void) { pthread_key_create(&scratch_key, free_scratch); }
// The calling thread's buffer `slot`, at least `bytes` long (64-byte aligned), or NULL when out of memory.
static void *scratch_buffer(int slot, size_t bytes) {
    pthread_once(&scratch_once, make_scratch_key);
    struct scratch *b = pthread_getspecific(scratch_key);
    if (!b) {
        if (!(b = calloc(1, sizeof *b))) return NULL;
        pthread_setspecific(scratch_key, b);
    }
    if (bytes > b->capacity[slot]) {
        free(b->bytes[slot]);
        if (posix_memalign(&b->bytes[slot], 64, bytes ? bytes : 1) != 0) b->bytes[slot] = NULL;
        b->capacity[slot] = b->bytes[slot] ? bytes : 0;
    }
    return b->bytes[slot];
}

static inline int64_t rescale_one(int64_t x, int64_t m, int s);

// Where a fully_connected's sums go: int64 into `raw`, or (raw NULL) rescaled by m/s of the
// output column (width 1: one pair for all) and saturated to out_bits in `y`; min_shift is
// vector_min_shift of m/s (found once per call).
typedef struct {
    int64_t *raw;
    void *y;
    const int64_t *m;
    const int32_t *s;
    int width, out_bits, min_shift;
} fc_out;

// The smallest shift of a rescale's parameters, or -1 when a multiplier is 2^31 or more in
// magnitude or a shift lies outside 0...62 (the vectorized rescale then does not run). Found once
// per kernel call: a fused kernel rescales each row group with the same parameters.
static int vector_min_shift(int width, const int64_t *m, const int32_t *s) {
    int min_shift = 62;
    for (int c = 0; c < width; c++) {
        if (m[c] <= -((int64_t)1 << 31) || m[c] >= ((int64_t)1 << 31) || s[c] < 0 || s[c] > 62) return -1;
        if (s[c] < min_shift) min_shift = s[c];
    }
    return min_shift;
}

static inline __attribute__((always_inline)) void emit(const fc_out *o, size_t idx, int j, int64_t v) {
    if (o->raw) { o->raw[idx] = v; return; }
    int c = o->width == 1 ? 0 : j;
    int64_t r = rescale_one(v, o->m[c], o->s[c]);
    if (o->out_bits == 16) ((int16_t *)o->y)[idx] = (int16_t)(r < INT16_MIN ? INT16_MIN : r > INT16_MAX ? INT16_MAX : r);
    else ((int32_t *)o->y)[idx] = (int32_t)(r < INT32_MIN ? INT32_MIN : r > INT32_MAX ? INT32_MAX : r);
}

// Portable reference: int32 partial sums are exact (|x·w| <= 2^22, blocks of 256 products stay
// below 2^30) and join an int64 total.
static void fc_portable_rows(const int16_t *x, int r0, int r1, int k, const int8_t *w, int n, int j0, int j1,
                             const int64_t *bias, const fc_out *out) {
    for (int r = r0; r < r1; r++) {
        const int16_t *xr = x + (size_t)r * k;
        for (int j = j0; j < j1; j++) {
            const int8_t *wj = w + (size_t)j * k;
            int64_t total = bias ? bias[j] : 0;
            for (int s = 0; s < k; s += 256) {
                int e = s + 256 < k ? s + 256 : k;
                int32_t acc = 0;
                for (int i = s; i < e; i++) acc += (int32_t)xr[i] * (int32_t)wj[i];
                total += acc;
            }
            emit(out, (size_t)r * n + j, j, total);
        }
    }
}

#if defined(__x86_64__)
// vpmaddwd lanes hold x·w pair sums of at most 2^23; 128 of them per lane stay within 2^30, so
// int32 lanes are exact over blocks of 2048 inputs before they are widened into the int64 total.
#define ZO_BLOCK 2048

__attribute__((target("avx2")))
static inline int64_t hsum_epi32_to_i64(__m256i v) {
    __m256i lo = _mm256_cvtepi32_epi64(_mm256_castsi256_si128(v));
    __m256i hi = _mm256_cvtepi32_epi64(_mm256_extracti128_si256(v, 1));
    __m256i s = _mm256_add_epi64(lo, hi);
    __m128i t = _mm_add_epi64(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
    return _mm_cvtsi128_si64(t) + _mm_extract_epi64(t, 1);
}

// Scalar tail of one dot product over [s, e).
static inline int64_t dot_tail(const int16_t *x, const int8_t *w, int s, int e) {
    int64_t acc = 0;
    for (int i = s; i < e; i++) acc += (int32_t)x[i] * (int32_t)w[i];
    return acc;
}

// x0…x3 (4 rows) · wa, wb over [s, e) (a multiple of 16, at most ZO_BLOCK long): 8 int32 lane
// accumulators, widened at the end into t (rows 0–3 with wa, then with wb).
__attribute__((target("avx2"), always_inline))
static inline void dot_4x2(const int16_t *x0, int k, const int8_t *wa, const int8_t *wb, int s, int e, int64_t t[8]) {
    const int16_t *x1 = x0 + k, *x2 = x1 + k, *x3 = x2 + k;
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
    for (int i = s; i < e; i += 16) {
        __m256i va = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(wa + i)));
        __m256i vb = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(wb + i)));
        __m256i v0 = _mm256_loadu_si256((const __m256i *)(x0 + i));
        __m256i v1 = _mm256_loadu_si256((const __m256i *)(x1 + i));
        __m256i v2 = _mm256_loadu_si256((const __m256i *)(x2 + i));
        __m256i v3 = _mm256_loadu_si256((const __m256i *)(x3 + i));
        a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(v0, va));
        a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(v1, va));
        a2 = _mm256_add_epi32(a2, _mm256_madd_epi16(v2, va));
        a3 = _mm256_add_epi32(a3, _mm256_madd_epi16(v3, va));
        b0 = _mm256_add_epi32(b0, _mm256_madd_epi16(v0, vb));
        b1 = _mm256_add_epi32(b1, _mm256_madd_epi16(v1, vb));
        b2 = _mm256_add_epi32(b2, _mm256_madd_epi16(v2, vb));
        b3 = _mm256_add_epi32(b3, _mm256_madd_epi16(v3, vb));
    }
    t[0] += hsum_epi32_to_i64(a0); t[1] += hsum_epi32_to_i64(a1);
    t[2] += hsum_epi32_to_i64(a2); t[3] += hsum_epi32_to_i64(a3);
    t[4] += hsum_epi32_to_i64(b0); t[5] += hsum_epi32_to_i64(b1);
    t[6] += hsum_epi32_to_i64(b2); t[7] += hsum_epi32_to_i64(b3);
}

__attribute__((target("avx2")))
static void fc_avx2(const int16_t *x, int rows, int k, const int8_t *w, int n, int j0, int j1,
                    const int64_t *bias, const fc_out *out) {
    const int kv = k & ~15;  // the part done 16 inputs at a time
    // The step graph's K (64…1536) take one block with no tail: that case gets its own loop,
    // free of the block and tail bookkeeping, which cost a quarter of the time at K = 576 (C
    // harness, 224 rows: 30 → 40 GMAC/s on one thread).
    const int one_block = kv == k && k <= ZO_BLOCK;
    int r = 0;
    // 4 rows × 2 outputs per inner loop: each weight vector widened once serves 4 rows.
    for (; r + 4 <= rows; r += 4) {
        const int16_t *x0 = x + (size_t)r * k;
        int j = j0;
        for (; j + 2 <= j1; j += 2) {
            const int8_t *wa = w + (size_t)j * k, *wb = wa + k;
            int64_t t[8] = {0};
            if (one_block) {
                dot_4x2(x0, k, wa, wb, 0, k, t);
            } else {
                for (int s = 0; s < kv; s += ZO_BLOCK) dot_4x2(x0, k, wa, wb, s, s + ZO_BLOCK < kv ? s + ZO_BLOCK : kv, t);
                for (int q = 0; q < 4; q++) {
                    t[q] += dot_tail(x0 + (size_t)q * k, wa, kv, k);
                    t[4 + q] += dot_tail(x0 + (size_t)q * k, wb, kv, k);
                }
            }
            const int64_t ba = bias ? bias[j] : 0, bb = bias ? bias[j + 1] : 0;
            for (int q = 0; q < 4; q++) {
                emit(out, (size_t)(r + q) * n + j, j, ba + t[q]);
                emit(out, (size_t)(r + q) * n + j + 1, j + 1, bb + t[4 + q]);
            }
        }
        if (j < j1) fc_portable_rows(x, r, r + 4, k, w, n, j, j1, bias, out);
    }
    // Remaining rows one at a time, 4 outputs per inner loop.
    for (; r < rows; r++) {
        const int16_t *xr = x + (size_t)r * k;
        int j = j0;
        for (; j + 4 <= j1; j += 4) {
            const int8_t *w0 = w + (size_t)j * k, *w1 = w0 + k, *w2 = w1 + k, *w3 = w2 + k;
            int64_t t[4] = {0};
            for (int s = 0; s < kv; s += ZO_BLOCK) {
                int e = s + ZO_BLOCK < kv ? s + ZO_BLOCK : kv;
                __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
                for (int i = s; i < e; i += 16) {
                    __m256i v = _mm256_loadu_si256((const __m256i *)(xr + i));
                    a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(v, _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(w0 + i)))));
                    a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(v, _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(w1 + i)))));
                    a2 = _mm256_add_epi32(a2, _mm256_madd_epi16(v, _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(w2 + i)))));
                    a3 = _mm256_add_epi32(a3, _mm256_madd_epi16(v, _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(w3 + i)))));
                }
                t[0] += hsum_epi32_to_i64(a0); t[1] += hsum_epi32_to_i64(a1);
                t[2] += hsum_epi32_to_i64(a2); t[3] += hsum_epi32_to_i64(a3);
            }
            const int8_t *ws[4] = {w0, w1, w2, w3};
            for (int q = 0; q < 4; q++) emit(out, (size_t)r * n + j + q, j + q, (bias ? bias[j + q] : 0) + t[q] + dot_tail(xr, ws[q], kv, k));
        }
        if (j < j1) fc_portable_rows(x, r, r + 1, k, w, n, j, j1, bias, out);
    }
}
#endif

int zo_has_avx2(void) {
#if defined(__x86_64__)
    static int cached = -1;
    if (cached < 0) { __builtin_cpu_init(); cached = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") ? 1 : 0; }
    return cached;
#else
    return 0;
#endif
}

static int vnni_state = -1;  // -1: not decided yet

static int cpu_has_vnni(void) {
#if defined(__x86_64__)
    __builtin_cpu_init();
    return zo_has_avx2() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni") &&
           __builtin_cpu_supports("avx512dq");
#else
    return 0;
#endif
}

int zo_has_vnni(void) {
    if (vnni_state < 0) {
        const char *off = getenv("ZO_VNNI");  // ZO_VNNI=0: the AVX2 kernels, to compare
        vnni_state = cpu_has_vnni() && !(off && off[0] == '0');
    }
    return vnni_state;
}

int zo_use_vnni(int enabled) {
    vnni_state = enabled && cpu_has_vnni();
    return vnni_state;
}

// Outputs per tile: the kernels stream every row group past the weights of their outputs, so a
// tile's weights (about 192 KiB) stay in L2 instead of coming from memory once per row group.
static inline int output_tile(int k, int bytes_per_input) {
    int t = (192 * 1024) / (k * bytes_per_input > 0 ? k * bytes_per_input : 1);
    return t < 8 ? 8 : t & ~7;
}

#if defined(__x86_64__)
static int rescale_vector(const void *x, int in_bits, long count, int width, const int64_t *m, const int32_t *s,
                          int out_bits, void *y, long rows, long y_stride, int min_shift);
#endif

// The rescale of the sums of up to 4 rows × `len` outputs (raw, row stride len) into the output
// rows at column t0: each row's run at once, so zo_rescale's vector path takes it.
static void rescale_rows(const int64_t *raw, int rr, int len, int t0, int r0, int n, const fc_out *o) {
    const int per = o->width != 1;
#if defined(__x86_64__)
    if (zo_has_avx2() && rescale_vector(raw, 64, len, per ? len : 1, o->m + (per ? t0 : 0), o->s + (per ? t0 : 0), o->out_bits,
                                      (char *)o->y + ((size_t)r0 * n + t0) * (size_t)(o->out_bits / 8), rr, n, o->min_shift)) return;
#endif
    for (int q = 0; q < rr; q++)
        zo_rescale(raw + (size_t)q * len, 64, len, per ? len : 1, o->m + (per ? t0 : 0), o->s + (per ? t0 : 0), o->out_bits,
                   (char *)o->y + ((size_t)(r0 + q) * n + t0) * (size_t)(o->out_bits / 8));
}

static void fc_tile(const int16_t *x, int rows, int k, const int8_t *w, int n, int j0, int j1, const int64_t *bias, const fc_out *o) {
#if defined(__x86_64__)
    if (zo_has_avx2()) { fc_avx2(x, rows, k, w, n, j0, j1, bias, o); return; }
#endif
    fc_portable_rows(x, 0, rows, k, w, n, j0, j1, bias, o);
}

static void fc(const int16_t *x, int rows, int k, const int8_t *w, int n, int j0, int j1, const int64_t *bias, const fc_out *o) {
    const int tile = output_tile(k, 1);
    // With a rescale, each group of 4 rows × tile goes through an int64 scratch first (the
    // scalar rescale per output would cost as much as the sums at K = 576).
    int64_t *scratch = o->raw ? NULL : scratch_buffer(RESCALE_SCRATCH, sizeof(int64_t) * 4 * (size_t)tile);
    for (int t0 = j0; t0 < j1; t0 += tile) {
        int t1 = t0 + tile < j1 ? t0 + tile : j1, len = t1 - t0;
        if (!scratch) { fc_tile(x, rows, k, w, n, t0, t1, bias, o); continue; }
        fc_out so = {scratch, NULL, NULL, NULL, 1, 64, -1};
        for (int r0 = 0; r0 < rows; r0 += 4) {
            int rr = rows - r0 < 4 ? rows - r0 : 4;
            fc_tile(x + (size_t)r0 * k, rr, k, w + (size_t)t0 * k, len, 0, len, bias ? bias + t0 : NULL, &so);
            rescale_rows(scratch, rr, len, t0, r0, n, o);
        }
    }
}

void zo_fc_i16_i8(const int16_t *x, int rows, int k, const int8_t *w, int n, int j0, int j1,
                  const int64_t *bias, int64_t *out) {
    fc_out o = {out, NULL, NULL, NULL, 1, 64, -1};
    fc(x, rows, k, w, n, j0, j1, bias, &o);
}

void zo_fc_rescale_i16_i8(const int16_t *x, int rows, int k, const int8_t *w, int n, int j0, int j1, const int64_t *bias,
                          const int64_t *m, const int32_t *s, int width, int out_bits, void *y) {
    fc_out o = {NULL, y, m, s, width, out_bits, vector_min_shift(width, m, s)};
    fc(x, rows, k, w, n, j0, j1, bias, &o);
}

// block_fully_connected. Within a block the sum of x·w fits in int32 (|x·w| <= 2^22, block <= 512);
// it is multiplied by the block's scale in int64, and the block's offset multiplies the sum of x
// over the block (int32: |x| <= 2^15). Weights are int8, or (bits 4) two levels 0…15 per byte,
// input 2i in the low nibble.
static inline void block_sums(const int16_t *xr, int k, int block, int32_t *sums) {
    for (int b = 0; b < k / block; b++) {
        const int16_t *p = xr + (size_t)b * block;
        int32_t t = 0;
        for (int i = 0; i < block; i++) t += p[i];
        sums[b] = t;
    }
}

static inline int64_t block_offsets(const int16_t *offset, const int32_t *sums, int kb) {
    int64_t t = 0;
    for (int b = 0; b < kb; b++) t += (int64_t)offset[b] * sums[b];
    return t;
}

// Weight (row wj, input i): int8, or a 4-bit level.
static inline int32_t weight_at(const int8_t *wj, int i, int bits) {
    if (bits == 8) return wj[i];
    uint8_t v = (uint8_t)wj[i >> 1];
    return (i & 1) ? v >> 4 : v & 15;
}

static void block_fc_portable_rows(const int16_t *x, int r0, int r1, int k, const int8_t *w, int bits, const int16_t *scale,
                                   const int16_t *offset, int block, int n, int j0, int j1, int32_t *sums, const fc_out *out) {
    const int kb = k / block;
    const size_t stride = bits == 8 ? (size_t)k : (size_t)k / 2;
    for (int r = r0; r < r1; r++) {
        const int16_t *xr = x + (size_t)r * k;
        block_sums(xr, k, block, sums);
        for (int j = j0; j < j1; j++) {
            const int8_t *wj = w + (size_t)j * stride;
            const int16_t *sj = scale + (size_t)j * kb;
            int64_t total = block_offsets(offset + (size_t)j * kb, sums, kb);
            for (int b = 0; b < kb; b++) {
                int32_t acc = 0;
                for (int i = b * block; i < (b + 1) * block; i++) acc += (int32_t)xr[i] * weight_at(wj, i, bits);
                total += (int64_t)sj[b] * acc;
            }
            emit(out, (size_t)r * n + j, j, total);
        }
    }
}

#if defined(__x86_64__)
// 16 weights of row wj from input i as int16 lanes.
__attribute__((target("avx2")))
static inline __m256i weights16(const int8_t *wj, int i, int bits) {
    if (bits == 8) return _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(wj + i)));
    const __m128i nib = _mm_set1_epi8(15);
    __m128i v = _mm_loadl_epi64((const __m128i *)(wj + i / 2));
    __m128i lo = _mm_and_si128(v, nib), hi = _mm_and_si128(_mm_srli_epi16(v, 4), nib);
    return _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(lo, hi));
}

// 4 rows × 2 outputs as in fc_avx2; at the end of each block the 8 int32 accumulators are
// summed across lanes (hadd) and multiplied by the block scales into int64 totals.
__attribute__((target("avx2"), always_inline))
static inline void block_fc_avx2_body(const int16_t *x, int rows, int k, const int8_t *w, const int bits, const int16_t *scale,
                                      const int16_t *offset, int block, int n, int j0, int j1, int32_t *sums, const fc_out *out) {
    const int kb = k / block;
    const size_t stride = bits == 8 ? (size_t)k : (size_t)k / 2;
    int r = 0;
    for (; r + 4 <= rows; r += 4) {
        const int16_t *x0 = x + (size_t)r * k, *x1 = x0 + k, *x2 = x1 + k, *x3 = x2 + k;
        for (int q = 0; q < 4; q++) block_sums(x0 + (size_t)q * k, k, block, sums + (size_t)q * kb);
        int j = j0;
        for (; j + 2 <= j1; j += 2) {
            const int8_t *wa = w + (size_t)j * stride, *wb = wa + stride;
            const int16_t *sa = scale + (size_t)j * kb, *sb = sa + kb;
            __m256i ta = _mm256_setzero_si256(), tb = ta;
            for (int b = 0; b < kb; b++) {
                __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
                for (int i = b * block, e = i + block; i < e; i += 16) {
                    __m256i va = weights16(wa, i, bits), vb = weights16(wb, i, bits);
                    __m256i v0 = _mm256_loadu_si256((const __m256i *)(x0 + i));
                    __m256i v1 = _mm256_loadu_si256((const __m256i *)(x1 + i));
                    __m256i v2 = _mm256_loadu_si256((const __m256i *)(x2 + i));
                    __m256i v3 = _mm256_loadu_si256((const __m256i *)(x3 + i));
                    a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(v0, va));
                    a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(v1, va));
                    a2 = _mm256_add_epi32(a2, _mm256_madd_epi16(v2, va));
                    a3 = _mm256_add_epi32(a3, _mm256_madd_epi16(v3, va));
                    b0 = _mm256_add_epi32(b0, _mm256_madd_epi16(v0, vb));
                    b1 = _mm256_add_epi32(b1, _mm256_madd_epi16(v1, vb));
                    b2 = _mm256_add_epi32(b2, _mm256_madd_epi16(v2, vb));
                    b3 = _mm256_add_epi32(b3, _mm256_madd_epi16(v3, vb));
                }
                // Lane i of ha (hb): the block sum of row i for output j (j + 1).
                __m256i ha = _mm256_hadd_epi32(_mm256_hadd_epi32(a0, a1), _mm256_hadd_epi32(a2, a3));
                __m256i hb = _mm256_hadd_epi32(_mm256_hadd_epi32(b0, b1), _mm256_hadd_epi32(b2, b3));
                __m128i suma = _mm_add_epi32(_mm256_castsi256_si128(ha), _mm256_extracti128_si256(ha, 1));
                __m128i sumb = _mm_add_epi32(_mm256_castsi256_si128(hb), _mm256_extracti128_si256(hb, 1));
                ta = _mm256_add_epi64(ta, _mm256_mul_epi32(_mm256_cvtepi32_epi64(suma), _mm256_set1_epi64x(sa[b])));
                tb = _mm256_add_epi64(tb, _mm256_mul_epi32(_mm256_cvtepi32_epi64(sumb), _mm256_set1_epi64x(sb[b])));
            }
            int64_t t[8];
            _mm256_storeu_si256((__m256i *)t, ta);
            _mm256_storeu_si256((__m256i *)(t + 4), tb);
            const int16_t *oa = offset + (size_t)j * kb, *ob = oa + kb;
            for (int q = 0; q < 4; q++) {
                const int32_t *sq = sums + (size_t)q * kb;
                emit(out, (size_t)(r + q) * n + j, j, t[q] + block_offsets(oa, sq, kb));
                emit(out, (size_t)(r + q) * n + j + 1, j + 1, t[4 + q] + block_offsets(ob, sq, kb));
            }
        }
        if (j < j1) block_fc_portable_rows(x, r, r + 4, k, w, bits, scale, offset, block, n, j, j1, sums, out);
    }
    // Remaining rows (all of a decode step's one) one at a time, 4 outputs per inner loop.
    for (; r < rows; r++) {
        const int16_t *xr = x + (size_t)r * k;
        block_sums(xr, k, block, sums);
        int j = j0;
        for (; j + 4 <= j1; j += 4) {
            const int8_t *w0 = w + (size_t)j * stride;
            const int16_t *s0 = scale + (size_t)j * kb;
            __m256i t = _mm256_setzero_si256();
            for (int b = 0; b < kb; b++) {
                __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
                for (int i = b * block, e = i + block; i < e; i += 16) {
                    __m256i v = _mm256_loadu_si256((const __m256i *)(xr + i));
                    a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(v, weights16(w0, i, bits)));
                    a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(v, weights16(w0 + stride, i, bits)));
                    a2 = _mm256_add_epi32(a2, _mm256_madd_epi16(v, weights16(w0 + 2 * stride, i, bits)));
                    a3 = _mm256_add_epi32(a3, _mm256_madd_epi16(v, weights16(w0 + 3 * stride, i, bits)));
                }
                // Lane q: output j + q's block sum, times its block scale.
                __m256i h = _mm256_hadd_epi32(_mm256_hadd_epi32(a0, a1), _mm256_hadd_epi32(a2, a3));
                __m128i sum = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
                __m256i sc = _mm256_set_epi64x(s0[3 * kb + b], s0[2 * kb + b], s0[kb + b], s0[b]);
                t = _mm256_add_epi64(t, _mm256_mul_epi32(_mm256_cvtepi32_epi64(sum), sc));
            }
            int64_t tq[4];
            _mm256_storeu_si256((__m256i *)tq, t);
            for (int q = 0; q < 4; q++) emit(out, (size_t)r * n + j + q, j + q, tq[q] + block_offsets(offset + (size_t)(j + q) * kb, sums, kb));
        }
        if (j < j1) block_fc_portable_rows(x, r, r + 1, k, w, bits, scale, offset, block, n, j, j1, sums, out);
    }
}

// One copy per weight width, so the inner loop has no branch on it.
__attribute__((target("avx2")))
static void block_fc_avx2_w8(const int16_t *x, int rows, int k, const int8_t *w, const int16_t *scale, const int16_t *offset,
                             int block, int n, int j0, int j1, int32_t *sums, const fc_out *out) {
    block_fc_avx2_body(x, rows, k, w, 8, scale, offset, block, n, j0, j1, sums, out);
}

__attribute__((target("avx2")))
static void block_fc_avx2_w4(const int16_t *x, int rows, int k, const int8_t *w, const int16_t *scale, const int16_t *offset,
                             int block, int n, int j0, int j1, int32_t *sums, const fc_out *out) {
    block_fc_avx2_body(x, rows, k, w, 4, scale, offset, block, n, j0, j1, sums, out);
}
#endif

static void block_fc_tile(const int16_t *x, int rows, int k, const int8_t *w, int bits, const int16_t *scale, const int16_t *offset,
                          int block, int n, int j0, int j1, int32_t *sums, const fc_out *o) {
#if defined(__x86_64__)
    if (zo_has_avx2() && block % 16 == 0) {
        if (bits == 8) block_fc_avx2_w8(x, rows, k, w, scale, offset, block, n, j0, j1, sums, o);
        else block_fc_avx2_w4(x, rows, k, w, scale, offset, block, n, j0, j1, sums, o);
        return;
    }
#endif
    block_fc_portable_rows(x, 0, rows, k, w, bits, scale, offset, block, n, j0, j1, sums, o);
}

// The packed path for many rows: a tile's weights are first copied so that one 16-byte load
// holds input pair p of 8 consecutive outputs ([group][pair][output][2], 4-bit levels widened to
// int8). vpmaddwd of a broadcast input pair with it leaves each output's block sum in its own
// lane, so the block scale and offset are applied to 8 outputs at once (f64 FMAs, see
// BLOCK_FC_PACKED_4X16) instead of after a horizontal reduction per output, as block_fc_avx2_body must.
#if defined(__x86_64__)
// 8 rows × 8 input pairs (int16 lanes r[o]) → 8 vectors of one pair × 8 outputs, stored at d.
__attribute__((target("avx2"), always_inline))
static inline void store_pairs_transposed(const __m128i r[8], int8_t *d) {
    __m128i t[8], u[8];
    for (int o = 0; o < 8; o += 2) { t[o] = _mm_unpacklo_epi16(r[o], r[o + 1]); t[o + 1] = _mm_unpackhi_epi16(r[o], r[o + 1]); }
    // t[2h]: pairs 0-3 of rows 2h, 2h+1; t[2h+1]: pairs 4-7.
    for (int h = 0; h < 2; h++) {
        const __m128i *a = t + 4 * h;
        u[4 * h + 0] = _mm_unpacklo_epi32(a[0], a[2]);   // pairs 0,1 of rows 4h..4h+3
        u[4 * h + 1] = _mm_unpackhi_epi32(a[0], a[2]);   // pairs 2,3
        u[4 * h + 2] = _mm_unpacklo_epi32(a[1], a[3]);   // pairs 4,5
        u[4 * h + 3] = _mm_unpackhi_epi32(a[1], a[3]);   // pairs 6,7
    }
    for (int q = 0; q < 4; q++) {
        _mm_storeu_si128((__m128i *)(d + 32 * q), _mm_unpacklo_epi64(u[q], u[4 + q]));
        _mm_storeu_si128((__m128i *)(d + 32 * q + 16), _mm_unpackhi_epi64(u[q], u[4 + q]));
    }
}

// pack_block_tile's weights, 16 bytes of each of 8 rows at a time (k a multiple of 32).
__attribute__((target("avx2")))
static void pack_group_avx2(const int8_t *w0, size_t stride, int bits, int k, int8_t *d) {
    const __m128i low = _mm_set1_epi8(15);
    for (int i = 0; i < k; i += bits == 8 ? 16 : 32) {
        __m128i r[8], h[8];
        const size_t at = bits == 8 ? (size_t)i : (size_t)i / 2;
        for (int o = 0; o < 8; o++) r[o] = _mm_loadu_si128((const __m128i *)(w0 + (size_t)o * stride + at));
        if (bits == 4) {
            // Byte b holds inputs 2b (low nibble) and 2b + 1: interleaved they are pairs 0-7 and 8-15.
            for (int o = 0; o < 8; o++) {
                const __m128i lo = _mm_and_si128(r[o], low), hi = _mm_and_si128(_mm_srli_epi16(r[o], 4), low);
                h[o] = _mm_unpackhi_epi8(lo, hi);
                r[o] = _mm_unpacklo_epi8(lo, hi);
            }
            store_pairs_transposed(h, d + (size_t)(i + 16) * 8);
        }
        store_pairs_transposed(r, d + (size_t)i * 8);
    }
}
#endif

static void pack_block_tile(const int8_t *w, int bits, const int16_t *scale, const int16_t *offset, int k, int kb, int j0, int groups,
                            int8_t *pw, double *ps, double *po) {
    const size_t stride = bits == 8 ? (size_t)k : (size_t)k / 2;
#if defined(__x86_64__)
    if (zo_has_avx2() && k % 32 == 0) {
        for (int g = 0; g < groups; g++) {
            const int j = j0 + 8 * g;
            pack_group_avx2(w + (size_t)j * stride, stride, bits, k, pw + (size_t)g * (size_t)k * 8);
            for (int o = 0; o < 8; o++)
                for (int b = 0; b < kb; b++) {
                    ps[((size_t)g * kb + b) * 8 + o] = scale[(size_t)(j + o) * kb + b];
                    po[((size_t)g * kb + b) * 8 + o] = offset[(size_t)(j + o) * kb + b];
                }
        }
        return;
    }
#endif
    for (int g = 0; g < groups; g++)
        for (int o = 0; o < 8; o++) {
            const int j = j0 + 8 * g + o;
            const int8_t *wj = w + (size_t)j * stride;
            int8_t *d = pw + (size_t)g * (size_t)k * 8 + 2 * o;
            if (bits == 8) {
                for (int i = 0; i < k; i += 2) { d[(size_t)i * 8] = wj[i]; d[(size_t)i * 8 + 1] = wj[i + 1]; }
            } else {
                for (int i = 0; i < k; i += 2) {
                    uint8_t v = (uint8_t)wj[i >> 1];
                    d[(size_t)i * 8] = (int8_t)(v & 15); d[(size_t)i * 8 + 1] = (int8_t)(v >> 4);
                }
            }
            for (int b = 0; b < kb; b++) {
                ps[((size_t)g * kb + b) * 8 + o] = scale[(size_t)j * kb + b];
                po[((size_t)g * kb + b) * 8 + o] = offset[(size_t)j * kb + b];
            }
        }
}

#if defined(__x86_64__)
// Rows x0..x3 (int16 [k]; sums: their block sums [4][kb], as doubles) × the 8·G outputs of packed
// groups g0 … g0 + G − 1; results go to out[q·stride + 0 ..< 8G] (int64, all 4 rows). Written once,
// compiled per G and instruction set: MADD(acc, x, w) adds the pairwise products of x and w to
// acc's int32 lanes (vpmaddwd + vpaddd, or one vpdpwssd where the CPU has AVX-512 VNNI: the same
// wrapping int32 sums). Each block's int32 sums are then scaled and offset in f64 FMAs, which are
// exact: every term and partial total is an integer below 2^53 (block_fc_packed checks k), and an
// FMA of exact integers rounds nothing. That is 3 f64 ops per 8 outputs on AVX-512 (7 on AVX2)
// where int64 needed 9; 2 without offsets (OFFSETS 0: every offset of the tile is 0, as in
// Q8_0 blocks). G = 4 needs 16 accumulators and 4 weight vectors: AVX-512VL's 32 registers
// (C harness, 192 rows × 576 → 1536, one thread: G 2 → 4 took 68 → 74 GMAC/s; with no
// bookkeeping at all the loop runs at 98, so the f64 step is what is left).
#define BLOCK_FC_PACKED_4XG(MADD, TOTALS, G, OFFSETS)                                                         \
    const size_t gw = (size_t)k * 8, gs = (size_t)kb * 8;                                                    \
    TOTALS##_DECLARE(G)                                                                                      \
    for (int b = 0; b < kb; b++) {                                                                           \
        __m256i acc[4][G];                                                                                   \
        for (int q = 0; q < 4; q++) for (int g = 0; g < G; g++) acc[q][g] = _mm256_setzero_si256();         \
        const int8_t *w0 = pw + (size_t)b * block * 8;                                                       \
        for (int i = b * block, e = i + block; i < e; i += 2, w0 += 16) {                                     \
            __m256i v[G];                                                                                    \
            for (int g = 0; g < G; g++) v[g] = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(w0 + g * gw))); \
            for (int q = 0; q < 4; q++) {                                                                    \
                const __m256i x = _mm256_set1_epi32(*(const int32_t *)(xs[q] + i));                          \
                for (int g = 0; g < G; g++) acc[q][g] = MADD(acc[q][g], x, v[g]);                            \
            }                                                                                                \
        }                                                                                                    \
        for (int g = 0; g < G; g++) {                                                                        \
            const double *sc = ps + g * gs + (size_t)b * 8, *of = po + g * gs + (size_t)b * 8;               \
            for (int q = 0; q < 4; q++) TOTALS##_ADD(q, g, acc[q][g], sc, of, sums[(size_t)q * kb + b], OFFSETS) \
        }                                                                                                    \
    }                                                                                                        \
    for (int q = 0; q < 4; q++)                                                                              \
        for (int g = 0; g < G; g++) {                                                                        \
            TOTALS##_STORE(q, g, out + (size_t)q * stride + 8 * g)                                           \
        }

// Totals of 8 outputs in two __m256d (AVX2 + FMA) or one __m512d (AVX-512).
#define F64X4_DECLARE(G) __m256d tot[4][G][2]; \
    for (int q = 0; q < 4; q++) for (int g = 0; g < G; g++) tot[q][g][0] = tot[q][g][1] = _mm256_setzero_pd();
#define F64X4_ADD(q, g, a, sc, of, sum, OFFSETS) {                                                          \
        const __m256d lo = _mm256_cvtepi32_pd(_mm256_castsi256_si128(a)), hi = _mm256_cvtepi32_pd(_mm256_extracti128_si256(a, 1)); \
        tot[q][g][0] = _mm256_fmadd_pd(lo, _mm256_loadu_pd(sc), tot[q][g][0]);                               \
        tot[q][g][1] = _mm256_fmadd_pd(hi, _mm256_loadu_pd(sc + 4), tot[q][g][1]);                           \
        if (OFFSETS) {                                                                                       \
            const __m256d s = _mm256_set1_pd(sum);                                                           \
            tot[q][g][0] = _mm256_fmadd_pd(s, _mm256_loadu_pd(of), tot[q][g][0]);                            \
            tot[q][g][1] = _mm256_fmadd_pd(s, _mm256_loadu_pd(of + 4), tot[q][g][1]);                        \
        } }
#define F64X4_STORE(q, g, dst) { double t[8]; _mm256_storeu_pd(t, tot[q][g][0]); _mm256_storeu_pd(t + 4, tot[q][g][1]); \
        for (int c = 0; c < 8; c++) (dst)[c] = (int64_t)t[c]; }
#define F64X8_DECLARE(G) __m512d tot[4][G]; \
    for (int q = 0; q < 4; q++) for (int g = 0; g < G; g++) tot[q][g] = _mm512_setzero_pd();
#define F64X8_ADD(q, g, a, sc, of, sum, OFFSETS) {                                                          \
        tot[q][g] = _mm512_fmadd_pd(_mm512_cvtepi32_pd(a), _mm512_loadu_pd(sc), tot[q][g]);                  \
        if (OFFSETS) tot[q][g] = _mm512_fmadd_pd(_mm512_set1_pd(sum), _mm512_loadu_pd(of), tot[q][g]); }
// AVX-512DQ's vcvttpd2qq: 8 exact integers (below 2^53) to int64 at once, stored straight into the
// rescale's scratch rows, where a scalar conversion and a copy per output ran (C harness, 288 rows × 576 → 1536 or 192,
// fused rescale, one thread, alternated: 58–70 → 73–74 GMAC/s).
#define F64X8_STORE(q, g, dst) _mm512_storeu_si512((void *)(dst), _mm512_cvttpd_epi64(tot[q][g]));

#define MADD_AVX2(acc, x, w) _mm256_add_epi32(acc, _mm256_madd_epi16(x, w))
#define MADD_VNNI(acc, x, w) _mm256_dpwssd_epi32(acc, x, w)

typedef void (*packed_4xg_fn)(const int16_t *const xs[4], const double *sums, int k, int kb, int block,
                              const int8_t *pw, const double *ps, const double *po, int64_t *out, size_t stride);

#define PACKED_KERNEL(NAME, TARGET, MADD, TOTALS, G, OFFSETS)                                                  \
    __attribute__((target(TARGET)))                                                                          \
    static void NAME(const int16_t *const xs[4], const double *sums, int k, int kb, int block,                \
                     const int8_t *pw, const double *ps, const double *po, int64_t *out, size_t stride) {     \
        BLOCK_FC_PACKED_4XG(MADD, TOTALS, G, OFFSETS)                                                        \
    }
#define VNNI_TARGET "avx2,fma,avx512f,avx512vl,avx512vnni,avx512dq"
PACKED_KERNEL(block_fc_packed_4x16, "avx2,fma", MADD_AVX2, F64X4, 2, 1)
PACKED_KERNEL(block_fc_packed_4x16_sym, "avx2,fma", MADD_AVX2, F64X4, 2, 0)
PACKED_KERNEL(block_fc_packed_4x16_vnni, VNNI_TARGET, MADD_VNNI, F64X8, 2, 1)
PACKED_KERNEL(block_fc_packed_4x16_vnni_sym, VNNI_TARGET, MADD_VNNI, F64X8, 2, 0)
PACKED_KERNEL(block_fc_packed_4x32_vnni, VNNI_TARGET, MADD_VNNI, F64X8, 4, 1)
PACKED_KERNEL(block_fc_packed_4x32_vnni_sym, VNNI_TARGET, MADD_VNNI, F64X8, 4, 0)

// block_fc over many rows with packed tiles (AVX2, even blocks, at least 16 outputs). Outputs
// past the last multiple of 16 of a tile go to block_fc_tile. Returns -1 when out of memory.
static int block_fc_packed(const int16_t *x, int rows, int k, const int8_t *w, int bits, const int16_t *scale, const int16_t *offset,
                           int block, int n, int j0, int j1, const fc_out *o) {
    const int kb = k / block;
    const size_t stride = bits == 8 ? (size_t)k : (size_t)k / 2;
    const int vnni = zo_has_vnni(), wide = vnni ? 32 : 16;  // outputs per kernel call
    const int tile = output_tile(k, 1) >= wide ? output_tile(k, 1) & ~(wide - 1) : wide;
    // Offsets all 0 (symmetric blocks, Q8_0's): the kernels without the offset FMA.
    int offsets = 0;
    for (size_t i = (size_t)j0 * kb; i < (size_t)j1 * kb && !offsets; i++) offsets = offset[i] != 0;
    const packed_4xg_fn k16 = vnni ? (offsets ? block_fc_packed_4x16_vnni : block_fc_packed_4x16_vnni_sym)
                                   : (offsets ? block_fc_packed_4x16 : block_fc_packed_4x16_sym);
    const packed_4xg_fn k32 = offsets ? block_fc_packed_4x32_vnni : block_fc_packed_4x32_vnni_sym;
    int8_t *pw = scratch_buffer(TILE_WEIGHTS, (size_t)tile * k);
    double *ps = scratch_buffer(TILE_SCALES, sizeof(double) * (size_t)tile * kb), *po = scratch_buffer(TILE_OFFSETS, sizeof(double) * (size_t)tile * kb);
    int32_t *sums = scratch_buffer(ROW_SUMS, sizeof(int32_t) * 4 * (size_t)kb);
    double *sumsf = scratch_buffer(ROW_SUMS_F64, sizeof(double) * 4 * (size_t)kb);
    int64_t *scratch = scratch_buffer(RESCALE_SCRATCH, sizeof(int64_t) * 4 * (size_t)tile);
    if (!pw || !ps || !po || !sums || !sumsf || !scratch) return -1;
    for (int t0 = j0; t0 < j1; t0 += tile) {
        const int t1 = t0 + tile < j1 ? t0 + tile : j1, len = t1 - t0, packed = len & ~15;
        pack_block_tile(w, bits, scale, offset, k, kb, t0, packed / 8, pw, ps, po);
        for (int r0 = 0; r0 < rows; r0 += 4) {
            const int rr = rows - r0 < 4 ? rows - r0 : 4;
            const int16_t *xs[4];
            for (int q = 0; q < 4; q++) {
                xs[q] = x + (size_t)(r0 + (q < rr ? q : 0)) * k;
                block_sums(xs[q], k, block, sums + (size_t)q * kb);
            }
            for (int i = 0; i < 4 * kb; i++) sumsf[i] = sums[i];
            for (int g = 0; g < packed / 8;) {
                const int groups = vnni && g + 4 <= packed / 8 ? 4 : 2;
                const packed_4xg_fn kernel = groups == 4 ? k32 : k16;
                const int8_t *pg = pw + (size_t)g * k * 8;
                const double *sg = ps + (size_t)g * kb * 8, *og = po + (size_t)g * kb * 8;
                if (o->raw) {
                    // Raw sums go to the output rows, of which fewer than 4 may be left.
                    int64_t out[4 * 32];
                    kernel(xs, sumsf, k, kb, block, pg, sg, og, out, 32);
                    for (int q = 0; q < rr; q++)
                        for (int c = 0; c < 8 * groups; c++) emit(o, (size_t)(r0 + q) * n + t0 + 8 * g + c, t0 + 8 * g + c, out[q * 32 + c]);
                } else {
                    // Straight into the scratch rows the rescale reads (4 rows of len: room for all).
                    kernel(xs, sumsf, k, kb, block, pg, sg, og, scratch + 8 * g, (size_t)len);
                }
                g += groups;
            }
            if (packed < len) {
                fc_out so = {scratch, NULL, NULL, NULL, 1, 64, -1};
                const fc_out *to = o->raw ? o : &so;
                const int16_t *xr = x + (size_t)r0 * k;
                if (o->raw) block_fc_tile(xr, rr, k, w, bits, scale, offset, block, n, t0 + packed, t1, sums, &(fc_out){o->raw + (size_t)r0 * n, NULL, NULL, NULL, 1, 64, -1});
                else block_fc_tile(xr, rr, k, w + (size_t)t0 * stride, bits, scale + (size_t)t0 * kb, offset + (size_t)t0 * kb, block, len, packed, len, sums, to);
            }
            if (!o->raw) rescale_rows(scratch, rr, len, t0, r0, n, o);
        }
    }
    return 0;
}
#endif

static int block_fc(const int16_t *x, int rows, int k, const int8_t *w, int bits, const int16_t *scale, const int16_t *offset,
                    int block, int n, int j0, int j1, const fc_out *o) {
    if (block < 1 || block > 512 || k % block != 0 || (bits != 8 && bits != 4) || (bits == 4 && block % 2 != 0)) return -1;
#if defined(__x86_64__)
    // The packed kernel's f64 totals are exact while k·2^30·(2^7 + 1) < 2^53 (its comment).
    if (zo_has_avx2() && rows >= 4 && block % 2 == 0 && j1 - j0 >= 16 && k < 65000) return block_fc_packed(x, rows, k, w, bits, scale, offset, block, n, j0, j1, o);
#endif
    int32_t *sums = scratch_buffer(ROW_SUMS, sizeof(int32_t) * 4 * (size_t)(k / block));
    if (!sums) return -1;
    const int tile = output_tile(k, 1);
    const int kb = k / block;
    const size_t stride = bits == 8 ? (size_t)k : (size_t)k / 2;
    int64_t *scratch = o->raw ? NULL : scratch_buffer(RESCALE_SCRATCH, sizeof(int64_t) * 4 * (size_t)tile);  // as in fc()
    for (int t0 = j0; t0 < j1; t0 += tile) {
        int t1 = t0 + tile < j1 ? t0 + tile : j1, len = t1 - t0;
        if (!scratch) { block_fc_tile(x, rows, k, w, bits, scale, offset, block, n, t0, t1, sums, o); continue; }
        fc_out so = {scratch, NULL, NULL, NULL, 1, 64, -1};
        for (int r0 = 0; r0 < rows; r0 += 4) {
            int rr = rows - r0 < 4 ? rows - r0 : 4;
            block_fc_tile(x + (size_t)r0 * k, rr, k, w + (size_t)t0 * stride, bits, scale + (size_t)t0 * kb, offset + (size_t)t0 * kb,
                          block, len, 0, len, sums, &so);
            rescale_rows(scratch, rr, len, t0, r0, n, o);
        }
    }
    return 0;
}

int zo_block_fc_i16_i8(const int16_t *x, int rows, int k, const int8_t *w, int bits, const int16_t *scale, const int16_t *offset,
                       int block, int n, int j0, int j1, int64_t *out) {
    fc_out o = {out, NULL, NULL, NULL, 1, 64, -1};
    return block_fc(x, rows, k, w, bits, scale, offset, block, n, j0, j1, &o);
}

int zo_block_fc_rescale_i16_i8(const int16_t *x, int rows, int k, const int8_t *w, int bits, const int16_t *scale, const int16_t *offset,
                               int block, int n, int j0, int j1, const int64_t *m, const int32_t *s, int width, int out_bits, void *y) {
    fc_out o = {NULL, y, m, s, width, out_bits, vector_min_shift(width, m, s)};
    return block_fc(x, rows, k, w, bits, scale, offset, block, n, j0, j1, &o);
}

static inline int64_t rescale_one(int64_t x, int64_t m, int s) {
    int64_t p;
    if (!__builtin_mul_overflow(x, m, &p)) {
        if (s == 0) return p;
        int64_t q;
        if (!__builtin_add_overflow(p, (int64_t)1 << (s - 1), &q)) return q >> s;
    }
    __int128 v = (__int128)x * m;
    if (s > 0) v = (v + ((__int128)1 << (s - 1))) >> s;
    if (v > INT64_MAX) return INT64_MAX;
    if (v < INT64_MIN) return INT64_MIN;
    return (int64_t)v;
}

// One loop per (input type, output type). When every |x| and every |m| is below 2^31 (checked
// once per call), x·m + 2^(s−1) cannot overflow 64 bits and the loop runs without checks.
#define ZO_RESCALE_LOOP(TI, TO, LO, HI)                                                         \
    do {                                                                                        \
        const TI *in = (const TI *)x;                                                           \
        TO *o = (TO *)y;                                                                        \
        uint64_t mx = 0, am = 0;                                                                \
        for (long i = 0; i < count; i++) {                                                      \
            int64_t v = in[i];                                                                  \
            uint64_t a = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;                       \
            mx = a > mx ? a : mx;                                                               \
        }                                                                                       \
        for (int c = 0; c < width; c++) {                                                       \
            uint64_t a = m[c] < 0 ? (uint64_t)0 - (uint64_t)m[c] : (uint64_t)m[c];              \
            am = a > am ? a : am;                                                               \
        }                                                                                       \
        if (mx < ((uint64_t)1 << 31) && am < ((uint64_t)1 << 31)) {                             \
            if (width == 1) {                                                                   \
                const int64_t mm = m[0];                                                        \
                const int sh = s[0];                                                            \
                const int64_t half = sh > 0 ? (int64_t)1 << (sh - 1) : 0;                       \
                for (long i = 0; i < count; i++) {                                              \
                    int64_t v = ((int64_t)in[i] * mm + half) >> sh;                             \
                    o[i] = (TO)(v < (LO) ? (LO) : v > (HI) ? (HI) : v);                         \
                }                                                                               \
            } else {                                                                            \
                for (long base = 0; base < count; base += width)                                \
                    for (int c = 0; c < width; c++) {                                           \
                        const int sh = s[c];                                                    \
                        int64_t v = ((int64_t)in[base + c] * m[c] + (sh > 0 ? (int64_t)1 << (sh - 1) : 0)) >> sh; \
                        o[base + c] = (TO)(v < (LO) ? (LO) : v > (HI) ? (HI) : v);              \
                    }                                                                           \
            }                                                                                   \
            break;                                                                              \
        }                                                                                       \
        for (long base = 0; base < count; base += width)                                        \
            for (int c = 0; c < width; c++) {                                                   \
                int64_t v = rescale_one(in[base + c], m[c], s[c]);                              \
                o[base + c] = (TO)(v < (LO) ? (LO) : v > (HI) ? (HI) : v);                      \
            }                                                                                   \
    } while (0)

#define ZO_RESCALE_OUT(TI)                                                                      \
    switch (out_bits) {                                                                         \
    case 8: ZO_RESCALE_LOOP(TI, int8_t, INT8_MIN, INT8_MAX); break;                             \
    case 16: ZO_RESCALE_LOOP(TI, int16_t, INT16_MIN, INT16_MAX); break;                         \
    case 32: ZO_RESCALE_LOOP(TI, int32_t, INT32_MIN, INT32_MAX); break;                         \
    default: ZO_RESCALE_LOOP(TI, int64_t, INT64_MIN, INT64_MAX); break;                         \
    }

#if defined(__x86_64__)
// x as int64 lanes, 4 at a time, from 16-, 32- or 64-bit elements.
__attribute__((target("avx2")))
static inline __m256i load4_i64(const void *x, int in_bits, long i) {
    switch (in_bits) {
    case 16: return _mm256_cvtepi16_epi64(_mm_loadl_epi64((const __m128i *)((const int16_t *)x + i)));
    case 32: return _mm256_cvtepi32_epi64(_mm_loadu_si128((const __m128i *)((const int32_t *)x + i)));
    default: return _mm256_loadu_si256((const __m256i *)((const int64_t *)x + i));
    }
}

// round(x·m / 2^s) for |x|, |m| < 2^31: vpmuldq gives the exact 64-bit product of the low 32
// bits; the arithmetic shift AVX2 lacks is a logical shift of p XOR 2^63, minus 2^63 >> s.
__attribute__((target("avx2")))
static inline __m256i rescale4(__m256i v, __m256i mm, __m256i half, __m256i sh, __m256i bias) {
    const __m256i sign = _mm256_set1_epi64x(INT64_MIN);
    __m256i p = _mm256_add_epi64(_mm256_mul_epi32(v, mm), half);
    return _mm256_sub_epi64(_mm256_srlv_epi64(_mm256_xor_si256(p, sign), sh), bias);
}

// round(x·m / 2^s) for |x| < 2^62, |m| < 2^31 and 31 <= s <= 62, exactly, without the 128-bit
// product: x = xh·2^31 + xl and xl·m = loh·2^31 + lol (0 <= xl, lol < 2^31), so
// x·m + 2^(s−1) = (xh·m + loh)·2^31 + (lol + 2^(s−1)) and the result is
// (xh·m + loh + ((lol + 2^(s−1)) >> 31)) >> (s − 31), all floors. sw = s − 31, swbias = 2^63 >> sw.
__attribute__((target("avx2")))
static inline __m256i rescale4_wide(__m256i v, __m256i mm, __m256i half, __m256i sw, __m256i swbias) {
    const __m256i sign = _mm256_set1_epi64x(INT64_MIN), low31 = _mm256_set1_epi64x(((int64_t)1 << 31) - 1);
    const __m256i bias31 = _mm256_set1_epi64x((int64_t)1 << 32);  // 2^63 >> 31
    __m256i xh = _mm256_sub_epi64(_mm256_srli_epi64(_mm256_xor_si256(v, sign), 31), bias31);
    __m256i xl = _mm256_and_si256(v, low31);
    __m256i p = _mm256_mul_epi32(xl, mm);
    __m256i ph = _mm256_sub_epi64(_mm256_srli_epi64(_mm256_xor_si256(p, sign), 31), bias31);
    __m256i carry = _mm256_srli_epi64(_mm256_add_epi64(_mm256_and_si256(p, low31), half), 31);
    __m256i a = _mm256_add_epi64(_mm256_add_epi64(_mm256_mul_epi32(xh, mm), ph), carry);
    return _mm256_sub_epi64(_mm256_srlv_epi64(_mm256_xor_si256(a, sign), sw), swbias);
}

// Clamps int64 lanes to [lo, hi] and stores them as 16- or 32-bit integers.
__attribute__((target("avx2")))
static inline void store4(__m256i v, __m256i lo, __m256i hi, int out_bits, void *y, long i) {
    v = _mm256_blendv_epi8(v, hi, _mm256_cmpgt_epi64(v, hi));
    v = _mm256_blendv_epi8(v, lo, _mm256_cmpgt_epi64(lo, v));
    __m128i d = _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(v, _mm256_setr_epi32(0, 2, 4, 6, 0, 0, 0, 0)));
    if (out_bits == 32) _mm_storeu_si128((__m128i *)((int32_t *)y + i), d);
    else _mm_storel_epi64((__m128i *)((int16_t *)y + i), _mm_packs_epi32(d, d));
}

// round(x·m / 2^s) with AVX-512VL's arithmetic shifts (vpsraq, vpsravq): the same integers as
// rescale4 and rescale4_wide, without the XOR-and-subtract that stands in for them on AVX2.
__attribute__((target("avx2,avx512f,avx512vl")))
static inline __m256i rescale4_avx512(__m256i v, __m256i mm, __m256i half, __m256i sh, __m256i bias) {
    (void)bias;
    return _mm256_srav_epi64(_mm256_add_epi64(_mm256_mul_epi32(v, mm), half), sh);
}

__attribute__((target("avx2,avx512f,avx512vl")))
static inline __m256i rescale4_wide_avx512(__m256i v, __m256i mm, __m256i half, __m256i sw, __m256i swbias) {
    (void)swbias;
    const __m256i low31 = _mm256_set1_epi64x(((int64_t)1 << 31) - 1);
    __m256i p = _mm256_mul_epi32(_mm256_and_si256(v, low31), mm);
    __m256i carry = _mm256_srli_epi64(_mm256_add_epi64(_mm256_and_si256(p, low31), half), 31);
    __m256i a = _mm256_add_epi64(_mm256_add_epi64(_mm256_mul_epi32(_mm256_srai_epi64(v, 31), mm), _mm256_srai_epi64(p, 31)), carry);
    return _mm256_srav_epi64(a, sw);
}

// Saturating narrowing stores (vpmovsqd, vpmovsqw): the clamp to the output type is the instruction's.
__attribute__((target("avx2,avx512f,avx512vl")))
static inline void store4_avx512(__m256i v, __m256i lo, __m256i hi, int out_bits, void *y, long i) {
    (void)lo; (void)hi;
    if (out_bits == 32) _mm_storeu_si128((__m128i *)((int32_t *)y + i), _mm256_cvtsepi64_epi32(v));
    else _mm_storel_epi64((__m128i *)((int16_t *)y + i), _mm256_cvtsepi64_epi16(v));
}

// What the vectorized rescale needs to know first: 0 when it cannot run (an input or a multiplier
// of 2^31 or more in magnitude, or a shape that does not fit: the caller's loops run), 1 for the
// plain product, 2 for the split product of inputs beyond 2^31 (rescale4_wide).
__attribute__((target("avx2")))
static int rescale_vector_kind(const void *x, int in_bits, long count, int min_shift, int out_bits, long rows) {
    if ((in_bits != 16 && in_bits != 32 && in_bits != 64) || (out_bits != 16 && out_bits != 32) || min_shift < 0) return 0;
    if (in_bits != 64) return 1;  // narrower inputs are below 2^31 by their type
    const long all = count * rows, vec = all & ~3L;
    const int64_t *in = (const int64_t *)x;
    __m256i mn = _mm256_set1_epi64x(0), mx = mn;
    for (long i = 0; i < vec; i += 4) {
        __m256i v = _mm256_loadu_si256((const __m256i *)(in + i));
        mn = _mm256_blendv_epi8(mn, v, _mm256_cmpgt_epi64(mn, v));
        mx = _mm256_blendv_epi8(mx, v, _mm256_cmpgt_epi64(v, mx));
    }
    int64_t a[4], b[4], lo = 0, hi = 0;
    _mm256_storeu_si256((__m256i *)a, mn);
    _mm256_storeu_si256((__m256i *)b, mx);
    for (int q = 0; q < 4; q++) { lo = a[q] < lo ? a[q] : lo; hi = b[q] > hi ? b[q] : hi; }
    for (long i = vec; i < all; i++) { lo = in[i] < lo ? in[i] : lo; hi = in[i] > hi ? in[i] : hi; }
    if (lo > -((int64_t)1 << 31) && hi < ((int64_t)1 << 31)) return 1;
    return lo <= -((int64_t)1 << 62) || hi >= ((int64_t)1 << 62) || min_shift < 31 ? 0 : 2;
}

// The rows of the vectorized rescale with the input and output widths, the product's form and
// the channel layout (WK 0: one channel, 1: a multiple of 4, 2: other) given: constants where a
// case names them, so the loop has no branch on them.
#define RESCALE_ROWS(RESCALE4, RESCALE4_WIDE, STORE4, IN_BITS, OUT_BITS, WIDE, WK)                             \
    for (long row = 0; row < rows; row++, x = (const char *)x + count * ((IN_BITS) / 8), y = (char *)y + y_stride * ((OUT_BITS) / 8)) { \
        /* Channel c of element i (one channel: all 0); the vector loop keeps c for its first lane. */         \
        long c = 0;                                                                                            \
        for (long i = 0; i < vec; i += 4) {                                                                    \
            __m256i mm, sh;                                                                                    \
            if ((WK) == 0) {                                                                                   \
                mm = _mm256_set1_epi64x(m[0]);                                                                 \
                sh = _mm256_set1_epi64x(s[0]);                                                                 \
            } else if ((WK) == 1) {                                                                            \
                mm = _mm256_loadu_si256((const __m256i *)(m + c));                                             \
                sh = _mm256_cvtepi32_epi64(_mm_loadu_si128((const __m128i *)(s + c)));                         \
            } else {                                                                                           \
                long c1 = c + 1 == width ? 0 : c + 1, c2 = c1 + 1 == width ? 0 : c1 + 1, c3 = c2 + 1 == width ? 0 : c2 + 1; \
                mm = _mm256_set_epi64x(m[c3], m[c2], m[c1], m[c]);                                             \
                sh = _mm256_set_epi64x(s[c3], s[c2], s[c1], s[c]);                                             \
            }                                                                                                  \
            /* 2^(s−1), and 0 where s = 0 (a shift count of 2^64 − 1 gives 0). */                              \
            __m256i half = _mm256_sllv_epi64(one, _mm256_sub_epi64(sh, one));                                  \
            __m256i v = load4_i64(x, (IN_BITS), i), r;                                                         \
            if (WIDE) {                                                                                        \
                __m256i sw = _mm256_sub_epi64(sh, s31);                                                        \
                r = RESCALE4_WIDE(v, mm, half, sw, _mm256_srlv_epi64(sign, sw));                               \
            } else {                                                                                           \
                r = RESCALE4(v, mm, half, sh, _mm256_srlv_epi64(sign, sh));                                    \
            }                                                                                                  \
            STORE4(r, lo, hi, (OUT_BITS), y, i);                                                               \
            if ((WK) != 0) { c += 4; while (c >= width) c -= width; }                                          \
        }                                                                                                      \
        for (long i = vec; i < count; i++) {                                                                   \
            int64_t v = (IN_BITS) == 16 ? ((const int16_t *)x)[i] : (IN_BITS) == 32 ? ((const int32_t *)x)[i] : ((const int64_t *)x)[i]; \
            int ch = width == 1 ? 0 : (int)(i % width);                                                        \
            v = rescale_one(v, m[ch], s[ch]);                                                                  \
            v = v < LO ? LO : v > HI ? HI : v;                                                                 \
            if ((OUT_BITS) == 16) ((int16_t *)y)[i] = (int16_t)v; else ((int32_t *)y)[i] = (int32_t)v;         \
        }                                                                                                      \
    }                                                                                                          \
    return 1;

// The vectorized rescale for 16/32/64-bit inputs and 16/32-bit outputs, per tensor or per
// channel. `rows` runs of `count` inputs, contiguous, into rows `y_stride` outputs apart
// (count % width == 0, so each run starts at channel 0); min_shift from vector_min_shift. Written
// once, compiled twice: with AVX2's rescale4/rescale4_wide/store4, and with their AVX-512VL
// forms (same integers). The cases the graphs run most (i64 and i32 inputs) have loops of their own.
#define RESCALE_VECTOR(R4, R4W, S4)                                                                            \
    const int kind = rescale_vector_kind(x, in_bits, count, min_shift, out_bits, rows);                        \
    if (kind == 0) return 0;                                                                                   \
    const int wide = kind == 2, wk = width == 1 ? 0 : width % 4 == 0 ? 1 : 2;                                  \
    const int64_t LO = out_bits == 16 ? INT16_MIN : INT32_MIN, HI = out_bits == 16 ? INT16_MAX : INT32_MAX;    \
    const __m256i lo = _mm256_set1_epi64x(LO), hi = _mm256_set1_epi64x(HI), one = _mm256_set1_epi64x(1);       \
    const __m256i sign = _mm256_set1_epi64x(INT64_MIN), s31 = _mm256_set1_epi64x(31);                          \
    const long vec = count & ~3L;                                                                              \
    if (in_bits == 64 && wk < 2) {                                                                             \
        if (out_bits == 16) {                                                                                  \
            if (wide) { if (wk == 0) { RESCALE_ROWS(R4, R4W, S4, 64, 16, 1, 0) } else { RESCALE_ROWS(R4, R4W, S4, 64, 16, 1, 1) } } \
            else { if (wk == 0) { RESCALE_ROWS(R4, R4W, S4, 64, 16, 0, 0) } else { RESCALE_ROWS(R4, R4W, S4, 64, 16, 0, 1) } } \
        } else {                                                                                               \
            if (wide) { if (wk == 0) { RESCALE_ROWS(R4, R4W, S4, 64, 32, 1, 0) } else { RESCALE_ROWS(R4, R4W, S4, 64, 32, 1, 1) } } \
            else { if (wk == 0) { RESCALE_ROWS(R4, R4W, S4, 64, 32, 0, 0) } else { RESCALE_ROWS(R4, R4W, S4, 64, 32, 0, 1) } } \
        }                                                                                                      \
    }                                                                                                          \
    if (in_bits == 32 && wk < 2) {                                                                             \
        if (out_bits == 16) { if (wk == 0) { RESCALE_ROWS(R4, R4W, S4, 32, 16, 0, 0) } else { RESCALE_ROWS(R4, R4W, S4, 32, 16, 0, 1) } } \
        else { if (wk == 0) { RESCALE_ROWS(R4, R4W, S4, 32, 32, 0, 0) } else { RESCALE_ROWS(R4, R4W, S4, 32, 32, 0, 1) } } \
    }                                                                                                          \
    RESCALE_ROWS(R4, R4W, S4, in_bits, out_bits, wide, wk)

__attribute__((target("avx2")))
static int rescale_vector_avx2(const void *x, int in_bits, long count, int width, const int64_t *m, const int32_t *s,
                               int out_bits, void *y, long rows, long y_stride, int min_shift) {
    RESCALE_VECTOR(rescale4, rescale4_wide, store4)
}

__attribute__((target("avx2,avx512f,avx512vl")))
static int rescale_vector_avx512(const void *x, int in_bits, long count, int width, const int64_t *m, const int32_t *s,
                                 int out_bits, void *y, long rows, long y_stride, int min_shift) {
    RESCALE_VECTOR(rescale4_avx512, rescale4_wide_avx512, store4_avx512)
}

// The vectorized rescale: its AVX-512VL form where the AVX-512 kernels run (zo_has_vnni), else
// AVX2's. Returns 0, having written nothing, when it cannot run.
static int rescale_vector(const void *x, int in_bits, long count, int width, const int64_t *m, const int32_t *s,
                          int out_bits, void *y, long rows, long y_stride, int min_shift) {
    return zo_has_vnni() ? rescale_vector_avx512(x, in_bits, count, width, m, s, out_bits, y, rows, y_stride, min_shift)
                         : rescale_vector_avx2(x, in_bits, count, width, m, s, out_bits, y, rows, y_stride, min_shift);
}
#endif

void zo_rescale(const void *x, int in_bits, long count, int width, const int64_t *m, const int32_t *s,
                int out_bits, void *y) {
#if defined(__x86_64__)
    if (zo_has_avx2() && count % width == 0 && rescale_vector(x, in_bits, count, width, m, s, out_bits, y, 1, count, vector_min_shift(width, m, s))) return;
#endif
    switch (in_bits) {
    case 8: ZO_RESCALE_OUT(int8_t); break;
    case 16: ZO_RESCALE_OUT(int16_t); break;
    case 32: ZO_RESCALE_OUT(int32_t); break;
    default: ZO_RESCALE_OUT(int64_t); break;
    }
}

// ---- Elementwise add/sub/mul -------------------------------------------------------------
// Plain loops written once and compiled twice (AVX2 and baseline): the compiler vectorizes
// them; the integers do not depend on which copy runs.

#define ZO_CHUNK 512

// Reads n elements of `bits` width with stride `st` (0: one value repeated) into int64.
static inline __attribute__((always_inline)) void load_i64(const void *p, int bits, long st, long n, int64_t *t) {
    switch (bits) {
    case 8: { const int8_t *q = p; for (long i = 0; i < n; i++) t[i] = q[i * st]; break; }
    case 16: { const int16_t *q = p; for (long i = 0; i < n; i++) t[i] = q[i * st]; break; }
    case 32: { const int32_t *q = p; for (long i = 0; i < n; i++) t[i] = q[i * st]; break; }
    default: { const int64_t *q = p; for (long i = 0; i < n; i++) t[i] = q[i * st]; break; }
    }
}

// Writes n int64 values saturated to `bits` width.
static inline __attribute__((always_inline)) void store_sat(const int64_t *t, long n, int bits, void *p) {
    switch (bits) {
    case 8: { int8_t *q = p; for (long i = 0; i < n; i++) q[i] = (int8_t)(t[i] < INT8_MIN ? INT8_MIN : t[i] > INT8_MAX ? INT8_MAX : t[i]); break; }
    case 16: { int16_t *q = p; for (long i = 0; i < n; i++) q[i] = (int16_t)(t[i] < INT16_MIN ? INT16_MIN : t[i] > INT16_MAX ? INT16_MAX : t[i]); break; }
    case 32: { int32_t *q = p; for (long i = 0; i < n; i++) q[i] = (int32_t)(t[i] < INT32_MIN ? INT32_MIN : t[i] > INT32_MAX ? INT32_MAX : t[i]); break; }
    default: { int64_t *q = p; for (long i = 0; i < n; i++) q[i] = t[i]; break; }
    }
}

static inline __attribute__((always_inline)) int64_t sat_add(int64_t a, int64_t b) {
    int64_t r; if (__builtin_add_overflow(a, b, &r)) return b > 0 ? INT64_MAX : INT64_MIN; return r;
}
static inline __attribute__((always_inline)) int64_t sat_sub(int64_t a, int64_t b) {
    int64_t r; if (__builtin_sub_overflow(a, b, &r)) return b < 0 ? INT64_MAX : INT64_MIN; return r;
}
static inline __attribute__((always_inline)) int64_t sat_mul(int64_t a, int64_t b) {
    int64_t r; if (__builtin_mul_overflow(a, b, &r)) return (a < 0) != (b < 0) ? INT64_MIN : INT64_MAX; return r;
}

// The rescale that follows a binary op in the same pass (m NULL: none): multipliers and shifts
// per channel (width of them, the output's last axis) or one (width 1); `first` is the flat index
// of the part's first output, for the channel of each element.
typedef struct { const int64_t *m; const int32_t *s; long width, first; } then_rescale;

// The int64 results t[0..n) at flat output index `at`, rescaled into y (obits wide).
static void rescale_run(const int64_t *t, long n, long at, const then_rescale *r, int obits, void *y) {
    if (r->width == 1) { zo_rescale(t, 64, n, 1, r->m, r->s, obits, y); return; }
    // Pieces that do not cross the last axis's end, each with its own first channel.
    for (long i = 0; i < n;) {
        const long ch = (at + i) % r->width, len = n - i < r->width - ch ? n - i : r->width - ch;
        zo_rescale(t + i, 64, len, (int)len, r->m + ch, r->s + ch, obits, (char *)y + i * (obits / 8));
        i += len;
    }
}

// One row: y[i] = a[i·sa] op b[i·sb] for i < n (then rescaled when r is not NULL; `at` is
// the flat index of y[0]).
static inline __attribute__((always_inline)) void binary_row(int op, int narrow, const void *a, int abits, long sa,
                                                            const void *b, int bbits, long sb, long n, int obits, void *y,
                                                            const then_rescale *r, long at) {
    int64_t ta[ZO_CHUNK], tb[ZO_CHUNK];
    const int ab = abits / 8, bb = bbits / 8, ob = obits / 8;
    for (long s = 0; s < n; s += ZO_CHUNK) {
        long c = n - s < ZO_CHUNK ? n - s : ZO_CHUNK;
        load_i64((const char *)a + s * sa * ab, abits, sa, c, ta);
        load_i64((const char *)b + s * sb * bb, bbits, sb, c, tb);
        if (narrow) {
            // Both operands of at most 32 bits: no 64-bit sum or product can overflow.
            if (op == 0) for (long i = 0; i < c; i++) ta[i] += tb[i];
            else if (op == 1) for (long i = 0; i < c; i++) ta[i] -= tb[i];
            else for (long i = 0; i < c; i++) ta[i] *= tb[i];
        } else {
            if (op == 0) for (long i = 0; i < c; i++) ta[i] = sat_add(ta[i], tb[i]);
            else if (op == 1) for (long i = 0; i < c; i++) ta[i] = sat_sub(ta[i], tb[i]);
            else for (long i = 0; i < c; i++) ta[i] = sat_mul(ta[i], tb[i]);
        }
        if (r) rescale_run(ta, c, at + s, r, obits, (char *)y + s * ob);
        else store_sat(ta, c, obits, (char *)y + s * ob);
    }
}

static inline __attribute__((always_inline)) void binary_body(int op, const void *a, int abits, const void *b, int bbits, int rank,
                                                             const long *shape, const long *sa, const long *sb, int obits, void *y,
                                                             const then_rescale *rs) {
    const int narrow = abits <= 32 && bbits <= 32;
    const long n = shape[rank - 1], ia = sa[rank - 1], ib = sb[rank - 1];
    long rows = 1;
    for (int d = 0; d < rank - 1; d++) rows *= shape[d];
    long idx[8] = {0}, oa = 0, ob = 0;
    const int ab = abits / 8, bb = bbits / 8, yb = obits / 8;
    for (long r = 0; r < rows; r++) {
        binary_row(op, narrow, (const char *)a + oa * ab, abits, ia, (const char *)b + ob * bb, bbits, ib, n, obits, (char *)y + r * n * yb,
                   rs, rs ? rs->first + r * n : 0);
        for (int d = rank - 2; d >= 0; d--) {
            idx[d]++; oa += sa[d]; ob += sb[d];
            if (idx[d] < shape[d]) break;
            oa -= sa[d] * shape[d]; ob -= sb[d] * shape[d]; idx[d] = 0;
        }
    }
}

#if defined(__x86_64__)
__attribute__((target("avx2")))
static void binary_avx2(int op, const void *a, int abits, const void *b, int bbits, int rank,
                        const long *shape, const long *sa, const long *sb, int obits, void *y, const then_rescale *rs) {
    binary_body(op, a, abits, b, bbits, rank, shape, sa, sb, obits, y, rs);
}
#endif

static void binary_portable(int op, const void *a, int abits, const void *b, int bbits, int rank,
                            const long *shape, const long *sa, const long *sb, int obits, void *y, const then_rescale *rs) {
    binary_body(op, a, abits, b, bbits, rank, shape, sa, sb, obits, y, rs);
}

#if defined(__x86_64__)
// The fused binary op a step graph runs most on 16-bit results (mul + rescale to i16, 4% of a
// one-thread step): a product of two contiguous 16- or 32-bit tensors, rescaled per tensor with
// a shift of 31 or more into 16 or 32 bits. vpmuldq makes each product exactly (both fit in 32 bits), and rescale4_wide's
// split product rescales it where |a·b| < 2^62, i.e. unless both are −2^31 (those four lanes go
// to rescale_one): the integers of binary_row, without its int64 buffers, the 64-bit multiply
// AVX2 lacks and the range scan (C harness, [64, 1536] i32 · i16 → i16: 1.2 → 0.87 ns an element).
static inline void mul_rescale_one(const void *a, int abits, const void *b, int bbits, long i, int64_t m, int s, int obits, void *y) {
    const int64_t p = (abits == 16 ? ((const int16_t *)a)[i] : ((const int32_t *)a)[i]) *
                      (int64_t)(bbits == 16 ? ((const int16_t *)b)[i] : ((const int32_t *)b)[i]);
    const int64_t v = rescale_one(p, m, s), LO = obits == 16 ? INT16_MIN : INT32_MIN, HI = obits == 16 ? INT16_MAX : INT32_MAX;
    if (obits == 16) ((int16_t *)y)[i] = (int16_t)(v < LO ? LO : v > HI ? HI : v);
    else ((int32_t *)y)[i] = (int32_t)(v < LO ? LO : v > HI ? HI : v);
}

#define MUL_RESCALE_WIDE(R4W, S4)                                                                              \
    const __m256i mm = _mm256_set1_epi64x(m), sw = _mm256_set1_epi64x(s - 31), top = _mm256_set1_epi64x((int64_t)1 << 62); \
    const __m256i half = _mm256_set1_epi64x((int64_t)1 << (s - 1)), swbias = _mm256_set1_epi64x((int64_t)((uint64_t)1 << 63 >> (s - 31))); \
    const __m256i lo = _mm256_set1_epi64x(obits == 16 ? INT16_MIN : INT32_MIN), hi = _mm256_set1_epi64x(obits == 16 ? INT16_MAX : INT32_MAX); \
    long i = 0;                                                                                                \
    for (; i + 4 <= count; i += 4) {                                                                           \
        const __m256i p = _mm256_mul_epi32(load4_i64(a, abits, i), load4_i64(b, bbits, i));                   \
        const __m256i at_top = _mm256_cmpeq_epi64(p, top);                                                     \
        if (abits == 32 && bbits == 32 && !_mm256_testz_si256(at_top, at_top)) {                               \
            for (long j = i; j < i + 4; j++) mul_rescale_one(a, abits, b, bbits, j, m, s, obits, y);           \
            continue;                                                                                          \
        }                                                                                                      \
        S4(R4W(p, mm, half, sw, swbias), lo, hi, obits, y, i);                                                 \
    }                                                                                                          \
    return i;

__attribute__((target("avx2")))
static long mul_rescale_wide_avx2(const void *a, int abits, const void *b, int bbits, long count, int64_t m, int s, int obits, void *y) {
    MUL_RESCALE_WIDE(rescale4_wide, store4)
}

__attribute__((target("avx2,avx512f,avx512vl")))
static long mul_rescale_wide_avx512(const void *a, int abits, const void *b, int bbits, long count, int64_t m, int s, int obits, void *y) {
    MUL_RESCALE_WIDE(rescale4_wide_avx512, store4_avx512)
}

// mul_rescale_wide's case: returns 1 when it has written y, else 0 (binary_body runs).
static int mul_rescale_contiguous(int op, const void *a, int abits, const void *b, int bbits, int rank, const long *shape,
                                  const long *sa, const long *sb, int obits, void *y, const then_rescale *rs) {
    if (op != 2 || !rs || rs->width != 1 || (abits != 16 && abits != 32) || (bbits != 16 && bbits != 32) || (obits != 16 && obits != 32)) return 0;
    const int64_t m = rs->m[0];
    const int s = rs->s[0];
    if (m <= -((int64_t)1 << 31) || m >= ((int64_t)1 << 31) || s < 31 || s > 62) return 0;
    long count = 1;
    for (int d = rank - 1; d >= 0; d--) {
        if (shape[d] > 1 && (sa[d] != count || sb[d] != count)) return 0;
        count *= shape[d];
    }
    long done = zo_has_vnni() ? mul_rescale_wide_avx512(a, abits, b, bbits, count, m, s, obits, y)
                              : mul_rescale_wide_avx2(a, abits, b, bbits, count, m, s, obits, y);
    for (; done < count; done++) mul_rescale_one(a, abits, b, bbits, done, m, s, obits, y);
    return 1;
}
#endif

static void binary(int op, const void *a, int abits, const void *b, int bbits, int rank,
                   const long *shape, const long *sa, const long *sb, int obits, void *y, const then_rescale *rs) {
#if defined(__x86_64__)
    if (zo_has_avx2() && mul_rescale_contiguous(op, a, abits, b, bbits, rank, shape, sa, sb, obits, y, rs)) return;
    if (zo_has_avx2()) { binary_avx2(op, a, abits, b, bbits, rank, shape, sa, sb, obits, y, rs); return; }
#endif
    binary_portable(op, a, abits, b, bbits, rank, shape, sa, sb, obits, y, rs);
}

void zo_binary(int op, const void *a, int abits, const void *b, int bbits, int rank,
               const long *shape, const long *sa, const long *sb, int obits, void *y) {
    binary(op, a, abits, b, bbits, rank, shape, sa, sb, obits, y, NULL);
}

void zo_binary_rescale(int op, const void *a, int abits, const void *b, int bbits, int rank,
                       const long *shape, const long *sa, const long *sb, const int64_t *m, const int32_t *s, long width,
                       long first, int out_bits, void *y) {
    const then_rescale rs = {m, s, width, first};
    binary(op, a, abits, b, bbits, rank, shape, sa, sb, out_bits, y, &rs);
}

// ---- Batched i16 matmul ------------------------------------------------------------------
// c[t][i][j] = sum_l a[t][i][l] * b[t][l][j] (or b[t][j][l] when transposed), each product exact
// in int32 and the sum in int64.

static inline __attribute__((always_inline)) void matmul_body(const int16_t *a, const int16_t *b, int batches, int m, int k, int n,
                                                             int transpose_b, int64_t *c) {
    for (int t = 0; t < batches; t++) {
        const int16_t *A = a + (size_t)t * m * k, *B = b + (size_t)t * k * n;
        int64_t *C = c + (size_t)t * m * n;
        for (int i = 0; i < m; i++) {
            const int16_t *ai = A + (size_t)i * k;
            int64_t *ci = C + (size_t)i * n;
            if (transpose_b) {
                for (int j = 0; j < n; j++) {
                    const int16_t *bj = B + (size_t)j * k;
                    int64_t acc = 0;
                    for (int l = 0; l < k; l++) acc += (int32_t)ai[l] * (int32_t)bj[l];
                    ci[j] = acc;
                }
            } else {
                for (int j = 0; j < n; j++) ci[j] = 0;
                for (int l = 0; l < k; l++) {
                    const int32_t x = ai[l];
                    const int16_t *bl = B + (size_t)l * n;
                    for (int j = 0; j < n; j++) ci[j] += x * (int32_t)bl[j];
                }
            }
        }
    }
}

#if defined(__x86_64__)
__attribute__((target("avx2")))
static void matmul_avx2(const int16_t *a, const int16_t *b, int batches, int m, int k, int n, int transpose_b, int64_t *c) {
    matmul_body(a, b, batches, m, k, n, transpose_b, c);
}
#endif

static void matmul_portable(const int16_t *a, const int16_t *b, int batches, int m, int k, int n, int transpose_b, int64_t *c) {
    matmul_body(a, b, batches, m, k, n, transpose_b, c);
}

void zo_matmul_i16(const int16_t *a, const int16_t *b, int batches, int m, int k, int n, int transpose_b, int64_t *c) {
#if defined(__x86_64__)
    if (zo_has_avx2()) { matmul_avx2(a, b, batches, m, k, n, transpose_b, c); return; }
#endif
    matmul_portable(a, b, batches, m, k, n, transpose_b, c);
}

// The int16 multiply-add peak: 10 vpmaddwd + vpaddd chains on registers. Each multiply takes a
// different pair of 5 inputs (identical pairs would be merged into one multiply by the compiler,
// and more chains would spill to the stack); the empty asm makes the compiler treat the inputs as
// changed each iteration, so nothing is hoisted.
#if defined(__x86_64__)
#define MADD_PEAK_LOOP(MADD)                                                                                   \
    __m256i a0 = _mm256_set1_epi16(3), a1 = _mm256_set1_epi16(4), a2 = _mm256_set1_epi16(5), a3 = _mm256_set1_epi16(6); \
    __m256i b = _mm256_set1_epi16(7);                                                                          \
    __m256i c0 = _mm256_setzero_si256(), c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0, c6 = c0, c7 = c0, c8 = c0, c9 = c0; \
    for (long i = 0; i < iterations; i++) {                                                                    \
        __asm__ volatile("" : "+x"(a0), "+x"(a1), "+x"(a2), "+x"(a3), "+x"(b));                               \
        c0 = MADD(c0, a0, b); c1 = MADD(c1, a1, b); c2 = MADD(c2, a2, b); c3 = MADD(c3, a3, b);                \
        c4 = MADD(c4, a0, a1); c5 = MADD(c5, a0, a2); c6 = MADD(c6, a0, a3); c7 = MADD(c7, a1, a2);            \
        c8 = MADD(c8, a1, a3); c9 = MADD(c9, a2, a3);                                                          \
    }                                                                                                          \
    __m256i t = _mm256_add_epi32(_mm256_add_epi32(_mm256_add_epi32(c0, c1), _mm256_add_epi32(c2, c3)),         \
                                 _mm256_add_epi32(_mm256_add_epi32(c4, c5), _mm256_add_epi32(c6, c7)));        \
    t = _mm256_add_epi32(t, _mm256_add_epi32(c8, c9));                                                         \
    volatile int sink = _mm256_extract_epi32(t, 0);                                                            \
    (void)sink;                                                                                                \
    return iterations * 10 * 16;

__attribute__((target("avx2")))
static long madd_peak_avx2(long iterations) { MADD_PEAK_LOOP(MADD_AVX2) }

// The same with vpdpwssd (multiply-add and accumulate in one instruction), where the block
// kernels use it.
__attribute__((target("avx2,avx512f,avx512vl,avx512vnni")))
static long madd_peak_vnni(long iterations) { MADD_PEAK_LOOP(MADD_VNNI) }
#endif

long zo_madd_peak(long iterations) {
#if defined(__x86_64__)
    if (zo_has_vnni()) return madd_peak_vnni(iterations);
    if (zo_has_avx2()) return madd_peak_avx2(iterations);
#endif
    (void)iterations;
    return 0;
}
