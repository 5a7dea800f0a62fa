#!/usr/bin/env bash
# qtrain make-tiny: the same seed writes the same bytes, another seed other weights (same tokenizer);
# the llama, qwen2, tied and sharded variants are all complete models for `qtrain inspect`.
# Usage: make_tiny.sh <qtrain binary> <scratch dir>
set -euo pipefail
qtrain=$1
work=$2
rm -rf "$work" && mkdir -p "$work"

fail() { echo "FAIL: $*" >&2; exit 1; }

"$qtrain" --version | grep '^qtrain [0-9]' >/dev/null || fail "--version"
"$qtrain" --help | grep make-tiny >/dev/null || fail "--help does not list make-tiny"

"$qtrain" make-tiny "$work/a" --seed 7
"$qtrain" make-tiny "$work/b" --seed 7
"$qtrain" make-tiny "$work/c" --seed 8

for f in config.json model.safetensors tokenizer.model tokenizer_config.json; do
  [[ -s "$work/a/$f" ]] || fail "$f not written"
  cmp "$work/a/$f" "$work/b/$f" || fail "$f differs between two runs with the same seed"
done
if cmp -s "$work/a/model.safetensors" "$work/c/model.safetensors"; then
  fail "seeds 7 and 8 gave the same weights"
fi
cmp "$work/a/tokenizer.model" "$work/c/tokenizer.model" || fail "the tokenizer depends on the seed"
cmp "$work/a/config.json" "$work/c/config.json" || fail "the config depends on the seed"

grep -q '"LlamaForCausalLM"' "$work/a/config.json" || fail "config.json lacks the architecture"
grep -q '"torch_dtype": "bfloat16"' "$work/a/config.json" || fail "config.json lacks torch_dtype"
grep -q '"tokenizer_class": "LlamaTokenizer"' "$work/a/tokenizer_config.json" || fail "tokenizer_config.json"

# No temporary files are left behind.
if ls "$work/a" | grep '\.tmp' >/dev/null; then fail "temporary files left in $work/a"; fi

# Other shapes and variants.
"$qtrain" make-tiny "$work/q" --arch qwen2 --tie-embeddings --layers 3 --hidden 96 --heads 6 --kv-heads 3 \
  --intermediate 256 --vocab 600 --shards 3
[[ -f "$work/q/model.safetensors.index.json" ]] || fail "no index for a sharded model"
[[ -f "$work/q/model-00003-of-00003.safetensors" ]] || fail "third shard missing"
out=$("$qtrain" inspect "$work/q")
grep -q 'Qwen2ForCausalLM' <<<"$out" || fail "qwen2 architecture not reported"
grep -q 'self_attn.q_proj.bias' <<<"$out" || fail "qwen2 biases not written"
if grep -q 'lm_head.weight' <<<"$out"; then fail "tied model has lm_head.weight"; fi
grep -q '^check *ok' <<<"$out" || fail "qwen2 tiny model not valid"

# Bad options are bad input (exit 2).
set +e
"$qtrain" make-tiny "$work/bad" --heads 5 2>/dev/null; rc=$?
set -e
[[ $rc -eq 2 ]] || fail "--heads 5 with hidden 64: exit $rc, expected 2"
echo "make_tiny: ok"
