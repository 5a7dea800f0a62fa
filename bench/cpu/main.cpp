// Entry point of the CPU benchmarks.
#include <benchmark/benchmark.h>

BENCHMARK_MAIN();
