#!/usr/bin/env bash
# qtrain quantize: the tiny model (single file and sharded) becomes a bitsandbytes NF4 folder that
# inspect shows as nf4 with its bits/param; re-quantizing, a non-empty output and a bad blocksize
# fail with exit 2 and leave nothing behind; a damaged 4-bit tensor makes inspect fail with exit 2.
# Usage: quantize.sh <qtrain binary> <scratch dir>
set -euo pipefail
qtrain=$1
work=$2
rm -rf "$work" && mkdir -p "$work"

fail() { echo "FAIL: $*" >&2; exit 1; }

# expect_exit2 <pattern the message must contain> <qtrain args...>
expect_exit2() {
  local pattern=$1 rc
  shift
  set +e
  "$qtrain" "$@" >"$work/out.txt" 2>"$work/err.txt"
  rc=$?
  set -e
  [[ $rc -eq 2 ]] || { cat "$work/err.txt" >&2; fail "qtrain $*: exit $rc, expected 2"; }
  grep -qF -- "$pattern" "$work/err.txt" || { cat "$work/err.txt" >&2; fail "qtrain $*: message lacks '$pattern'"; }
  echo "  $*: $(cat "$work/err.txt")"
}

"$qtrain" make-tiny "$work/tiny" --hidden 128 --seed 2 >/dev/null
out=$("$qtrain" quantize "$work/tiny" "$work/q")
grep -q 'bits/param     4.12' <<<"$out" || { echo "$out" >&2; fail "quantize summary lacks bits/param 4.12x"; }
for f in config.json model.safetensors tokenizer.model tokenizer_config.json; do
  [[ -f "$work/q/$f" ]] || fail "quantized folder lacks $f"
done
grep -q '"quant_method": "bitsandbytes"' "$work/q/config.json" || fail "config.json lacks quant_method"
grep -q '"bnb_4bit_use_double_quant": true' "$work/q/config.json" || fail "config.json lacks double quant"

info=$("$qtrain" inspect "$work/q")
for want in 'quantization   4-bit nf4, double quant yes, compute bfloat16' 'bf16 x7, nf4 x14' \
            'nf4            14 linear weights, blocksize 64, double quant yes, 4.12[0-9] bits/param' \
            'model.layers.1.mlp.down_proj.weight *\[128, 176\] *nf4 .*blocksize 64, double quant yes' '^check *ok'; do
  grep -q -- "$want" <<<"$info" || { echo "$info" >&2; fail "inspect lacks '$want'"; }
done
grep -q 'quant_state' <<<"$info" && fail "inspect lists companion tensors as rows"

# Without double quantization: fp32 absmax, 4 + 32/64 bits.
"$qtrain" quantize "$work/tiny" "$work/q_plain" --no-double-quant --blocksize 128 >/dev/null
"$qtrain" inspect "$work/q_plain" | grep 'blocksize 128, double quant no, 4.250 bits/param' >/dev/null ||
  fail "plain absmax not shown as 4.250 bits/param"

# Sharded input: same shard names, a new index.
"$qtrain" make-tiny "$work/sharded" --seed 2 --shards 2 >/dev/null
"$qtrain" quantize "$work/sharded" "$work/q_sharded" >/dev/null
for f in model-00001-of-00002.safetensors model-00002-of-00002.safetensors model.safetensors.index.json; do
  [[ -f "$work/q_sharded/$f" ]] || fail "sharded output lacks $f"
done
"$qtrain" inspect "$work/q_sharded" | grep '^check *ok' >/dev/null || fail "sharded output does not inspect ok"

# Refusals, each leaving no output and no temporary folder.
expect_exit2 "already quantized" quantize "$work/q" "$work/q_again"
[[ ! -e "$work/q_again" ]] || fail "refused quantize left $work/q_again"
expect_exit2 "not empty" quantize "$work/tiny" "$work/q"
expect_exit2 "--blocksize" quantize "$work/tiny" "$work/q_bs" --blocksize 100
expect_exit2 "tiny_missing" quantize "$work/tiny_missing" "$work/q_missing"
if ls -A "$work" | grep 'qtrain-tmp' >/dev/null; then fail "temporary folder left behind"; fi

# A damaged packed weight: one byte cut from the file makes the file itself invalid.
cp -r "$work/q" "$work/q_cut"
truncate -s -1 "$work/q_cut/model.safetensors"
expect_exit2 "q_cut/model.safetensors" inspect "$work/q_cut"
echo "quantize: ok"
