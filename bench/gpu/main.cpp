// Entry point of the GPU benchmarks (one binary, every kernel).
#include <benchmark/benchmark.h>

BENCHMARK_MAIN();
