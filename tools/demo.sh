#!/usr/bin/env bash
# The demo: set-up and build, make a tiny random Llama model with its own tokenizer, write a small
# synthetic instruction dataset, fine-tune it with QLoRA (on the GPU when there is one, else on the
# CPU: about a minute on 2 cores), and compare what the base model and the tuned one answer to
# held-out questions (greedy decoding).
# The base is random, so it starts from nothing: the loss falls from ln(vocab) toward the answers'
# patterns, and the tuned model picks up their shape ("3 plus 4 is ...").
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh >/dev/null
qtrain="${QTRAIN_BUILD_DIR:-build}/tools/qtrain"
out=out/demo
rm -rf "$out"
mkdir -p "$out"

echo "== qtrain make-tiny $out/tiny-model"
"$qtrain" make-tiny "$out/tiny-model" --seed 1
echo
echo "== qtrain make-data $out/data.jsonl"
"$qtrain" make-data "$out/data.jsonl" --count 600 --seed 3
cat >"$out/run.yaml" <<YAML
base_model: $out/tiny-model
adapter: qlora
lora_r: 32
lora_alpha: 64
sequence_len: 128
micro_batch_size: 8
max_steps: 1000
learning_rate: 0.005
lr_scheduler: cosine
warmup_steps: 10
optimizer: paged_adamw_8bit
datasets:
  - path: $out/data.jsonl
    type: alpaca
val_set_size: 40
eval_steps: 250
save_steps: 500
logging_steps: 50
output_dir: $out/run
seed: 7
YAML
echo
echo "== qtrain train $out/run.yaml"
"$qtrain" train "$out/run.yaml"

questions=("What is 3 plus 4?" "What is the capital of France?" "What is the opposite of hot?" "What colour is grass?")
args=()
for q in "${questions[@]}"; do args+=(--instruction "$q"); done
echo
echo "== the base model answers"
"$qtrain" eval "$out/run.yaml" --no-loss "${args[@]}"
echo
echo "== the tuned model answers"
"$qtrain" eval "$out/run.yaml" --adapter "$out/run" --no-loss "${args[@]}"
echo
echo "loss curve: $out/run/loss_curve.svg; adapter: $out/run/"
