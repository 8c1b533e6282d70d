/*
 * pyrandom.h - CPython's `random` module generator (MT19937 with CPython's integer seeding and
 * getrandbits-based randint), so calibration sampling draws exactly the indices the reference
 * Python scripts draw: IST-DASLab's get_c4 does random.seed(0) and then randint(...).
 *
 *   qc_pyrandom r; qc_pyrandom_seed(&r, 0);
 *   int64_t i = qc_pyrandom_randint(&r, 0, n - 1);   // == random.randint(0, n - 1)
 */
#ifndef QC_PYRANDOM_H
#define QC_PYRANDOM_H

#include <stdint.h>

typedef struct qc_pyrandom {
    uint32_t mt[624];
    int      mti;
} qc_pyrandom;

/* random.seed(seed) for a non-negative integer seed. */
void     qc_pyrandom_seed(qc_pyrandom *r, uint64_t seed);
uint32_t qc_pyrandom_u32(qc_pyrandom *r);
/* random.getrandbits(k), 0 < k <= 64. */
uint64_t qc_pyrandom_getrandbits(qc_pyrandom *r, int k);
/* random.randint(a, b), a <= b, inclusive both ends. */
int64_t  qc_pyrandom_randint(qc_pyrandom *r, int64_t a, int64_t b);
/* random.random() */
double   qc_pyrandom_random(qc_pyrandom *r);

#endif
