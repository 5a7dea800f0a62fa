#!/usr/bin/env bash
# Installs the Debian packages qtrain needs (only those missing: no apt-get update when nothing is),
# then configures and builds into build/ (or $QTRAIN_BUILD_DIR).
#   QTRAIN_CUDA_ARCHS  CUDA architectures to build (default: 80;86;89;90; "native" on a GPU machine)
#   QTRAIN_CMAKE_ARGS  extra CMake arguments
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(cmake g++ make pkg-config git libgtest-dev libgmock-dev libbenchmark-dev libsentencepiece-dev
          nlohmann-json3-dev libyaml-cpp-dev libcli11-dev libopenblas-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# nvcc is often installed outside PATH.
if ! command -v nvcc >/dev/null 2>&1 && [ -x /usr/local/cuda/bin/nvcc ]; then
  export PATH=/usr/local/cuda/bin:$PATH
fi

build=${QTRAIN_BUILD_DIR:-build}
args=(-DCMAKE_BUILD_TYPE=Release)
[ -n "${QTRAIN_CUDA_ARCHS:-}" ] && args+=("-DCMAKE_CUDA_ARCHITECTURES=${QTRAIN_CUDA_ARCHS}")
# shellcheck disable=SC2206
[ -n "${QTRAIN_CMAKE_ARGS:-}" ] && args+=(${QTRAIN_CMAKE_ARGS})
mkdir -p "$build"
cmake -S . -B "$build" "${args[@]}" >"$build/configure.log" 2>&1 || { cat "$build/configure.log"; exit 1; }
grep -E "^-- qtrain:" "$build/configure.log" || true
cmake --build "$build" -j"$(nproc)"
