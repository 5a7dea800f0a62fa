#!/usr/bin/env bash
# Builds tests/simt/ptxas/tc_tile.cu with qk/simt.h's constructs and with the raw ones (-DQK_RAW),
# prints both ptxas reports, checks that the kernel's machine code (the cubin's .text section) is
# byte-identical and that the PTX differs only in the dynamic shared memory symbol's name, and shows
# the PTX the wrappers emit. Needs only nvcc and readelf.
# Usage: tests/simt/ptxas/compare.sh [sm_80] [out_dir]
set -euo pipefail
arch=${1:-sm_80}
out=${2:-$(mktemp -d)}
mkdir -p "$out"
root=$(cd "$(dirname "$0")/../../.." && pwd)
src=$root/tests/simt/ptxas/tc_tile.cu
nvcc=${NVCC:-nvcc}
flags=(-std=c++20 -O3 -arch="$arch" -I"$root/kernels/include")
text=.text._Z7tc_tilePK13__nv_bfloat16S1_Pfi
for variant in wrapped raw; do
  def=()
  [[ $variant == raw ]] && def=(-DQK_RAW)
  "$nvcc" "${flags[@]}" "${def[@]}" -Xptxas -v -cubin -o "$out/$variant.cubin" "$src" 2>&1 |
    grep -E "Used|spill" | sed "s/^ */$variant: /"
  "$nvcc" "${flags[@]}" "${def[@]}" -ptx -o "$out/$variant.ptx" "$src"
  readelf -x "$text" "$out/$variant.cubin" 2>/dev/null >"$out/$variant.text"
done
if cmp -s "$out/wrapped.text" "$out/raw.text"; then
  echo "machine code identical ($(grep -c '^  0x' "$out/raw.text") lines of $text)"
else
  echo "machine code differs"
  exit 1
fi
if diff <(sed 's/smem_raw/SMEM/g' "$out/raw.ptx") <(sed 's/qk_dynamic_smem_/SMEM/g' "$out/wrapped.ptx") >/dev/null; then
  echo "PTX identical up to the dynamic shared memory symbol's name"
else
  echo "PTX differs"
  exit 1
fi
echo "PTX emitted through the wrappers (count, first instance):"
for op in mma.sync ldmatrix cp.async.cg cp.async.commit_group cp.async.wait_group; do
  n=$(grep -c "^\s*$op" "$out/wrapped.ptx" || true)
  printf '%4d  %s\n' "$n" "$(grep -m1 "^\s*$op" "$out/wrapped.ptx" | sed 's/^\s*//; s/\s\+/ /g')"
done
