#!/usr/bin/env bash
# The demo: set-up and build, make a tiny random Llama model with its own tokenizer, and inspect it.
# (Fine-tuning joins the demo when `qtrain train` lands.)
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh >/dev/null
qtrain="${QTRAIN_BUILD_DIR:-build}/tools/qtrain"
out=out/demo
rm -rf "$out/tiny-model"
mkdir -p "$out"
echo "== qtrain make-tiny $out/tiny-model"
"$qtrain" make-tiny "$out/tiny-model" --seed 1
echo
echo "== qtrain inspect $out/tiny-model"
"$qtrain" inspect "$out/tiny-model"
