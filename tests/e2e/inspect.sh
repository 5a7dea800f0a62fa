#!/usr/bin/env bash
# qtrain inspect: the summary of a valid tiny model (exit 0), and exit 2 with a message naming the
# culprit for a truncated file, a truncated or missing shard, missing tensors, wrong shapes and a
# missing config.json.
# Usage: inspect.sh <qtrain binary> <scratch dir>
set -euo pipefail
qtrain=$1
work=$2
rm -rf "$work" && mkdir -p "$work"

fail() { echo "FAIL: $*" >&2; exit 1; }

# expect_bad_input <pattern the message must contain> <model dir>
expect_bad_input() {
  local pattern=$1 dir=$2 rc
  set +e
  "$qtrain" inspect "$dir" >"$work/out.txt" 2>"$work/err.txt"
  rc=$?
  set -e
  [[ $rc -eq 2 ]] || { cat "$work/err.txt" >&2; fail "inspect $dir: exit $rc, expected 2"; }
  grep -q '^qtrain: error: ' "$work/err.txt" || fail "inspect $dir: no 'qtrain: error:' line"
  grep -qF -- "$pattern" "$work/err.txt" || { cat "$work/err.txt" >&2; fail "inspect $dir: message lacks '$pattern'"; }
  echo "  $(basename "$dir"): $(cat "$work/err.txt")"
}

"$qtrain" make-tiny "$work/tiny" --seed 1 >/dev/null
out=$("$qtrain" inspect "$work/tiny")
for want in 'LlamaForCausalLM' 'layers         2' 'kv heads 2' 'parameters     158016' 'bf16 x21' \
            'model.layers.1.mlp.down_proj.weight' '[176, 64]' 'tokenizer.model' '^check *ok'; do
  grep -q -- "$want" <<<"$out" || { echo "$out" >&2; fail "summary lacks '$want'"; }
done

# A truncated single-file checkpoint.
cp -r "$work/tiny" "$work/truncated"
truncate -s -100 "$work/truncated/model.safetensors"
expect_bad_input "truncated/model.safetensors" "$work/truncated"

# A file cut inside its header.
cp -r "$work/tiny" "$work/header_cut"
truncate -s 20 "$work/header_cut/model.safetensors"
expect_bad_input "header_cut/model.safetensors" "$work/header_cut"

# Two shards: one truncated, one missing.
"$qtrain" make-tiny "$work/sharded" --seed 1 --shards 2 >/dev/null
"$qtrain" inspect "$work/sharded" >/dev/null || fail "valid sharded model rejected"
cp -r "$work/sharded" "$work/shard_truncated"
truncate -s -64 "$work/shard_truncated/model-00002-of-00002.safetensors"
expect_bad_input "model-00002-of-00002.safetensors" "$work/shard_truncated"
cp -r "$work/sharded" "$work/shard_missing"
rm "$work/shard_missing/model-00001-of-00002.safetensors"
expect_bad_input "model-00001-of-00002.safetensors" "$work/shard_missing"

# Tensors missing: the config says three layers, the weights hold two.
"$qtrain" make-tiny "$work/three_layers" --layers 3 >/dev/null
cp -r "$work/tiny" "$work/missing_tensor"
cp "$work/three_layers/config.json" "$work/missing_tensor/config.json"
expect_bad_input "model.layers.2.input_layernorm.weight is missing" "$work/missing_tensor"
grep -q 'missing *model.layers.2.mlp.down_proj.weight' "$work/out.txt" || fail "missing tensors not all listed"

# Wrong shapes: the config says intermediate 192.
"$qtrain" make-tiny "$work/wide" --intermediate 192 >/dev/null
cp -r "$work/tiny" "$work/wrong_shape"
cp "$work/wide/config.json" "$work/wrong_shape/config.json"
expect_bad_input "mlp.gate_proj.weight has shape [176, 64], expected [192, 64]" "$work/wrong_shape"

# No config.json; a broken config.json; no weights at all.
cp -r "$work/tiny" "$work/no_config"
rm "$work/no_config/config.json"
expect_bad_input "no_config/config.json" "$work/no_config"
cp -r "$work/tiny" "$work/bad_config"
echo '{"model_type": "llama", ' >"$work/bad_config/config.json"
expect_bad_input "bad_config/config.json" "$work/bad_config"
cp -r "$work/tiny" "$work/no_weights"
rm "$work/no_weights/model.safetensors"
expect_bad_input "no_weights" "$work/no_weights"
expect_bad_input "does_not_exist" "$work/does_not_exist"

# Unexpected extra tensors alone are reported but leave the model usable: a tied config over a
# checkpoint that still has lm_head.weight.
"$qtrain" make-tiny "$work/tied" --tie-embeddings >/dev/null
cp -r "$work/tiny" "$work/extra"
cp "$work/tied/config.json" "$work/extra/config.json"
out=$("$qtrain" inspect "$work/extra") || fail "unexpected tensor made the model invalid"
grep -q 'unexpected *lm_head.weight' <<<"$out" || fail "unexpected lm_head.weight not reported"
echo "inspect: ok"
