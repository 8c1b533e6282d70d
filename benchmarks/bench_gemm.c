/* bench_gemm [N ...]: the device's reference rate for the GPU benchmarks, measured in the same run:
 * median TFLOP/s of an N x N x N cuBLAS GEMM, fp16 operands, fp32 accumulation and output (the
 * operation mix of qcal's forward pass and Hessians), on random data. Default N = 8192. */
#include <stdio.h>
#include <stdlib.h>

#include "qc_gpu.h"

int main(int argc, char **argv) {
    qc_gpu *g;
    if (qc_gpu_open(0, &g)) {
        fprintf(stderr, "bench_gemm: %s\n", qc_last_error());
        return 1;
    }
    printf("device: %s\n", qc_gpu_describe(g));
    int def[1] = {8192};
    int n = argc > 1 ? argc - 1 : 1;
    for (int i = 0; i < n; i++) {
        int N = argc > 1 ? atoi(argv[i + 1]) : def[i];
        double tf;
        if (N < 64 || qc_gpu_gemm_tflops(g, N, 20, &tf)) {
            fprintf(stderr, "bench_gemm: N=%d: %s\n", N, qc_last_error());
            qc_gpu_close(g);
            return 1;
        }
        printf("cublas_gemm_f16_f32acc n=%d: %.1f TFLOP/s\n", N, tf);
    }
    qc_gpu_close(g);
    return 0;
}
