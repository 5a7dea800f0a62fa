#!/usr/bin/env python3
"""Checks that an adapter trained by `qtrain train` is a PEFT adapter that PEFT reads the way qtrain
means it: PEFT loads it onto the transformers model built from the same tiny weights, and the
log-probabilities and logits match qtrain's CPU model in fp32. Run by hand, not in CI:

    pip install torch transformers peft safetensors
    python tests/reference/peft_adapter_check.py --qtrain build-peft/tools/qtrain [--work /tmp/peft_check]

Steps (all in --work, which is recreated):
  1. `qtrain make-tiny model`, `qtrain make-data data.jsonl`, and a short SFT run with `adapter: lora`
     on all seven linear layers (the base stays bf16, so PEFT's base is the very same weights; a qlora
     run would quantize qtrain's base to NF4 and PEFT's base would differ).
  2. `qtrain eval --no-loss --dump-logprobs` with and without the adapter, for the tokens of a text
     prompt and for a sequence of random token ids: qtrain's per-token log p(ids[t+1] | ids[..t]) and
     the last position's logits.
  3. transformers loads model/ with dtype=float32 (bf16 widened exactly, as qtrain's CPU model
     does), peft.PeftModel.from_pretrained applies the adapter, and the same quantities are compared:
     max |difference|, and that maximum divided by max |value| of the reference ("normalized").
     Also printed: how far the adapter moves the logits, so that a pass cannot come from an adapter
     that does nothing or is silently ignored.
Exits 1 when a normalized error exceeds --tol (default 1e-4) or the adapter has no effect.
"""
import argparse
import json
import os
import random
import shutil
import subprocess
import sys

import torch
import transformers
import peft
from peft import PeftModel
from transformers import AutoModelForCausalLM

RUN_YAML = """\
base_model: model
adapter: lora
lora_r: 8
lora_alpha: 16
lora_dropout: 0.0
lora_target_linear: true
sequence_len: 128
micro_batch_size: 4
gradient_accumulation_steps: 1
max_steps: {steps}
learning_rate: 0.01
lr_scheduler: constant
warmup_steps: 0
optimizer: adamw_torch
datasets:
  - path: data.jsonl
    type: alpaca
val_set_size: 8
output_dir: adapter
seed: 7
"""

PROMPT = "Below is an instruction. Write a short answer about the tiny model and its data."


def run(cmd, cwd):
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"failed ({r.returncode}): {' '.join(cmd)}\n{r.stdout}\n{r.stderr}")
    return r.stdout


def qtrain_dump(qtrain, work, name, adapter, tokens=None, prompt=None):
    out = os.path.join(work, name + ".json")
    cmd = [qtrain, "eval", "run.yaml", "--no-loss", "--dump-logprobs", out]
    if adapter:
        cmd += ["--adapter", "adapter"]
    if tokens is not None:
        cmd += ["--tokens", ",".join(str(t) for t in tokens)]
    else:
        cmd += ["--prompt", prompt]
    run(cmd, work)
    with open(out) as f:
        return json.load(f)


def torch_values(model, ids):
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].double()
    lp = torch.log_softmax(logits, dim=-1)
    token_lp = lp[:-1].gather(1, torch.tensor(ids[1:]).unsqueeze(1)).squeeze(1)
    return token_lp, logits[-1]


def compare(ours, ref):
    ours = torch.tensor(ours, dtype=torch.float64)
    err = (ours - ref).abs().max().item()
    scale = ref.abs().max().item()
    return err, err / scale


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--qtrain", required=True, help="the qtrain binary (e.g. build-peft/tools/qtrain)")
    ap.add_argument("--work", default="/tmp/qtrain_peft_check", help="scratch folder (recreated)")
    ap.add_argument("--steps", type=int, default=12, help="training steps of the adapter")
    ap.add_argument("--tol", type=float, default=1e-4, help="largest normalized error accepted")
    args = ap.parse_args()
    qtrain = os.path.abspath(args.qtrain)
    work = os.path.abspath(args.work)
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)

    run([qtrain, "make-tiny", "model", "--seed", "1"], work)
    run([qtrain, "make-data", "data.jsonl", "--count", "64", "--seed", "3"], work)
    with open(os.path.join(work, "run.yaml"), "w") as f:
        f.write(RUN_YAML.format(steps=args.steps))
    run([qtrain, "train", "run.yaml"], work)

    base = AutoModelForCausalLM.from_pretrained(os.path.join(work, "model"), dtype=torch.float32,
                                                attn_implementation="eager")
    base.eval()
    vocab = base.config.vocab_size
    rng = random.Random(5)
    cases = [("prompt", None, PROMPT), ("random_ids", [1] + [rng.randrange(vocab) for _ in range(63)], None)]

    # The base alone first (before PeftModel wraps the same modules in place).
    base_ref = {}
    for name, tokens, prompt in cases:
        q = qtrain_dump(qtrain, work, name + "_base", False, tokens, prompt)
        base_ref[name] = (q["tokens"],) + torch_values(base, q["tokens"])
        lp_err = compare(q["logprobs"], base_ref[name][1])
        lg_err = compare(q["last_logits"], base_ref[name][2])
        print(f"base    {name:10s} T={len(q['tokens']):3d}  logprobs max abs {lp_err[0]:.3e} (norm {lp_err[1]:.3e})"
              f"  last logits max abs {lg_err[0]:.3e} (norm {lg_err[1]:.3e})")

    model = PeftModel.from_pretrained(base, os.path.join(work, "adapter"))
    model.eval()
    ok = True
    worst = 0.0
    for name, tokens, prompt in cases:
        q = qtrain_dump(qtrain, work, name + "_lora", True, tokens, prompt)
        ids = q["tokens"]
        assert ids == base_ref[name][0]
        ref_lp, ref_logits = torch_values(model, ids)
        lp_err = compare(q["logprobs"], ref_lp)
        lg_err = compare(q["last_logits"], ref_logits)
        effect = (ref_logits - base_ref[name][2]).abs().max().item()
        lp_effect = (ref_lp - base_ref[name][1]).abs().max().item()
        print(f"adapter {name:10s} T={len(ids):3d}  logprobs max abs {lp_err[0]:.3e} (norm {lp_err[1]:.3e})"
              f"  last logits max abs {lg_err[0]:.3e} (norm {lg_err[1]:.3e})"
              f"  | adapter moves logits by {effect:.3e}, logprobs by {lp_effect:.3e}")
        worst = max(worst, lp_err[1], lg_err[1])
        if effect < 100 * max(lg_err[0], 1e-6) or lp_effect < 100 * max(lp_err[0], 1e-6):
            print(f"FAIL: the adapter's effect on {name} is not well above the error")
            ok = False
    print(f"versions: torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}")
    if worst > args.tol:
        print(f"FAIL: worst normalized error {worst:.3e} > {args.tol:g}")
        ok = False
    print(("PASS" if ok else "FAIL") + f": worst normalized error {worst:.3e} (tolerance {args.tol:g})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
