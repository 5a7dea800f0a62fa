// qk::Error: what every qk entry point throws when its preconditions fail or the device reports an
// error. Kept free of CUDA so the CPU twins and the CPU-only build can use it.
#pragma once
#include <stdexcept>
#include <string>

namespace qk {

class Error : public std::runtime_error {
 public:
  enum class Kind { InvalidArgument, OutOfMemory, Device };
  Error(Kind kind, const std::string& what) : std::runtime_error(what), kind_(kind) {}
  Kind kind() const noexcept { return kind_; }

 private:
  Kind kind_;
};

namespace detail {
[[noreturn]] inline void fail_require(const char* cond, const std::string& msg, const char* func) {
  throw Error(Error::Kind::InvalidArgument, std::string(func) + ": " + msg + " (requires " + cond + ")");
}
}  // namespace detail

}  // namespace qk

// Precondition check for launchers and CPU twins: an unsupported configuration is an error, never
// a silent no-op.
#define QK_REQUIRE(cond, msg)                                          \
  do {                                                                 \
    if (!(cond)) ::qk::detail::fail_require(#cond, (msg), __func__);   \
  } while (0)
