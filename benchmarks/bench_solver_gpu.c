/* bench_solver_gpu D FF QD KVD [ACT_ORDER]: the GPU solve phase of one decoder layer at real shapes, step by
 * step, as calib/pipeline_gpu.c runs it (the layer's seven linears in true-sequential order, q/k/v sharing one
 * Hessian, gate/up another): per linear the weight conversion and the reference error, GPTQ w4g128 (its
 * factorisation and sweep apart, device times), the error report and the pack with its download.
 *
 *   bench_solver_gpu 4096 14336 4096 1024      Llama-3.1-8B
 *   bench_solver_gpu 8192 28672 8192 1024      Llama-2-70B
 *
 * Inputs are random: W ~ N(0, 0.02), H = 2/R X^T X for fp16 X [R, K] with R = K + 1024 rows whose columns
 * have spread-out scales (what act-order sorts by). Speed only; qc_gptq_quantize_gpu's results are checked
 * in tests/test_gpu_solver.c. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpu_forward.h"
#include "qc_gpu.h"
#include "quant_gpu.h"

static uint64_t rng = 88172645463325252ull;
static double uni(void) { /* xorshift64, (0, 1) */
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return ((rng >> 11) + 0.5) / 9007199254740992.0;
}
static float gauss(void) { return (float)(sqrt(-2.0 * log(uni())) * cos(6.283185307179586 * uni())); }

#define CHECK(x)                                                                                                        \
    do {                                                                                                                \
        if ((x) != QC_OK) {                                                                                             \
            fprintf(stderr, "bench_solver_gpu: %s (line %d)\n", qc_last_error(), __LINE__);                         \
            exit(1);                                                                                                    \
        }                                                                                                               \
    } while (0)

/* device H [K, K] from random fp16 rows */
static float *make_h(qc_gpu *g, int K) {
    int R = K + 1024;
    uint16_t *x = malloc((size_t)R * K * 2);
    float *cs = malloc(sizeof(float) * (size_t)K);
    for (int k = 0; k < K; k++) cs[k] = (float)exp(1.5 * gauss());
    for (size_t i = 0; i < (size_t)R * K; i++) x[i] = qc_f32_to_fp16(gauss() * cs[i % K]);
    uint16_t *xd;
    float *H;
    CHECK(qc_gpu_alloc(g, (void **)&xd, (size_t)R * K * 2, "X"));
    CHECK(qc_gpu_alloc(g, (void **)&H, sizeof(float) * (size_t)K * K, "H"));
    CHECK(qc_gpu_upload(g, xd, x, (size_t)R * K * 2));
    CHECK(qc_gpu_memset(g, H, 0, sizeof(float) * (size_t)K * K));
    CHECK(qc_gpu_hessian_add(g, xd, R, K, H));
    CHECK(qc_gpu_hessian_finish(g, H, K, 2.0f / R));
    CHECK(qc_gpu_sync(g));
    qc_gpu_free(g, xd);
    free(x);
    free(cs);
    return H;
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: bench_solver_gpu D FF QD KVD [ACT_ORDER]\n");
        return 2;
    }
    int d = atoi(argv[1]), ff = atoi(argv[2]), qd = atoi(argv[3]), kvd = atoi(argv[4]);
    bool act = argc > 5 && atoi(argv[5]);
    qc_gpu *g;
    CHECK(qc_gpu_open(0, &g));
    printf("device: %s\nlayer: d %d, ff %d, q %d, kv %d, GPTQ w4g128 sym%s\n", qc_gpu_describe(g), d, ff, qd, kvd,
           act ? " act-order" : "");
    struct { const char *name; int N, K, h; } lin[7] = {
        {"q_proj", qd, d, 0}, {"k_proj", kvd, d, 0}, {"v_proj", kvd, d, 0}, {"o_proj", d, qd, 1},
        {"gate_proj", ff, d, 2}, {"up_proj", ff, d, 2}, {"down_proj", d, ff, 3}};
    int hk[4] = {d, qd, d, ff};
    int maxN = 0, maxK = 0;
    size_t maxNK = 0;
    for (int i = 0; i < 7; i++) {
        maxN = lin[i].N > maxN ? lin[i].N : maxN;
        maxK = lin[i].K > maxK ? lin[i].K : maxK;
        maxNK = (size_t)lin[i].N * lin[i].K > maxNK ? (size_t)lin[i].N * lin[i].K : maxNK;
    }
    float *H[4];
    for (int h = 0; h < 4; h++) H[h] = make_h(g, hk[h]);
    qc_gpu_solver *s;
    CHECK(qc_gpu_solver_create_nk(g, maxN, maxK, maxNK, &s));
    float *W32, *Wo, *Hw;
    uint16_t *W16;
    CHECK(qc_gpu_alloc(g, (void **)&W32, 4 * maxNK, "W32"));
    CHECK(qc_gpu_alloc(g, (void **)&Wo, 4 * maxNK, "Wo"));
    CHECK(qc_gpu_alloc(g, (void **)&W16, 2 * maxNK, "W16"));
    CHECK(qc_gpu_alloc(g, (void **)&Hw, 4 * (size_t)maxK * maxK, "Hw"));
    uint16_t *wh = malloc(2 * maxNK); /* one random weight, each linear its leading N x K */
    for (size_t j = 0; j < maxNK; j++) wh[j] = qc_f32_to_fp16(0.02f * gauss());
    qc_gptq_opts o = qc_gptq_default_opts();
    o.act_order = act;
    /* three ways, side by side: the plain factorisation and sweep kernel for every linear (the old solver),
     * the fast ones for every linear, the fast ones with one factorisation per shared H (the pipeline) */
    const char *mode_name[3] = {"plain factor and sweep, every linear", "fast factor and sweep, every linear",
                                "fast factor and sweep, factor once per H"};
    double layer_s[3] = {0};
    for (int mode = 0; mode < 3; mode++) {
        qc_gpu_solver_plain(s, mode == 0, mode == 0);
        double tot[6] = {0};
        for (int rep = 0; rep < 2; rep++) { /* the first round warms cuBLAS/cuSOLVER up; the second counts */
            memset(tot, 0, sizeof tot);
            if (rep == 1)
                printf("\n%s\n%-10s %6s %6s | %8s %8s %8s %8s | %8s %8s | %8s\n", mode_name[mode], "linear", "N", "K",
                       "prep_s", "gptq_s", "factor", "sweep", "report_s", "pack_s", "total_s");
            for (int i = 0; i < 7; i++) {
                int N = lin[i].N, K = lin[i].K;
                size_t nk = (size_t)N * K;
                bool again = mode == 2 && i > 0 && lin[i].h == lin[i - 1].h;
                CHECK(qc_gpu_upload(g, W16, wh, nk * 2));
                float *h = H[lin[i].h];
                double t0 = qc_time_now(), ref = 0, err = 0;
                CHECK(qc_gpu_f16_to_f32(g, W16, W32, nk));
                CHECK(qc_gpu_copy(g, Wo, W32, nk * 4));
                CHECK(qc_gpu_quad_form(s, Wo, h, N, K, &ref));
                /* the pipeline factors a copy when another linear shares the H (and the last user's own H
                 * otherwise); the bench always factors a copy, so every round starts from the same H */
                if (!again) CHECK(qc_gpu_copy(g, Hw, h, 4 * (size_t)K * K));
                CHECK(qc_gpu_sync(g));
                double t1 = qc_time_now();
                qc_qlinear q;
                CHECK(qc_qlinear_alloc(&q, N, K, 4, 128, true, false));
                qc_gptq_stats gs;
                if (again) CHECK(qc_gptq_quantize_gpu_again(s, W32, N, K, &o, &q, false, &gs));
                else CHECK(qc_gptq_quantize_gpu(s, W32, Hw, N, K, &o, &q, false, &gs));
                CHECK(qc_gpu_sync(g));
                double t2 = qc_time_now();
                CHECK(qc_gpu_sub(g, Wo, W32, Wo, nk));
                CHECK(qc_gpu_solver_error(s, Wo, W32, N, K, &err));
                CHECK(qc_gpu_f32_to_f16(g, W32, W16, nk));
                CHECK(qc_gpu_sync(g));
                double t3 = qc_time_now(), errq = 0; /* the same error as a quadratic form (untimed) */
                CHECK(qc_gpu_solver_quad_form_saved(s, Wo, N, K, &errq));
                int32_t *qw = malloc(nk / 2), *qz = malloc((size_t)q.n_groups * N / 2);
                uint16_t *sc = malloc((size_t)q.n_groups * N * 2);
                CHECK(qc_gpu_pack(s, &q, QC_GPU_PACK_GPTQ, qw, qz, sc));
                double t4 = qc_time_now();
                free(qw);
                free(qz);
                free(sc);
                qc_qlinear_free(&q);
                double v[6] = {t1 - t0, t2 - t1, gs.t_factor, gs.t_sweep, t3 - t2, t4 - t3};
                for (int k = 0; k < 6; k++) tot[k] += v[k];
                if (rep == 1)
                    printf("%-10s %6d %6d | %8.4f %8.4f %8.4f %8.4f | %8.4f %8.4f | %8.4f   rel_err %.6g (quad form %.6g)%s\n",
                           lin[i].name, N, K, v[0], v[1], v[2], v[3], v[4], v[5], t4 - t0, ref > 0 ? err / ref : 0,
                           ref > 0 ? errq / ref : 0, again ? " (factor again)" : "");
            }
        }
        double all = tot[0] + tot[1] + tot[4] + tot[5];
        layer_s[mode] = all;
        printf("%-10s %6s %6s | %8.4f %8.4f %8.4f %8.4f | %8.4f %8.4f | %8.4f\n", "layer", "", "", tot[0], tot[1],
               tot[2], tot[3], tot[4], tot[5], all);
        printf("solve phase per layer (%s): %.3f s (GPTQ %.3f: factor %.3f, sweep %.3f; prep %.3f, report %.3f; "
               "pack %.3f)\n", mode_name[mode], all, tot[1], tot[2], tot[3], tot[0], tot[4], tot[5]);
    }
    printf("\nper layer: %.3f s -> %.3f s -> %.3f s (%.2fx)\n", layer_s[0], layer_s[1], layer_s[2],
           layer_s[0] / layer_s[2]);
    /* the sweep kernels side by side (device ms, the second of two runs on the same factor; "(0)" is the
     * default for that N; "3xTF32": the default kernel with the trailing update as 3xTF32): the layer's shapes
     * and q/k/v stacked as the pipeline solves them */
    struct { const char *name; int N, K, h; } shp[4] = {
        {"q/o_proj", qd, d, 0}, {"q+k+v", qd + 2 * kvd, d, 0}, {"gate/up", ff, d, 2}, {"down_proj", d, ff, 3}};
    int rows, tpr, nker = 0;
    while (qc_gpu_sweep_kernel(nker, &rows, &tpr)) nker++;
    printf("\nsweep kernels (rows x threads per row), sweep device ms\n%-10s %6s %6s", "shape", "N", "K");
    for (int k = 0; qc_gpu_sweep_kernel(k, &rows, &tpr); k++) printf(" %5dx%-3d", rows, tpr);
    printf(" %9s %9s\n", "(0)", "(0) 3xTF32");
    for (int i = 0; i < 4; i++) {
        int N = shp[i].N, K = shp[i].K;
        size_t nk = (size_t)N * K;
        if (N > maxN || nk > maxNK) continue;
        qc_qlinear q;
        qc_gptq_stats gs;
        CHECK(qc_qlinear_alloc(&q, N, K, 4, 128, true, false));
        CHECK(qc_gpu_copy(g, Hw, H[shp[i].h], 4 * (size_t)K * K));
        CHECK(qc_gpu_upload(g, W16, wh, nk * 2));
        CHECK(qc_gpu_f16_to_f32(g, W16, Wo, nk));
        CHECK(qc_gpu_copy(g, W32, Wo, nk * 4));
        CHECK(qc_gpu_solver_sweep(s, 0, 0));
        CHECK(qc_gptq_quantize_gpu(s, W32, Hw, N, K, &o, &q, false, &gs));
        printf("%-10s %6d %6d", shp[i].name, N, K);
        for (int k = 0; k <= nker + 1; k++) { /* k == nker: the default; + 1: with the 3xTF32 trailing update */
            if (k < nker) qc_gpu_sweep_kernel(k, &rows, &tpr);
            CHECK(qc_gpu_solver_sweep(s, k < nker ? rows : 0, k < nker ? tpr : 0));
            qc_gpu_solver_lazy_fp32(s, k != nker + 1);
            for (int rep = 0; rep < 2; rep++) {
                CHECK(qc_gpu_copy(g, W32, Wo, nk * 4));
                CHECK(qc_gptq_quantize_gpu_again(s, W32, N, K, &o, &q, false, &gs));
            }
            printf(" %9.2f", gs.t_sweep * 1e3);
        }
        printf("\n");
        qc_qlinear_free(&q);
    }
    CHECK(qc_gpu_solver_sweep(s, 0, 0));
    qc_gpu_solver_lazy_fp32(s, true);
    free(wh);
    qc_gpu_solver_free(s);
    qc_gpu_close(g);
    return 0;
}
