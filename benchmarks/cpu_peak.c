// The CPU's arithmetic ceiling, the figure a convolution's GFLOP/s is measured against:
// independent zmm chains of vdpbf16ps (bfloat16 pairs into float32, 64 FLOP each) and of
// vfmadd231ps (float32, 32 FLOP each), on 1 and 2 threads. Needs AVX512-BF16.
//
//   gcc -O2 -mavx512f -mavx512bf16 -mavx512bw -mavx512vl benchmarks/cpu_peak.c \
//       -o /tmp/cpu_peak -lpthread && /tmp/cpu_peak [iterations]
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define CHAINS 12  // More than latency x throughput, so no chain waits on itself.

static long iterations = 200000000;
static volatile float sink;

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

static void* bf16_chains(void* unused) {
  __m512 acc[CHAINS];
  for (int i = 0; i < CHAINS; i++) acc[i] = _mm512_setzero_ps();
  __m512bh a = (__m512bh)_mm512_set1_epi16(0x3f80), b = a;  // bfloat16 1.0
  for (long it = 0; it < iterations; it++) {
#pragma GCC unroll 12
    for (int i = 0; i < CHAINS; i++) acc[i] = _mm512_dpbf16_ps(acc[i], a, b);
    __asm__ volatile("" : "+v"(a));  // Keeps the loop from being folded.
  }
  float s = 0;
  for (int i = 0; i < CHAINS; i++) s += _mm512_reduce_add_ps(acc[i]);
  sink = s;
  return unused;
}

static void* f32_chains(void* unused) {
  __m512 acc[CHAINS];
  for (int i = 0; i < CHAINS; i++) acc[i] = _mm512_setzero_ps();
  __m512 a = _mm512_set1_ps(1.0001f), b = _mm512_set1_ps(0.9999f);
  for (long it = 0; it < iterations; it++) {
#pragma GCC unroll 12
    for (int i = 0; i < CHAINS; i++) acc[i] = _mm512_fmadd_ps(a, b, acc[i]);
    __asm__ volatile("" : "+v"(a));
  }
  float s = 0;
  for (int i = 0; i < CHAINS; i++) s += _mm512_reduce_add_ps(acc[i]);
  sink = s;
  return unused;
}

static double gflops(void* (*chains)(void*), int threads, double flop_per_instruction) {
  pthread_t t[8];
  double start = now();
  for (int i = 0; i < threads; i++) pthread_create(&t[i], 0, chains, 0);
  for (int i = 0; i < threads; i++) pthread_join(t[i], 0);
  return threads * (double)iterations * CHAINS * flop_per_instruction / (now() - start) / 1e9;
}

int main(int argc, char** argv) {
  if (argc > 1) iterations = atol(argv[1]);
  for (int threads = 1; threads <= 2; threads++)
    printf("%d thread(s): bfloat16 dot %.0f GFLOP/s, float32 FMA %.0f GFLOP/s\n", threads,
           gflops(bf16_chains, threads, 64), gflops(f32_chains, threads, 32));
  return 0;
}
