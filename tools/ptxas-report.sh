#!/usr/bin/env bash
# ptxas -v report (registers, shared memory, stack, spills) for every kernel source and architecture.
# Usage: ptxas-report.sh <nvcc> <report file> "<archs>" <include dir> <sources...>
# Exits 1 if any kernel spills registers.
set -uo pipefail
nvcc=$1 report=$2 archs=$3 include=$4
shift 4
: >"$report"
for arch in ${archs//;/ }; do
  arch=${arch%%-*}
  for src in "$@"; do
    echo "== $(basename "$src") sm_$arch" >>"$report"
    "$nvcc" -std=c++20 --expt-relaxed-constexpr -arch="sm_$arch" -I"$include" -c -o /dev/null \
      -Xptxas -v "$src" 2>&1 | grep -E "ptxas|bytes stack frame|error" >>"$report"
  done
done
cat "$report"
if grep -E "[1-9][0-9]* bytes spill (stores|loads)" "$report" >/dev/null; then
  echo "ptxas-report: register spills found (see $report)" >&2
  exit 1
fi
echo "ptxas-report: no spills ($report)"
