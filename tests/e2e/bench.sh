#!/usr/bin/env bash
# qtrain bench on the CPU model: the tiny preset trains two timed steps and reports every field
# (step time and its phases, tokens/s, the FLOP count, MFU, memory); the large presets are refused
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
            '^loss: [0-9.]+ ' '^per-op share: nsys profile'; do
  grep -Eq -- "$want" <<<"$out" || fail "output lacks '$want'"
done
# A step takes time and the loss is a number near ln(vocab 512) = 6.24 for random weights.
grep -Eq '^tokens/s: (0\.0|inf|nan)' <<<"$out" && fail "tokens/s is not a positive number"
grep -Eq '^loss: [5-7]\.' <<<"$out" || fail "first loss is not near ln(512)"

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
echo "bench: ok"
