// CPU twin of kernels/cuda/swiglu.cu. The bf16 entry points compute in fp32 through the same
// swiglu_value / swiglu_grad the kernel calls; the fp64 ones (same template) serve the
// finite-difference check.
#include "qk/swiglu.h"

#include "qk/bf16_bits.h"
#include "qk/error.h"

namespace qk::cpu {
namespace {

float load(uint16_t v) { return bf16_to_f32(v); }
double load(double v) { return v; }
void store(uint16_t& dst, float v) { dst = f32_to_bf16_rn(v); }
void store(double& dst, double v) { dst = v; }

void check(int64_t rows, int64_t cols, int64_t ld_a, int64_t ld_b, int64_t ld_c = 0) {
  QK_REQUIRE(rows >= 0 && cols > 0, "bad sizes");
  QK_REQUIRE(ld_a >= cols && ld_b >= cols && (ld_c == 0 || ld_c >= cols), "leading dimension below cols");
}

template <typename T>
void forward(const T* gate, const T* up, T* out, int64_t rows, int64_t cols, int64_t ld_in, int64_t ld_out) {
  check(rows, cols, ld_in, ld_out);
  QK_REQUIRE(rows == 0 || (gate != nullptr && up != nullptr && out != nullptr), "null pointer");
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t c = 0; c < cols; ++c)
      store(out[i * ld_out + c], swiglu_value(load(gate[i * ld_in + c]), load(up[i * ld_in + c])));
}

template <typename T>
void backward(const T* dout, const T* gate, const T* up, T* dgate, T* dup, int64_t rows, int64_t cols, int64_t ld_in,
              int64_t ld_dout, int64_t ld_grad) {
  check(rows, cols, ld_in, ld_dout, ld_grad);
  QK_REQUIRE(rows == 0 || (dout != nullptr && gate != nullptr && up != nullptr && dgate != nullptr && dup != nullptr),
             "null pointer");
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t c = 0; c < cols; ++c) {
      decltype(load(gate[0])) dg, du;
      swiglu_grad(load(gate[i * ld_in + c]), load(up[i * ld_in + c]), load(dout[i * ld_dout + c]), dg, du);
      store(dgate[i * ld_grad + c], dg);
      store(dup[i * ld_grad + c], du);
    }
}

}  // namespace

void swiglu_forward(const uint16_t* gate, const uint16_t* up, uint16_t* out, int64_t rows, int64_t cols,
                    int64_t ld_in, int64_t ld_out) {
  forward(gate, up, out, rows, cols, ld_in, ld_out);
}
void swiglu_backward(const uint16_t* dout, const uint16_t* gate, const uint16_t* up, uint16_t* dgate, uint16_t* dup,
                     int64_t rows, int64_t cols, int64_t ld_in, int64_t ld_dout, int64_t ld_grad) {
  backward(dout, gate, up, dgate, dup, rows, cols, ld_in, ld_dout, ld_grad);
}
void swiglu_forward(const double* gate, const double* up, double* out, int64_t rows, int64_t cols, int64_t ld_in,
                    int64_t ld_out) {
  forward(gate, up, out, rows, cols, ld_in, ld_out);
}
void swiglu_backward(const double* dout, const double* gate, const double* up, double* dgate, double* dup,
                     int64_t rows, int64_t cols, int64_t ld_in, int64_t ld_dout, int64_t ld_grad) {
  backward(dout, gate, up, dgate, dup, rows, cols, ld_in, ld_dout, ld_grad);
}

}  // namespace qk::cpu
