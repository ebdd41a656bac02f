// Strided copies: the data movement of transpose, slice and concat, as runs of memcpy.
#include "ckernels.h"
#include <string.h>

#define MAX_RANK 8

// Copies one element of `elem` bytes (1, 2, 4 or 8) per step along a strided inner axis.
static void copy_strided_run(const char *s, char *d, long n, long ss, long ds, int elem) {
    switch (elem) {
    case 1: for (long i = 0; i < n; i++) d[i * ds] = s[i * ss]; break;
    case 2: for (long i = 0; i < n; i++) ((int16_t *)d)[i * ds] = ((const int16_t *)s)[i * ss]; break;
    case 4: for (long i = 0; i < n; i++) ((int32_t *)d)[i * ds] = ((const int32_t *)s)[i * ss]; break;
    default: for (long i = 0; i < n; i++) ((int64_t *)d)[i * ds] = ((const int64_t *)s)[i * ss]; break;
    }
}

void zo_strided_copy(const void *src, void *dst, int elem, int rank, const long *shape, const long *src_stride, const long *dst_stride) {
    // Drop axes of extent 1 and merge an axis into the next inner one where both sides are
    // contiguous across them, so the inner run is as long as it can be.
    long n[MAX_RANK], ss[MAX_RANK], ds[MAX_RANK];
    int r = 0;
    for (int a = 0; a < rank; a++) {
        if (shape[a] == 0) return;
        if (shape[a] == 1) continue;
        if (r >= MAX_RANK) return;
        n[r] = shape[a]; ss[r] = src_stride[a]; ds[r] = dst_stride[a]; r++;
    }
    for (int a = r - 1; a > 0; a--) {
        if (ss[a - 1] == n[a] * ss[a] && ds[a - 1] == n[a] * ds[a]) {
            n[a - 1] *= n[a]; ss[a - 1] = ss[a]; ds[a - 1] = ds[a];
            for (int b = a; b < r - 1; b++) { n[b] = n[b + 1]; ss[b] = ss[b + 1]; ds[b] = ds[b + 1]; }
            r--;
        }
    }
    const char *s = src;
    char *d = dst;
    if (r == 0) { memcpy(d, s, (size_t)elem); return; }
    const int in = r - 1;
    const int contiguous = ss[in] == 1 && ds[in] == 1;
    long idx[MAX_RANK] = {0}, so = 0, dof = 0;
    for (;;) {
        if (contiguous) memcpy(d + dof * elem, s + so * elem, (size_t)(n[in] * elem));
        else copy_strided_run(s + so * elem, d + dof * elem, n[in], ss[in], ds[in], elem);
        int a = in - 1;
        for (; a >= 0; a--) {
            idx[a]++; so += ss[a]; dof += ds[a];
            if (idx[a] < n[a]) break;
            so -= ss[a] * n[a]; dof -= ds[a] * n[a]; idx[a] = 0;
        }
        if (a < 0) return;
    }
}
