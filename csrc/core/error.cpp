// Error formatting and the mapping from error kind to exit code.
#include "csrc/core/error.h"

namespace qtrain {

int exit_code(ErrorKind kind) noexcept {
  switch (kind) {
    case ErrorKind::BadInput: return 2;
    case ErrorKind::OutOfMemory: return 3;
    case ErrorKind::Internal: return 1;
  }
  return 1;
}

std::string format_message(const std::string& file, const std::string& what, const std::string& where) {
  std::string msg = file.empty() ? what : file + ": " + what;
  if (!where.empty()) msg += " (" + where + ")";
  return msg;
}

void throw_bad_input(const std::string& file, const std::string& what, const std::string& where) {
  throw Error(ErrorKind::BadInput, format_message(file, what, where));
}

void throw_internal(const std::string& what) { throw Error(ErrorKind::Internal, what); }

void throw_out_of_memory(const std::string& what) { throw Error(ErrorKind::OutOfMemory, what); }

}  // namespace qtrain
