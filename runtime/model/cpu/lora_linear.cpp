// LoRA linear forward and backward through OpenBLAS (see lora_linear.h).
#include "runtime/model/cpu/lora_linear.h"

#include <algorithm>

#include "qk/matmul.h"

namespace qtrain::model::cpu {

namespace {

int i32(int64_t v) { return static_cast<int>(v); }

// splitmix64's finalizer: a stateless hash, so any element's mask bit is computable on its own.
uint64_t mix64(uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// drop(X): X * mask / (1 - p), or X itself when p is 0.
const float* dropped_input(const LoraRun& run, const float* x, int64_t count, std::vector<float>& buf) {
  if (run.dropout <= 0.0f) return x;
  buf.resize(static_cast<size_t>(count));
  const float keep_scale = 1.0f / (1.0f - run.dropout);
  for (int64_t i = 0; i < count; ++i)
    buf[static_cast<size_t>(i)] =
        dropout_keep(run.dropout_seed, static_cast<uint64_t>(i), run.dropout) ? x[i] * keep_scale : 0.0f;
  return buf.data();
}

}  // namespace

bool dropout_keep(uint64_t seed, uint64_t index, float p) {
  const uint64_t h = mix64(mix64(seed) ^ index);
  const double u = static_cast<double>(h >> 11) * 0x1.0p-53;
  return u >= static_cast<double>(p);
}

void lora_linear_forward(const LinearWeight& w, const LoraRun& run, const float* x, int64_t n, float* y, float* xa) {
  qk::cpu::matmul_f32({false, true, i32(n), i32(w.out), i32(w.in)}, 1.0f, x, w.weight.data(), 0.0f, y);
  if (!w.bias.empty()) {
    for (int64_t t = 0; t < n; ++t)
      for (int64_t o = 0; o < w.out; ++o) y[t * w.out + o] += w.bias[static_cast<size_t>(o)];
  }
  if (!run.lora) return;
  const int64_t r = run.lora->r;
  std::vector<float> buf;
  const float* xd = dropped_input(run, x, n * w.in, buf);
  qk::cpu::matmul_f32({false, true, i32(n), i32(r), i32(w.in)}, 1.0f, xd, run.lora->A.data(), 0.0f, xa);
  qk::cpu::matmul_f32({false, true, i32(n), i32(w.out), i32(r)}, run.scale, xa, run.lora->B.data(), 1.0f, y);
}

void lora_linear_backward(const LinearWeight& w, const LoraRun& run, LoraAdapter* grads, const float* x,
                          const float* xa, const float* dy, int64_t n, float* dx) {
  // dX = dY W (the frozen path)
  qk::cpu::matmul_f32({false, false, i32(n), i32(w.in), i32(w.out)}, 1.0f, dy, w.weight.data(), 0.0f, dx);
  if (!run.lora) return;
  const int64_t r = run.lora->r;
  // dXA = s dY B;  dB += s dY^T XA
  std::vector<float> dxa(static_cast<size_t>(n * r));
  qk::cpu::matmul_f32({false, false, i32(n), i32(r), i32(w.out)}, run.scale, dy, run.lora->B.data(), 0.0f, dxa.data());
  qk::cpu::matmul_f32({true, false, i32(w.out), i32(r), i32(n)}, run.scale, dy, xa, 1.0f, grads->dB.data());
  // dA += dXA^T drop(X)
  std::vector<float> buf;
  const float* xd = dropped_input(run, x, n * w.in, buf);
  qk::cpu::matmul_f32({true, false, i32(r), i32(w.in), i32(n)}, 1.0f, dxa.data(), xd, 1.0f, grads->dA.data());
  // dX += drop'(dXA A): the same mask and 1 / (1 - p) scale as the forward
  if (run.dropout <= 0.0f) {
    qk::cpu::matmul_f32({false, false, i32(n), i32(w.in), i32(r)}, 1.0f, dxa.data(), run.lora->A.data(), 1.0f, dx);
    return;
  }
  std::vector<float> dxd(static_cast<size_t>(n * w.in));
  qk::cpu::matmul_f32({false, false, i32(n), i32(w.in), i32(r)}, 1.0f, dxa.data(), run.lora->A.data(), 0.0f,
                      dxd.data());
  const float keep_scale = 1.0f / (1.0f - run.dropout);
  for (int64_t i = 0; i < n * w.in; ++i) {
    if (dropout_keep(run.dropout_seed, static_cast<uint64_t>(i), run.dropout)) dx[i] += dxd[static_cast<size_t>(i)] * keep_scale;
  }
}

}  // namespace qtrain::model::cpu
