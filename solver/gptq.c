#include "quant.h"

#include "qc_par.h"

#include <cblas.h>
#include <lapacke.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

qc_gptq_opts qc_gptq_default_opts(void) {
    return (qc_gptq_opts){.bits = 4, .group_size = 128, .sym = true, .damp = 0.01, .damp_step = 0.01,
                          .blocksize = 128, .ref_group_quirk = true};
}

/* The reference's range of x[0], x[stride], ...: [min(0, min x), max(0, max x)], symmetric when sym,
 * [-1, 1] when both ends are 0. */
static void quant_range(const float *x, int n, int stride, bool sym, float *lo, float *hi) {
    float xmin = 0.0f, xmax = 0.0f;
    for (int i = 0; i < n; i++) {
        float v = x[(size_t)i * stride];
        xmin = v < xmin ? v : xmin;
        xmax = v > xmax ? v : xmax;
    }
    if (sym) {
        xmax = fabsf(xmin) > xmax ? fabsf(xmin) : xmax;
        if (xmin < 0.0f) xmin = -xmax;
    }
    if (xmin == 0.0f && xmax == 0.0f) {
        xmin = -1.0f;
        xmax = 1.0f;
    }
    *lo = xmin;
    *hi = xmax;
}

void qc_quant_params(const float *x, int n, int stride, int bits, bool sym, float *scale, float *zero) {
    int maxq = (1 << bits) - 1;
    float xmin, xmax;
    quant_range(x, n, stride, sym, &xmin, &xmax);
    float s = (xmax - xmin) / (float)maxq;
    *scale = s;
    *zero = sym ? (float)((maxq + 1) / 2) : rintf(-xmin / s);
}

void qc_quant_params_mse(const float *x, int n, int stride, int bits, bool sym, float *scale, float *zero) {
    int maxq = (1 << bits) - 1;
    float xmin, xmax;
    quant_range(x, n, stride, sym, &xmin, &xmax);
    float s = (xmax - xmin) / (float)maxq, z = sym ? (float)((maxq + 1) / 2) : rintf(-xmin / s);
    double best = INFINITY;
    for (int i = 0; i < QC_MSE_MAXSHRINK; i++) {
        float p = (float)(1.0 - (double)i / QC_MSE_GRID); /* torch: the Python float enters as fp32 */
        float lo = p * xmin, hi = p * xmax;
        float s1 = (hi - lo) / (float)maxq, z1 = sym ? (float)((maxq + 1) / 2) : rintf(-lo / s1);
        double err = 0.0;
        for (int k = 0; k < n; k++) {
            float v = x[(size_t)k * stride];
            float q = rintf(v / s1) + z1;
            q = q < 0.0f ? 0.0f : q > (float)maxq ? (float)maxq : q;
            err += powf(fabsf(s1 * (q - z1) - v), (float)QC_MSE_NORM);
        }
        if (err < best) {
            best = err;
            s = s1;
            z = z1;
        }
    }
    *scale = s;
    *zero = z;
}

/* The params the options ask for. */
static void group_params(const qc_gptq_opts *o, const float *x, int n, float *scale, float *zero) {
    if (o->mse) qc_quant_params_mse(x, n, 1, o->bits, o->sym, scale, zero);
    else qc_quant_params(x, n, 1, o->bits, o->sym, scale, zero);
}

static float fp16_round(float x) { return qc_fp16_to_f32(qc_f32_to_fp16(x)); }

qc_status qc_gptq_check_args(int N, int K, const qc_gptq_opts *o, const qc_qlinear *q) {
    if (o->bits != 2 && o->bits != 3 && o->bits != 4 && o->bits != 8)
        return qc_fail(QC_ERR_ARG, "gptq: bits must be 2, 3, 4 or 8 (got %d)", o->bits);
    if (o->group_size != -1 && (o->group_size <= 0 || K % o->group_size != 0))
        return qc_fail(QC_ERR_ARG, "gptq: group size %d does not divide in_features %d", o->group_size, K);
    if (!(o->damp > 0.0 && o->damp < 1.0)) return qc_fail(QC_ERR_ARG, "gptq: damp must be in (0, 1), got %g", o->damp);
    if (o->blocksize < 1) return qc_fail(QC_ERR_ARG, "gptq: blocksize must be positive");
    int G = o->group_size == -1 ? 1 : K / o->group_size;
    if (q->N != N || q->K != K || q->bits != o->bits || q->n_groups != G || q->sym != o->sym)
        return qc_fail(QC_ERR_ARG, "gptq: output layer (%dx%d, %d bits, %d groups) does not match %dx%d, %d bits, "
                       "%d groups", q->N, q->K, q->bits, q->n_groups, N, K, o->bits, G);
    return QC_OK;
}

/* Stable descending argsort of diag(H) (spec D.3 step 4: stable for reproducibility). */
static const float *g_sort_key;
static int cmp_desc(const void *a, const void *b) {
    int i = *(const int *)a, j = *(const int *)b;
    float x = g_sort_key[i], y = g_sort_key[j];
    if (x != y) return x > y ? -1 : 1;
    return i - j;
}

static void act_order_perm(const float *H, int K, int *perm) {
    float *d = malloc(sizeof(float) * (size_t)K);
    QC_ASSERT(d);
    for (int k = 0; k < K; k++) {
        d[k] = H[(size_t)k * K + k];
        perm[k] = k;
    }
    g_sort_key = d; /* qsort with index tie-break is stable */
    qsort(perm, (size_t)K, sizeof(int), cmp_desc);
    g_sort_key = NULL;
    free(d);
}

/* Steps 1-3 of D.3, shared by both solvers: row params when gs == -1 (before the dead-column fix),
 * dead columns, static group params. Params go to q->scales/zeros (group-major [G, N]). */
static void prepare(float *W, float *H, int N, int K, const qc_gptq_opts *o, qc_qlinear *q, float *zf,
                    qc_gptq_stats *st) {
    if (o->group_size == -1) {
        for (int n = 0; n < N; n++) group_params(o, W + (size_t)n * K, K, &q->scales[n], &zf[n]);
    }
    for (int k = 0; k < K; k++) {
        if (H[(size_t)k * K + k] == 0.0f) {
            H[(size_t)k * K + k] = 1.0f;
            for (int n = 0; n < N; n++) W[(size_t)n * K + k] = 0.0f;
            st->dead_cols++;
        }
    }
    if (o->static_groups && o->group_size > 0) {
        int gs = o->group_size;
        for (int g = 0; g < K / gs; g++)
            for (int n = 0; n < N; n++)
                group_params(o, W + (size_t)n * K + (size_t)g * gs, gs, &q->scales[(size_t)g * N + n],
                             &zf[(size_t)g * N + n]);
    }
}

/* zf [G, N]: the zero points as the solver used them (floats holding integers). */
static void finish_zeros(qc_qlinear *q, const float *zf) {
    size_t n = (size_t)q->n_groups * q->N;
    for (size_t i = 0; i < n; i++) q->zeros[i] = (int32_t)zf[i];
}

static void set_g_idx(qc_qlinear *q, const int *perm, const qc_gptq_opts *o) {
    int K = q->K, gs = o->group_size;
    for (int j = 0; j < K; j++) {
        if (gs == -1) q->g_idx[j] = 0;
        else if (o->act_order && !o->static_groups) q->g_idx[perm[j]] = j / gs;
        else q->g_idx[j] = j / gs;
    }
}

/* Output features per task of the blocked solver. Rows of W are independent in GPTQ (each has its own
 * quantization params and error feedback through the shared U), so a task runs the whole column sweep
 * for its rows; its lazy-update sgemm has a shape set by (K, N) alone, so the bits do not depend on
 * the thread count. */
#define GPTQ_ROWS 128

/* A NaN or Inf in H (from non-finite activations) or W would reach LAPACK as "argument 4"; say what it is. */
static qc_status check_finite(const float *W, const float *H, int N, int K) {
    for (size_t i = 0; i < (size_t)K * K; i++)
        if (!isfinite(H[i]))
            return qc_fail(QC_ERR_NUMERIC, "gptq: non-finite Hessian (non-finite calibration activations?): "
                           "H[%zu][%zu] = %g", i / (size_t)K, i % (size_t)K, (double)H[i]);
    for (size_t i = 0; i < (size_t)N * K; i++)
        if (!isfinite(W[i]))
            return qc_fail(QC_ERR_NUMERIC, "gptq: non-finite weight W[%zu][%zu] = %g", i / (size_t)K, i % (size_t)K,
                           (double)W[i]);
    return QC_OK;
}

/* The arguments of LAPACKE_spotrf / LAPACKE_spotri, by position. */
static const char *lapack_arg_name(int arg) {
    static const char *const names[] = {"", "matrix_layout", "uplo", "n", "a", "lda"};
    return arg >= 1 && arg <= 5 ? names[arg] : "?";
}

/* H (K x K, symmetric, row-major) -> U (upper, row-major) with (H + damp I)^-1 = U^T U, damping raised
 * by damp_step after each failure. Hbak holds the undamped H. Uses the symmetric storage trick: a
 * row-major lower triangle is LAPACK's column-major upper one. OpenBLAS runs these single-threaded
 * (qc_par), where their bits depend only on K. */
static qc_status inverse_factor(float *H, const float *Hbak, int K, const qc_gptq_opts *o, qc_gptq_stats *st) {
    double mean = 0.0;
    for (int k = 0; k < K; k++) mean += Hbak[(size_t)k * K + k];
    mean /= K;
    double damp = o->damp;
    for (;;) {
        memcpy(H, Hbak, sizeof(float) * (size_t)K * K);
        for (int k = 0; k < K; k++) H[(size_t)k * K + k] = (float)(Hbak[(size_t)k * K + k] + damp * mean);
        const char *fn = "spotrf";
        lapack_int info = LAPACKE_spotrf(LAPACK_COL_MAJOR, 'U', K, H, K); /* row-major lower L: H = L L^T */
        if (info == 0) {
            fn = "spotri";
            info = LAPACKE_spotri(LAPACK_COL_MAJOR, 'U', K, H, K); /* inverse in row-major lower */
        }
        if (info == 0) {
            for (int i = 0; i < K; i++)
                for (int j = 0; j < i; j++) H[(size_t)j * K + i] = H[(size_t)i * K + j];
            fn = "spotrf of the inverse";
            info = LAPACKE_spotrf(LAPACK_COL_MAJOR, 'L', K, H, K); /* row-major upper U: Hinv = U^T U */
        }
        if (info == 0) {
            st->damp_used = damp;
            return QC_OK;
        }
        if (info < 0)
            return qc_fail(QC_ERR_NUMERIC, "gptq: LAPACK %s rejected argument %d (%s) of the %dx%d Hessian at damp %.4f "
                           "(non-finite values after damping?)", fn, (int)-info, lapack_arg_name((int)-info), K, K,
                           damp);
        st->retries++;
        double next = damp + (o->damp_step > 0 ? o->damp_step : 0.01);
        if (next >= 1.0)
            return qc_fail(QC_ERR_NUMERIC, "gptq: Cholesky failed at every damping up to %.3f (Hessian not positive "
                           "definite: too few or degenerate calibration inputs?)", damp);
        QC_LOGW("gptq: Cholesky failed (leading minor %d) at damp %.4f; retrying with %.4f", (int)info, damp, next);
        damp = next;
    }
}

/* The column sweep of D.3 for the rows [n0, n1) of W, i.e. columns [n0, n1) of Wt. Shared arrays
 * are indexed by n (Wt, Err, Orig, cs, cz, zf, q->scales [G, N]) or by row (q->codes), so tasks
 * touch disjoint parts of them; U is read only. */
typedef struct {
    const float *U;       /* [K, K] upper: Hinv = U^T U (processing order) */
    float       *Wt;      /* [K, N] */
    float       *Err;     /* [B, N] */
    float       *Orig;    /* [B, N] */
    float       *cs, *cz; /* [N] current group params */
    float       *zf;      /* [G, N] */
    float       *rowbuf;  /* [n_tasks, gs] */
    double      *loss;    /* [n_tasks] */
    const int   *perm;
    const qc_gptq_opts *o;
    qc_qlinear  *q;
    int          N, K;
} gptq_ctx;

static void gptq_task(void *user, int task) {
    const gptq_ctx *g = user;
    const qc_gptq_opts *o = g->o;
    qc_qlinear *q = g->q;
    const float *U = g->U;
    int N = g->N, K = g->K, maxq = (1 << o->bits) - 1, gs = o->group_size, B = o->blocksize;
    int n0 = task * GPTQ_ROWS, n1 = N - n0 < GPTQ_ROWS ? N : n0 + GPTQ_ROWS, nn = n1 - n0;
    float *Wt = g->Wt, *Err = g->Err, *Orig = g->Orig, *cs = g->cs, *cz = g->cz, *zf = g->zf;
    float *rowbuf = gs > 0 ? g->rowbuf + (size_t)task * gs : NULL;
    double loss = 0.0;
    for (int i1 = 0; i1 < K; i1 += B) {
        int i2 = i1 + B < K ? i1 + B : K, nb = i2 - i1;
        if (gs > 0 && !o->static_groups && o->ref_group_quirk)
            for (int r = 0; r < nb; r++)
                memcpy(Orig + (size_t)r * N + n0, Wt + (size_t)(i1 + r) * N + n0, sizeof(float) * (size_t)nn);
        for (int i = 0; i < nb; i++) {
            int c = i1 + i;
            float d = U[(size_t)c * K + c];
            const float *ps, *pz;
            if (gs == -1) {
                ps = q->scales;
                pz = zf;
            } else if (o->static_groups) {
                int gi = g->perm[c] / gs;
                ps = q->scales + (size_t)gi * N;
                pz = zf + (size_t)gi * N;
            } else {
                if (c % gs == 0) {
                    int gi = c / gs;
                    for (int n = n0; n < n1; n++) {
                        for (int k = 0; k < gs; k++) {
                            int col = c + k;
                            rowbuf[k] = (o->ref_group_quirk && col < i2) ? Orig[(size_t)(col - i1) * N + n]
                                                                         : Wt[(size_t)col * N + n];
                        }
                        group_params(o, rowbuf, gs, &cs[n], &cz[n]);
                        if (o->fp16_scales) cs[n] = fp16_round(cs[n]);
                        q->scales[(size_t)gi * N + n] = cs[n];
                        zf[(size_t)gi * N + n] = cz[n];
                    }
                }
                ps = cs;
                pz = cz;
            }
            float *w = Wt + (size_t)c * N, *e = Err + (size_t)i * N;
            int orig_col = g->perm[c];
            for (int n = n0; n < n1; n++) {
                int code = qc_quant_code(w[n], ps[n], pz[n], maxq);
                float qv = ps[n] * ((float)code - pz[n]);
                float diff = w[n] - qv;
                loss += (double)diff * diff / ((double)d * d) / 2.0;
                e[n] = diff / d;
                w[n] = qv;
                q->codes[(size_t)n * K + orig_col] = (uint8_t)code;
            }
            /* the in-block update, element by element (no BLAS: its bits could depend on alignment) */
            for (int j = c + 1; j < i2; j++) {
                float u = U[(size_t)c * K + j], *wj = Wt + (size_t)j * N;
                for (int n = n0; n < n1; n++) wj[n] -= u * e[n];
            }
        }
        if (i2 < K)
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, K - i2, nn, nb, -1.0f, U + (size_t)i1 * K + i2, K,
                        Err + n0, N, 1.0f, Wt + (size_t)i2 * N + n0, N);
    }
    g->loss[task] = loss;
}

qc_status qc_gptq_quantize(float *W, float *H, int N, int K, const qc_gptq_opts *o, qc_qlinear *q, qc_gptq_stats *st) {
    double t0 = qc_time_now();
    memset(st, 0, sizeof *st);
    qc_status s = qc_gptq_check_args(N, K, o, q);
    if (s) return s;
    if ((s = check_finite(W, H, N, K))) return s;
    (void)qc_par_threads(); /* starts the pool: OpenBLAS single-threaded before the first LAPACK call */
    int gs = o->group_size, B = o->blocksize, n_tasks = (N + GPTQ_ROWS - 1) / GPTQ_ROWS;
    float *zf = malloc(sizeof(float) * (size_t)q->n_groups * N);
    if (!zf) return qc_fail(QC_ERR_NOMEM, "gptq: out of memory");
    prepare(W, H, N, K, o, q, zf, st);

    int *perm = malloc(sizeof(int) * (size_t)K);
    float *Hbak = malloc(sizeof(float) * (size_t)K * K);
    float *Wt = malloc(sizeof(float) * (size_t)K * N);       /* [K, N]: column j of W (processing order) */
    float *Err = malloc(sizeof(float) * (size_t)B * N);      /* [B, N] */
    float *Orig = malloc(sizeof(float) * (size_t)B * N);     /* block copy for the reference quirk */
    float *cs = malloc(sizeof(float) * (size_t)N), *cz = malloc(sizeof(float) * (size_t)N);
    float *rowbuf = malloc(sizeof(float) * (size_t)n_tasks * (gs > 0 ? gs : 1));
    double *loss = malloc(sizeof(double) * (size_t)n_tasks);
    if (!perm || !Hbak || !Wt || !Err || !Orig || !cs || !cz || !rowbuf || !loss) {
        s = qc_fail(QC_ERR_NOMEM, "gptq: out of memory for a %dx%d layer", N, K);
        goto out;
    }
    if (o->act_order) act_order_perm(H, K, perm);
    else for (int k = 0; k < K; k++) perm[k] = k;
    /* permuted H into Hbak (both axes), W transposed into processing order */
    for (int i = 0; i < K; i++) {
        const float *src = H + (size_t)perm[i] * K;
        float *dst = Hbak + (size_t)i * K;
        for (int j = 0; j < K; j++) dst[j] = src[perm[j]];
    }
    for (int j = 0; j < K; j++)
        for (int n = 0; n < N; n++) Wt[(size_t)j * N + n] = W[(size_t)n * K + perm[j]];
    double tf = qc_time_now();
    if ((s = inverse_factor(H, Hbak, K, o, st))) goto out;
    st->t_factor = qc_time_now() - tf;
    tf = qc_time_now();
    gptq_ctx g = {.U = H, .Wt = Wt, .Err = Err, .Orig = Orig, .cs = cs, .cz = cz, .zf = zf, .rowbuf = rowbuf,
                  .loss = loss, .perm = perm, .o = o, .q = q, .N = N, .K = K};
    qc_par_for_work(n_tasks, gptq_task, &g, (double)N * K * K);
    st->t_sweep = qc_time_now() - tf;
    for (int t = 0; t < n_tasks; t++) st->loss += loss[t]; /* in task order */
    for (int j = 0; j < K; j++)
        for (int n = 0; n < N; n++) W[(size_t)n * K + perm[j]] = Wt[(size_t)j * N + n];
    finish_zeros(q, zf);
    set_g_idx(q, perm, o);
out:
    free(zf);
    free(perm);
    free(Hbak);
    free(Wt);
    free(Err);
    free(Orig);
    free(cs);
    free(cz);
    free(rowbuf);
    free(loss);
    st->seconds = qc_time_now() - t0;
    return s;
}

/* ---- the plain twin ---- */

/* Lower Cholesky in place (row-major), plain loops. false if not positive definite. */
static bool chol_lower(double *A, int K) {
    for (int j = 0; j < K; j++) {
        double s = A[(size_t)j * K + j];
        for (int k = 0; k < j; k++) s -= A[(size_t)j * K + k] * A[(size_t)j * K + k];
        if (!(s > 0.0)) return false;
        double d = sqrt(s);
        A[(size_t)j * K + j] = d;
        for (int i = j + 1; i < K; i++) {
            double t = A[(size_t)i * K + j];
            for (int k = 0; k < j; k++) t -= A[(size_t)i * K + k] * A[(size_t)j * K + k];
            A[(size_t)i * K + j] = t / d;
        }
        for (int i = 0; i < j; i++) A[(size_t)i * K + j] = 0.0;
    }
    return true;
}

qc_status qc_gptq_quantize_ref(float *W, float *H, int N, int K, const qc_gptq_opts *o, qc_qlinear *q,
                               qc_gptq_stats *st) {
    double t0 = qc_time_now();
    memset(st, 0, sizeof *st);
    qc_status s = qc_gptq_check_args(N, K, o, q);
    if (s) return s;
    if ((s = check_finite(W, H, N, K))) return s;
    int maxq = (1 << o->bits) - 1, gs = o->group_size;
    float *zf = malloc(sizeof(float) * (size_t)q->n_groups * N);
    if (!zf) return qc_fail(QC_ERR_NOMEM, "gptq: out of memory");
    prepare(W, H, N, K, o, q, zf, st);
    int *perm = malloc(sizeof(int) * (size_t)K);
    double *A = malloc(sizeof(double) * (size_t)K * K), *Li = malloc(sizeof(double) * (size_t)K * K);
    float *Wp = malloc(sizeof(float) * (size_t)N * K);
    float *cs = malloc(sizeof(float) * (size_t)N), *cz = malloc(sizeof(float) * (size_t)N);
    float *e = malloc(sizeof(float) * (size_t)N);
    if (!perm || !A || !Li || !Wp || !cs || !cz || !e) {
        s = qc_fail(QC_ERR_NOMEM, "gptq: out of memory");
        goto out;
    }
    if (o->act_order) act_order_perm(H, K, perm);
    else for (int k = 0; k < K; k++) perm[k] = k;
    for (int n = 0; n < N; n++)
        for (int j = 0; j < K; j++) Wp[(size_t)n * K + j] = W[(size_t)n * K + perm[j]];
    double mean = 0.0;
    for (int k = 0; k < K; k++) mean += H[(size_t)k * K + k];
    mean /= K;
    double damp = o->damp;
    for (;;) {
        for (int i = 0; i < K; i++)
            for (int j = 0; j < K; j++)
                A[(size_t)i * K + j] = H[(size_t)perm[i] * K + perm[j]] + (i == j ? damp * mean : 0.0);
        bool ok = chol_lower(A, K); /* H = L L^T */
        if (ok) {
            /* Li = L^-1 by forward substitution; Hinv = Li^T Li; then Hinv = U^T U, U = chol_lower(Hinv)^T */
            for (int c = 0; c < K; c++)
                for (int i = 0; i < K; i++) {
                    double t = i == c ? 1.0 : 0.0;
                    for (int k = 0; k < i; k++) t -= A[(size_t)i * K + k] * Li[(size_t)k * K + c];
                    Li[(size_t)i * K + c] = t / A[(size_t)i * K + i];
                }
            for (int i = 0; i < K; i++)
                for (int j = 0; j < K; j++) {
                    double t = 0.0;
                    for (int k = 0; k < K; k++) t += Li[(size_t)k * K + i] * Li[(size_t)k * K + j];
                    A[(size_t)i * K + j] = t;
                }
            ok = chol_lower(A, K);
        }
        if (ok) break;
        st->retries++;
        damp += o->damp_step > 0 ? o->damp_step : 0.01;
        if (damp >= 1.0) {
            s = qc_fail(QC_ERR_NUMERIC, "gptq (reference): Cholesky failed at every damping below 1");
            goto out;
        }
    }
    st->damp_used = damp;
    /* U[c][j] = A[j][c] */
    for (int c = 0; c < K; c++) {
        float d = (float)A[(size_t)c * K + c];
        if (gs == -1) {
            for (int n = 0; n < N; n++) {
                cs[n] = q->scales[n];
                cz[n] = zf[n];
            }
        } else if (o->static_groups) {
            int g = perm[c] / gs;
            for (int n = 0; n < N; n++) {
                cs[n] = q->scales[(size_t)g * N + n];
                cz[n] = zf[(size_t)g * N + n];
            }
        } else if (c % gs == 0) {
            int g = c / gs;
            for (int n = 0; n < N; n++) {
                group_params(o, Wp + (size_t)n * K + c, gs, &cs[n], &cz[n]);
                if (o->fp16_scales) cs[n] = fp16_round(cs[n]);
                q->scales[(size_t)g * N + n] = cs[n];
                zf[(size_t)g * N + n] = cz[n];
            }
        }
        for (int n = 0; n < N; n++) {
            float w = Wp[(size_t)n * K + c];
            int code = qc_quant_code(w, cs[n], cz[n], maxq);
            float qv = cs[n] * ((float)code - cz[n]);
            st->loss += (double)(w - qv) * (w - qv) / ((double)d * d) / 2.0;
            e[n] = (w - qv) / d;
            Wp[(size_t)n * K + c] = qv;
            q->codes[(size_t)n * K + perm[c]] = (uint8_t)code;
        }
        for (int n = 0; n < N; n++)
            for (int j = c + 1; j < K; j++) Wp[(size_t)n * K + j] -= e[n] * (float)A[(size_t)j * K + c];
    }
    for (int n = 0; n < N; n++)
        for (int j = 0; j < K; j++) W[(size_t)n * K + perm[j]] = Wp[(size_t)n * K + j];
    finish_zeros(q, zf);
    set_g_idx(q, perm, o);
out:
    free(zf);
    free(perm);
    free(A);
    free(Li);
    free(Wp);
    free(cs);
    free(cz);
    free(e);
    st->seconds = qc_time_now() - t0;
    return s;
}

qc_status qc_rtn_quantize(float *W, int N, int K, int bits, int group_size, bool sym, qc_qlinear *q) {
    qc_gptq_opts o = qc_gptq_default_opts();
    o.bits = bits;
    o.group_size = group_size;
    o.sym = sym;
    return qc_rtn_quantize_opts(W, N, K, &o, q);
}

qc_status qc_rtn_quantize_opts(float *W, int N, int K, const qc_gptq_opts *opts, qc_qlinear *q) {
    qc_gptq_opts o = qc_gptq_default_opts();
    o.bits = opts->bits;
    o.group_size = opts->group_size;
    o.sym = opts->sym;
    o.mse = opts->mse;
    qc_status s = qc_gptq_check_args(N, K, &o, q);
    if (s) return s;
    int gs = o.group_size == -1 ? K : o.group_size, maxq = (1 << o.bits) - 1;
    for (int n = 0; n < N; n++) {
        float *w = W + (size_t)n * K;
        for (int g = 0; g < K / gs; g++) {
            float sc, zf;
            group_params(&o, w + (size_t)g * gs, gs, &sc, &zf);
            q->scales[(size_t)g * N + n] = sc;
            q->zeros[(size_t)g * N + n] = (int32_t)zf;
            for (int k = g * gs; k < (g + 1) * gs; k++) {
                int code = qc_quant_code(w[k], sc, zf, maxq);
                q->codes[(size_t)n * K + k] = (uint8_t)code;
                w[k] = sc * ((float)code - zf);
            }
        }
    }
    for (int k = 0; k < K; k++) q->g_idx[k] = k / gs;
    return QC_OK;
}
