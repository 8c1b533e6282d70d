/*
 * plan.h - the preflight plan of a quantization run: peak host RAM, peak GPU memory, disk for the work
 * directory and the checkpoint, and the time of each phase, computed from the model's config and the
 * sizes and dtypes of its tensors (no tensor data is read) before any calibration starts; and the
 * check that refuses a run the machine cannot hold, saying which flag to change.
 *
 *   qc_plan_in in = {.m = model, .method = QC_METHOD_GPTQ, .bits = 4, .group_size = 128,
 *                    .true_sequential = true, .nsamples = 128, .seqlen = 2048, .device = -1,
 *                    .out = "q4", .work_dir = "q4.qcal-work", .max_shard_bytes = 4096ull << 20};
 *   qc_plan p;
 *   if (qc_plan_compute(&in, &p) == QC_OK) {
 *       qc_plan_print(&p, stderr);
 *       if (qc_plan_check(&p) != QC_OK) die(qc_last_error());  // "host RAM: ... use --nsamples 96 ..."
 *   }
 *
 * The memory model is the drivers' own allocations, term by term (pipeline.c for the CPU,
 * pipeline_gpu.c + gpu_forward.cu + the GPU solvers for CUDA), evaluated at each phase of the run
 * (embedding + base part, the last layer, checkpoint assembly, evaluation); the peak is the largest
 * phase, and qc_plan.host[] lists its terms. Host figures are resident bytes, what `ps` and
 * getrusage report: they include the file pages of mmapped weights the run has touched and not
 * dropped. Those pages are reclaimable, so the RAM check compares host_required (the peak without
 * them) with what is available. GPU figures: gpu_peak is device memory in use (qcal's buffers plus
 * the CUDA context and library workspaces, QC_PLAN_CUDA_CONTEXT + QC_PLAN_CUDA_WORKSPACES), the
 * figure the run reports as gpu_peak_device_bytes; gpu_own is qcal's buffers alone (gpu_peak_bytes).
 * Disk figures are apparent bytes (du -sb); work_disk is the peak while the last activation snapshot
 * replaces the previous one (two copies of X), work_disk_final what is left after the run. When the
 * checkpoint will take the parts as its shards (ckpt_write.h: part shards) they are hard links where the
 * work dir shares the checkpoint's file system (out_disk counts no blocks for them) and copies elsewhere.
 *
 * The times are estimates from FLOP counts: on the CPU at the sgemm rate measured when the plan is made
 * (~0.2 s, at the BLAS thread count the caller has set) times per-phase efficiencies; on the GPU from
 * the per-phase rates measured on an H100 (benchmarks/results/gpu_h100.md), scaled by FLOPs.
 *
 * qc_status_file_write() writes <work_dir>/status.json for people watching a long run.
 *
 * Ownership: qc_plan_in borrows the model and the strings during qc_plan_compute; qc_plan owns nothing
 * (fixed arrays), so it can be copied and needs no free.
 */
#ifndef QC_PLAN_H
#define QC_PLAN_H

#include <stdio.h>

#include "pipeline.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Device memory a process holds beyond its own cudaMalloc'd buffers: the CUDA context (module images,
 * the driver's per-context state: about 500 MiB on an H100 with CUDA 12-13) and the libraries' workspaces
 * (cuBLAS/cuBLASLt per-handle workspace, cuSOLVER, allocation granularity). Together they are the
 * 0.69-0.70 GiB between gpu_peak_device_bytes and gpu_peak_bytes measured on an H100 for the 8B, 70B
 * GPTQ and 8B AWQ runs of benchmarks/results/gpu_h100.md. */
#define QC_PLAN_CUDA_CONTEXT    ((uint64_t)500 << 20)
#define QC_PLAN_CUDA_WORKSPACES ((uint64_t)206 << 20)

typedef struct qc_plan_in {
    const qc_model *m;          /* open model: config, and the tensors' sizes and dtypes (no data is read) */
    qc_method       method;
    bool            awq_gptq;             /* method AWQ with the GPTQ solver in place of rounding (awq+gptq) */
    int             bits, group_size;     /* group_size -1: one group per row */
    qc_pack_format  format;
    bool            act_order, true_sequential;
    int             nsamples, seqlen;     /* calibration windows of seqlen tokens */
    int             batch_tokens;         /* rows per forward batch (0: the driver's default) */
    int             awq_candidates;       /* AWQ: grid points a scale group tries (0: 20; best: 40) */
    int             awq_search_samples;   /* AWQ: windows of the attention/MLP search forwards (0: all) */
    int             device;               /* -1: the CPU; N: CUDA device N */
    bool            keep_fake;            /* --eval: the fake-quantized layers are kept in RAM */
    int             eval_seqlen;          /* 0: no evaluation */
    const char     *eval_text;            /* the evaluation text (its size gives the tokens); may be NULL */
    int             eval_max_windows;     /* 0: all windows */
    int             threads;              /* BLAS threads of the run (0: what OpenBLAS uses now) */
    double          save_every;           /* as qc_pipeline_opts.save_every: < 0 writes no activation snapshot */
    const char     *out, *work_dir;       /* for disk space (work_dir NULL: OUT.qcal-work) */
    uint64_t        max_shard_bytes;      /* checkpoint shard size (0: 4096 MiB) */
    /* For tests: do not look at the machine (no sgemm timing, no free memory, disk or device query):
     * the *_avail / *_free fields stay 0 and cpu_gflops is taken as given (0: a nominal 50 GFLOP/s). */
    bool            offline;
    double          cpu_gflops;
} qc_plan_in;

/* How a term grows, for qc_plan_check's advice. */
typedef enum qc_plan_kind {
    QC_PLAN_FIXED = 0,   /* the model's shapes (layers, Hessians, solver) */
    QC_PLAN_ROWS  = 1,   /* proportional to nsamples * seqlen (X, AWQ's captured inputs) */
    QC_PLAN_BATCH = 2,   /* proportional to the forward batch (--batch-tokens) */
    QC_PLAN_EVAL  = 3,   /* only with --eval (the fake-quantized layers, the head in FP32) */
    QC_PLAN_FILE  = 4,   /* file pages of mmapped weights: resident but reclaimable */
    QC_PLAN_SNAP  = 5,   /* the activation snapshot, and the GPU driver's host copy of X for it (--save-every -1) */
} qc_plan_kind;

enum { QC_PLAN_MAX_ITEMS = 32 };

typedef struct qc_plan_item {
    char         what[96];
    uint64_t     bytes;
    qc_plan_kind kind;
} qc_plan_item;

typedef struct qc_plan {
    /* the prediction (bytes) */
    uint64_t host_peak;          /* peak resident set (what getrusage's maxrss reports) */
    uint64_t host_required;      /* host_peak without the reclaimable file pages: what must fit in RAM */
    uint64_t gpu_peak;           /* device memory in use at the peak (qcal + context + workspaces); 0 on the CPU */
    uint64_t gpu_own;            /* qcal's own device buffers at the peak */
    uint64_t work_disk;          /* the work directory at its peak */
    uint64_t work_disk_final;    /* ... once the run is done (one activation snapshot) */
    uint64_t out_disk;           /* the checkpoint */
    /* what the machine has (0 = unknown) */
    uint64_t host_avail, gpu_avail, work_free, out_free;
    char     host_avail_src[64]; /* "MemAvailable" or "cgroup memory.max" */
    bool     same_fs;            /* work dir and output on one file system: they share work_free */
    /* times (seconds) */
    double   eta_embed, eta_forward, eta_hessian, eta_solve, eta_write, eta_eval, eta_total;
    double   cpu_gflops;         /* the sgemm rate the CPU times are based on */
    /* the breakdowns: host[] is the phase of the host peak, gpu[] the device peak */
    char         host_phase[48], gpu_phase[48];
    qc_plan_item host[QC_PLAN_MAX_ITEMS], gpu[QC_PLAN_MAX_ITEMS], work[QC_PLAN_MAX_ITEMS], outd[QC_PLAN_MAX_ITEMS];
    int          n_host, n_gpu, n_work, n_out;
    /* the run, as planned (for the printout and the advice) */
    int      n_layers, hidden, nsamples, seqlen, batch_seqs, batch_tokens, device, threads, bits, group_size;
    qc_method method;
    bool     keep_fake, snapshot;
    int      n_shards;
    char     out[1024], work_dir[1024];
} qc_plan;

/* Fills *out. QC_ERR_ARG for settings no run accepts (no samples, bits, a device in a CPU-only build is
 * not an error here: the GPU figures are computed from the shapes and gpu_avail stays 0). */
qc_status qc_plan_compute(const qc_plan_in *in, qc_plan *out);
/* A short table: each resource, predicted and available, the terms of each peak, the times. */
void      qc_plan_print(const qc_plan *p, FILE *f);
/* QC_OK when everything fits what is known to be available (unknown: not checked). Otherwise
 * QC_ERR_NOMEM (RAM, GPU memory) or QC_ERR_ARG (disk) with a message naming each resource that does not
 * fit, by how much, and what to change (--nsamples, --seqlen, --batch-tokens, --eval, --work-dir,
 * --out, --save-every, --device). */
qc_status qc_plan_check(const qc_plan *p);

/* Bytes of RAM available to this process: MemAvailable from meminfo (NULL: /proc/meminfo), lowered to
 * what the cgroup v2 limits leave (memory.max less memory.current, file pages counted as free) in
 * cgroup_dir and, when cgroup_dir is NULL, in this process's cgroup and its ancestors under
 * /sys/fs/cgroup. *source (may be NULL) names the binding limit. 0 when nothing could be read. */
uint64_t  qc_plan_host_available(const char *meminfo, const char *cgroup_dir, const char **source);

/* <work_dir>/status.json, written atomically: {"pid", "layer" (-1: none), "n_layers", "phase",
 * "elapsed_s" (since this process started), "eta_s" (seconds left; < 0: unknown, written as null),
 * "updated" (Unix time), "updated_at" (ISO 8601 UTC)}. */
qc_status qc_status_file_write(const char *work_dir, int layer, int n_layers, const char *phase, double eta_s);

#ifdef __cplusplus
}
#endif
#endif /* QC_PLAN_H */
