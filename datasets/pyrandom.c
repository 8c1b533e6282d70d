#include "pyrandom.h"

#include "qc_common.h"

#define N 624
#define M 397

static void init_genrand(qc_pyrandom *r, uint32_t s) {
    r->mt[0] = s;
    for (int i = 1; i < N; i++) r->mt[i] = 1812433253u * (r->mt[i - 1] ^ (r->mt[i - 1] >> 30)) + (uint32_t)i;
    r->mti = N;
}

/* CPython's init_by_array (the MT reference's), with the key = 32-bit little-endian words of |seed|. */
void qc_pyrandom_seed(qc_pyrandom *r, uint64_t seed) {
    uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
    int klen = (seed >> 32) ? 2 : 1;
    init_genrand(r, 19650218u);
    int i = 1, j = 0;
    for (int k = N > klen ? N : klen; k; k--) {
        r->mt[i] = (r->mt[i] ^ ((r->mt[i - 1] ^ (r->mt[i - 1] >> 30)) * 1664525u)) + key[j] + (uint32_t)j;
        i++;
        j++;
        if (i >= N) { r->mt[0] = r->mt[N - 1]; i = 1; }
        if (j >= klen) j = 0;
    }
    for (int k = N - 1; k; k--) {
        r->mt[i] = (r->mt[i] ^ ((r->mt[i - 1] ^ (r->mt[i - 1] >> 30)) * 1566083941u)) - (uint32_t)i;
        i++;
        if (i >= N) { r->mt[0] = r->mt[N - 1]; i = 1; }
    }
    r->mt[0] = 0x80000000u;
}

uint32_t qc_pyrandom_u32(qc_pyrandom *r) {
    static const uint32_t mag01[2] = {0x0u, 0x9908b0dfu};
    uint32_t y;
    if (r->mti >= N) {
        int kk;
        for (kk = 0; kk < N - M; kk++) {
            y = (r->mt[kk] & 0x80000000u) | (r->mt[kk + 1] & 0x7fffffffu);
            r->mt[kk] = r->mt[kk + M] ^ (y >> 1) ^ mag01[y & 1u];
        }
        for (; kk < N - 1; kk++) {
            y = (r->mt[kk] & 0x80000000u) | (r->mt[kk + 1] & 0x7fffffffu);
            r->mt[kk] = r->mt[kk + (M - N)] ^ (y >> 1) ^ mag01[y & 1u];
        }
        y = (r->mt[N - 1] & 0x80000000u) | (r->mt[0] & 0x7fffffffu);
        r->mt[N - 1] = r->mt[M - 1] ^ (y >> 1) ^ mag01[y & 1u];
        r->mti = 0;
    }
    y = r->mt[r->mti++];
    y ^= (y >> 11);
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    y ^= (y >> 18);
    return y;
}

uint64_t qc_pyrandom_getrandbits(qc_pyrandom *r, int k) {
    QC_ASSERT(k > 0 && k <= 64);
    if (k <= 32) return qc_pyrandom_u32(r) >> (32 - k);
    uint64_t lo = qc_pyrandom_u32(r);               /* words fill from the least significant end */
    uint64_t hi = qc_pyrandom_u32(r) >> (64 - k);
    return lo | hi << 32;
}

int64_t qc_pyrandom_randint(qc_pyrandom *r, int64_t a, int64_t b) {
    QC_ASSERT(a <= b);
    uint64_t n = (uint64_t)(b - a) + 1; /* randrange(a, b+1): a + _randbelow(n) */
    int k = 0;
    for (uint64_t t = n; t; t >>= 1) k++; /* n.bit_length() */
    uint64_t v;
    do v = qc_pyrandom_getrandbits(r, k); while (v >= n);
    return a + (int64_t)v;
}

double qc_pyrandom_random(qc_pyrandom *r) {
    uint32_t a = qc_pyrandom_u32(r) >> 5, b = qc_pyrandom_u32(r) >> 6;
    return (a * 67108864.0 + b) * (1.0 / 9007199254740992.0);
}
