#!/usr/bin/env bash
# The test command: set-up and build (tools/setup.sh), then every test through CTest.
# Without a GPU the tests labelled `gpu` report as skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
cd "${QTRAIN_BUILD_DIR:-build}"
ctest --output-on-failure -j"$(nproc)" "$@"
