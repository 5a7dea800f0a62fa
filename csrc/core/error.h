// The one exception type of the host code. Its kind decides the exit code of the tools:
// bad input or config -> 2, out of memory -> 3, internal error -> 1. Messages follow
// "file: what is wrong (where)" so the user can find the place.
#pragma once
#include <stdexcept>
#include <string>

namespace qtrain {

enum class ErrorKind { BadInput, OutOfMemory, Internal };

class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, const std::string& what) : std::runtime_error(what), kind_(kind) {}
  ErrorKind kind() const noexcept { return kind_; }

 private:
  ErrorKind kind_;
};

// 2 for BadInput, 3 for OutOfMemory, 1 for Internal.
int exit_code(ErrorKind kind) noexcept;

// "file: what (where)"; `where` may be empty.
std::string format_message(const std::string& file, const std::string& what, const std::string& where = {});

[[noreturn]] void throw_bad_input(const std::string& file, const std::string& what, const std::string& where = {});
[[noreturn]] void throw_internal(const std::string& what);
[[noreturn]] void throw_out_of_memory(const std::string& what);

}  // namespace qtrain

#define QTRAIN_CHECK_INTERNAL(cond, msg)                                                          \
  do {                                                                                            \
    if (!(cond)) ::qtrain::throw_internal(std::string(__FILE__ ":") + std::to_string(__LINE__) + \
                                          ": " #cond ": " + (msg));                               \
  } while (0)
