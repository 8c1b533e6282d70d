#include "hessian.h"

#include "qc_common.h"
#include "qc_par.h"

#include <cblas.h>

typedef struct {
    float       *H;
    const float *x;
    int          K, T, nt;  /* nt: tiles per side */
    int64_t      nrows;
} hess_ctx;

/* Task t -> the t-th upper tile (ti <= tj), row by row. */
static void tile_of(int t, int nt, int *ti, int *tj) {
    int i = 0;
    while (t >= nt - i) {
        t -= nt - i;
        i++;
    }
    *ti = i;
    *tj = i + t;
}

static void hess_task(void *user, int task) {
    const hess_ctx *c = user;
    int ti, tj;
    tile_of(task, c->nt, &ti, &tj);
    int K = c->K, i0 = ti * QC_HESSIAN_TILE, j0 = tj * QC_HESSIAN_TILE;
    int ni = K - i0 < QC_HESSIAN_TILE ? K - i0 : QC_HESSIAN_TILE;
    int nj = K - j0 < QC_HESSIAN_TILE ? K - j0 : QC_HESSIAN_TILE;
    float *Ht = c->H + (size_t)i0 * K + j0;
    for (int64_t r0 = 0; r0 < c->nrows; r0 += c->T) {
        int nr = c->nrows - r0 < c->T ? (int)(c->nrows - r0) : c->T;
        const float *xs = c->x + (size_t)r0 * K;
        if (ti == tj)
            cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, ni, nr, 1.0f, xs + i0, K, 1.0f, Ht, K);
        else
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, ni, nj, nr, 1.0f, xs + i0, K, xs + j0, K, 1.0f, Ht, K);
    }
}

void qc_hessian_accumulate(float *H, int K, const float *x, int64_t nrows, int T) {
    QC_ASSERT(K > 0 && T > 0 && nrows >= 0);
    if (nrows == 0) return;
    hess_ctx c = {.H = H, .x = x, .K = K, .T = T, .nt = (K + QC_HESSIAN_TILE - 1) / QC_HESSIAN_TILE, .nrows = nrows};
    qc_par_for_work(c.nt * (c.nt + 1) / 2, hess_task, &c, (double)K * K * (double)nrows);
}
