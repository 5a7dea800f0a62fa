#!/usr/bin/env bash
# qtrain bench on the CPU model: the tiny preset trains two timed steps and reports every field
# (step time and its phases, tokens/s, the FLOP count, MFU, memory, the per-op table from two more
# profiled steps, whose self shares must add up to ~100%); the large presets are refused
# on the CPU with exit 2, as are bad sizes. Needs no GPU.
# Usage: bench.sh <qtrain binary> <scratch dir>
set -euo pipefail
qtrain=$1
work=$2
rm -rf "$work" && mkdir -p "$work"

fail() { echo "FAIL: $*" >&2; exit 1; }

"$qtrain" bench --preset tiny --steps 2 --cpu >"$work/out.txt" 2>"$work/err.txt" ||
  { cat "$work/err.txt" >&2; fail "bench --preset tiny --cpu exited $?"; }
out=$(cat "$work/out.txt")
echo "$out"
for want in '^preset: tiny' '^backend: cpu' '^steps: 2 timed' '^step time: [0-9.]+ ms' '^  forward: [0-9.]+ ms' \
            '^  backward: [0-9.]+ ms' '^  optimizer: [0-9.]+ ms' '^tokens/s: [0-9.]+ \(2048 tokens per step\)' \
            '^flops/token: .* = 4\*\(N_layers \+ N_head\)' '^mfu: ' '^plan peak: ' '^arena peak: ' \
            '^loss: [0-9.]+ ' '^per-op timeline: nsys profile' '^op shares: 2 profiled steps' \
            '^  train_step ' '^  block_forward ' '^  block_backward ' '^  lora_linear_backward ' \
            '^  optimizer_step ' '^  self shares sum to '; do
  grep -Eq -- "$want" <<<"$out" || fail "output lacks '$want'"
done
# A step takes time and the loss is a number near ln(vocab 512) = 6.24 for random weights.
grep -Eq '^tokens/s: (0\.0|inf|nan)' <<<"$out" && fail "tokens/s is not a positive number"
grep -Eq '^loss: [5-7]\.' <<<"$out" || fail "first loss is not near ln(512)"
# The per-op table: the self shares of its rows add up to the whole step (100%, up to rounding), and
# no range takes more than all of it.
awk '/^op shares:/ {on = 1; next} on && /^  self shares/ {on = 0} on && $2 ~ /^[0-9.]+$/ {
       gsub("%", ""); sum += $4; if ($4 < 0 || $4 > 100 || $6 > 100.05) bad = 1; rows++ }
     END { printf "  op-share rows %d, self shares sum %.2f%%\n", rows, sum;
           exit !(rows >= 6 && sum > 99.0 && sum < 101.0 && !bad) }' <<<"$out" ||
  fail "op shares do not add up to ~100% of the step"

# expect_bad_input <pattern the message must contain> <args...>
expect_bad_input() {
  local pattern=$1 rc
  shift
  set +e
  "$qtrain" bench "$@" >"$work/out.txt" 2>"$work/err.txt"
  rc=$?
  set -e
  [[ $rc -eq 2 ]] || { cat "$work/err.txt" >&2; fail "bench $*: exit $rc, expected 2"; }
  grep -q '^qtrain: error: ' "$work/err.txt" || fail "bench $*: no 'qtrain: error:' line"
  grep -qF -- "$pattern" "$work/err.txt" || { cat "$work/err.txt" >&2; fail "bench $*: message lacks '$pattern'"; }
  echo "  bench $*: $(cat "$work/err.txt")"
}

expect_bad_input "needs a GPU" --preset llama3-8b --cpu
expect_bad_input "needs a GPU" --preset llama2-7b --cpu
expect_bad_input "unknown model preset" --preset llama9 --cpu
expect_bad_input "--steps" --preset tiny --steps 0 --cpu
expect_bad_input "--op-shares" --preset tiny --op-shares -1 --cpu

# --op-shares 0 leaves the table out.
"$qtrain" bench --preset tiny --steps 1 --warmup 0 --op-shares 0 --cpu >"$work/out.txt" 2>"$work/err.txt" ||
  { cat "$work/err.txt" >&2; fail "bench --op-shares 0 exited $?"; }
grep -q '^op shares:' "$work/out.txt" && fail "--op-shares 0 still printed the table"
echo "bench: ok"
