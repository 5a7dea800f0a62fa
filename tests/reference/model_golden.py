#!/usr/bin/env python3
"""Writes tests/data/model_golden/: forward and backward of small random Llama-family models with a
PEFT LoRA on all seven linear layers, computed by transformers + peft on the CPU in float32. Read by
tests/unit/model/test_model_golden.cpp, which runs qtrain's CPU model on the same files. Run by hand,
not in CI:

    pip install torch transformers peft bitsandbytes safetensors
    python tests/reference/model_golden.py [--out tests/data/model_golden] [--only CASE ...]

--only rewrites just the named cases (and leaves VERSIONS alone), so adding a case does not touch
the bytes of the others.

Every case <name>/ holds
  model/             config.json + model.safetensors (float32), written by save_pretrained
                     (absent for a case that names its base in case.json)
  adapter/           adapter_config.json + adapter_model.safetensors, written by PEFT's save_pretrained;
                     lora_B is random (not PEFT's zeros) so that every gradient path carries signal
  batch.safetensors  input_ids, position_ids, segment_ids, labels: int32 [B, T]
  expected.safetensors
                     loss (f64 [1]), token_logprobs (f32 [B, T], 0 where the label is -100) and the
                     gradient of every LoRA tensor under its PEFT key name
  case.json          the case's options (base folder, whether the base is NF4)

The batch has two rows of T = 16. Row 0 is one example right-padded (attention_mask zero on the
padding, labels -100 there). Row 1 packs two examples with position_ids restarting at 0. transformers'
eager attention would attend across the boundary of a packed row, so the reference runs each example
of row 1 as its own sequence and concatenates the log-probabilities; the loss is the mean of -log p
over every unmasked label of the batch, formed in one autograd graph so the gradients are those of
the batched loss.

The Mistral case has sliding_window 5, shorter than every example of the batch, so the window
changes every row's later tokens; the script also prints the loss with the window removed.

The NF4 case reuses the llama3_gqa base and adapter: each of the seven linear weights is quantized by
bitsandbytes.functional.quantize_4bit(W, blocksize=64, compress_statistics=True, quant_type="nf4") and
reconstructed by bitsandbytes' rule (see nf4_roundtrip) before the same forward and backward. qtrain
loads the float32 weights and quantizes them with its own NF4 code (quantize_nf4 option).
"""
import argparse
import json
import os
import shutil

import torch
import transformers
import peft
import bitsandbytes
import bitsandbytes.functional as bnbf
from peft import LoraConfig, get_peft_model
from safetensors.torch import save_file
from transformers import (LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM, Qwen2Config,
                          Qwen2ForCausalLM)

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
T = 16

CASES = [
    dict(name="llama_mha", cls=(LlamaConfig, LlamaForCausalLM), seed=11,
         config=dict(vocab_size=101, hidden_size=48, intermediate_size=88, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=4, rms_norm_eps=1e-6,
                     rope_theta=10000.0, tie_word_embeddings=False, max_position_embeddings=256),
         lora=dict(r=8, lora_alpha=16, use_rslora=False)),
    dict(name="llama3_gqa", cls=(LlamaConfig, LlamaForCausalLM), seed=12,
         config=dict(vocab_size=127, hidden_size=64, intermediate_size=112, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5,
                     tie_word_embeddings=True, max_position_embeddings=256,
                     # original 64: the 8 frequencies of head_dim 16 fall in all three llama3 bands
                     rope_parameters=dict(rope_type="llama3", rope_theta=500000.0, factor=8.0,
                                          low_freq_factor=1.0, high_freq_factor=4.0,
                                          original_max_position_embeddings=64)),
         lora=dict(r=4, lora_alpha=8, use_rslora=True)),
    dict(name="qwen2_bias", cls=(Qwen2Config, Qwen2ForCausalLM), seed=13,
         config=dict(vocab_size=97, hidden_size=56, intermediate_size=80, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-6,
                     rope_theta=1000000.0, tie_word_embeddings=True, max_position_embeddings=256,
                     use_sliding_window=False),
         lora=dict(r=5, lora_alpha=10, use_rslora=False)),
    dict(name="mistral_swa", cls=(MistralConfig, MistralForCausalLM), seed=14,
         config=dict(vocab_size=113, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5,
                     rope_theta=10000.0, tie_word_embeddings=False, max_position_embeddings=256,
                     sliding_window=5),
         lora=dict(r=6, lora_alpha=12, use_rslora=False)),
]
NF4_CASE = "llama3_gqa_nf4"  # built from llama3_gqa


def make_batch(vocab, seed):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab, (2, T), generator=g, dtype=torch.int64)
    pos = torch.zeros(2, T, dtype=torch.int64)
    seg = torch.zeros(2, T, dtype=torch.int64)
    labels = torch.full((2, T), -100, dtype=torch.int64)
    # row 0: 11 real tokens, the first 3 labels masked as a prompt, then padding (id 0)
    n0 = 11
    ids[0, n0:] = 0
    pos[0, :n0] = torch.arange(n0)
    seg[0, :n0] = 1
    labels[0, 3:n0 - 1] = ids[0, 4:n0]
    # row 1: examples of 7 and 9 tokens; the second masks its first 2 labels
    spans = [(0, 7, 0), (7, 16, 2)]
    for s, (b, e, prompt) in enumerate(spans):
        pos[1, b:e] = torch.arange(e - b)
        seg[1, b:e] = s + 1
        labels[1, b + prompt:e - 1] = ids[1, b + prompt + 1:e]
    return ids, pos, seg, labels, n0, spans


def randomize_base(model, seed):
    g = torch.Generator().manual_seed(seed + 1000)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.08 * torch.randn(p.shape, generator=g))


def randomize_lora_b(pm, seed):
    g = torch.Generator().manual_seed(seed + 2000)
    with torch.no_grad():
        for name, p in pm.named_parameters():
            if "lora_B" in name:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))


def forward_backward(pm, batch):
    ids, pos, seg, labels, n0, spans = batch
    pm.zero_grad(set_to_none=True)
    tlp = torch.zeros(2, T, dtype=torch.float32)
    pieces = []
    # row 0 with its attention mask; row 1 one example at a time
    mask0 = (seg[0] > 0).long()[None]
    logits0 = pm(input_ids=ids[0:1], position_ids=pos[0:1], attention_mask=mask0).logits[0]
    pieces.append((0, 0, T, logits0))
    for b, e, _ in spans:
        lg = pm(input_ids=ids[1:2, b:e], position_ids=pos[1:2, b:e]).logits[0]
        pieces.append((1, b, e, lg))
    total = torch.zeros((), dtype=torch.float32)
    count = int((labels != -100).sum())
    rows = [[None] * T for _ in range(2)]
    for r, b, e, lg in pieces:
        logp = torch.log_softmax(lg.float(), dim=-1)
        for t in range(b, e):
            lab = int(labels[r, t])
            if lab == -100:
                continue
            v = logp[t - b, lab]
            rows[r][t] = v
            total = total + v
    loss = -total / count
    loss.backward()
    for r in range(2):
        for t in range(T):
            if rows[r][t] is not None:
                tlp[r, t] = rows[r][t].detach()
    grads = {}
    for name, p in pm.named_parameters():
        if "lora_" in name:
            key = name.replace(".default", "")
            grads[key] = p.grad.detach().clone().contiguous()
    return loss.detach().double(), tlp, grads


def nf4_roundtrip(w):
    """bitsandbytes' quantization, then its dequantization rule code[nibble] * absmax, with the absmax
    restored by bitsandbytes' own dequantize_blockwise + offset. bitsandbytes 0.50.2's CPU
    dequantize_4bit kernel does not follow that rule for a weight whose rows are not whole blocks
    (down_proj [64, 112] here: most elements after the first row come out wrong), so the rule is
    applied here directly."""
    q, state = bnbf.quantize_4bit(w.contiguous(), blocksize=64, compress_statistics=True, quant_type="nf4")
    absmax = bnbf.dequantize_blockwise(state.absmax, state.state2) + state.offset
    b = q.flatten()
    nibbles = torch.stack([b >> 4, b & 15], 1).flatten().long()[: w.numel()]
    flat = state.code.float()[nibbles] * absmax.float().repeat_interleave(64)[: w.numel()]
    return flat.reshape(w.shape).to(w.dtype)


def write_case(out, name, loss, tlp, grads, batch, case_meta):
    d = os.path.join(out, name)
    os.makedirs(d, exist_ok=True)
    ids, pos, seg, labels, _, _ = batch
    save_file({"input_ids": ids.int().contiguous(), "position_ids": pos.int().contiguous(),
               "segment_ids": seg.int().contiguous(), "labels": labels.int().contiguous()},
              os.path.join(d, "batch.safetensors"), metadata={"format": "pt"})
    tensors = {"loss": loss.reshape(1), "token_logprobs": tlp.contiguous()}
    tensors.update(grads)
    save_file(tensors, os.path.join(d, "expected.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(d, "case.json"), "w") as f:
        json.dump(case_meta, f, indent=2, sort_keys=True)
        f.write("\n")
    print(f"{name}: loss {loss.item():.9f}, {len(grads)} LoRA gradients")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "data", "model_golden"))
    ap.add_argument("--only", nargs="+", metavar="CASE", help="write only these cases")
    args = ap.parse_args()
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    names = [c["name"] for c in CASES] + [NF4_CASE]
    only = set(args.only or names)
    unknown = only - set(names)
    if unknown:
        ap.error(f"unknown case(s) {sorted(unknown)}; known: {names}")
    if NF4_CASE in only:
        only.add("llama3_gqa")  # its base
    for case in only:  # README.md is kept
        shutil.rmtree(os.path.join(out, case), ignore_errors=True)
    torch.set_num_threads(1)

    for case in CASES:
        if case["name"] not in only:
            continue
        cfg_cls, model_cls = case["cls"]
        torch.manual_seed(case["seed"])
        cfg = cfg_cls(**case["config"])
        model = model_cls(cfg).float().eval()
        randomize_base(model, case["seed"])
        d = os.path.join(out, case["name"])
        model.config.attn_implementation = "eager"
        model.save_pretrained(os.path.join(d, "model"), safe_serialization=True)
        model.set_attn_implementation("eager")

        torch.manual_seed(case["seed"] + 500)
        lcfg = LoraConfig(target_modules=TARGETS, lora_dropout=0.0, bias="none", task_type="CAUSAL_LM",
                          **case["lora"])
        pm = get_peft_model(model, lcfg)
        randomize_lora_b(pm, case["seed"])
        pm.eval()  # no dropout anywhere; the LoRA parameters still require grad
        pm.save_pretrained(os.path.join(d, "adapter"))
        # PEFT's model-card template and HF's generation config say nothing the tests read
        os.remove(os.path.join(d, "adapter", "README.md"))
        os.remove(os.path.join(d, "model", "generation_config.json"))

        batch = make_batch(cfg.vocab_size, case["seed"])
        loss, tlp, grads = forward_backward(pm, batch)
        write_case(out, case["name"], loss, tlp, grads, batch, {"base": "model", "nf4": False})

        if getattr(cfg, "sliding_window", None) is not None:
            window = cfg.sliding_window
            cfg.sliding_window = None  # the modeling code reads it at each forward
            print(f"{case['name']}: loss without the window {forward_backward(pm, batch)[0].item():.9f}")
            cfg.sliding_window = window

        if case["name"] == "llama3_gqa" and NF4_CASE in only:
            with torch.no_grad():
                for mname, mod in pm.named_modules():
                    if hasattr(mod, "base_layer") and any(mname.endswith(t) for t in TARGETS):
                        w = mod.base_layer.weight
                        w.copy_(nf4_roundtrip(w.data))
            loss, tlp, grads = forward_backward(pm, batch)
            nd = os.path.join(out, NF4_CASE)
            shutil.copytree(os.path.join(d, "adapter"), os.path.join(nd, "adapter"))
            write_case(out, NF4_CASE, loss, tlp, grads, batch, {"base": "../llama3_gqa/model", "nf4": True})

    if args.only:
        return
    with open(os.path.join(out, "VERSIONS"), "w") as f:
        f.write(f"torch {torch.__version__}\ntransformers {transformers.__version__}\npeft {peft.__version__}\n"
                f"bitsandbytes {bitsandbytes.__version__}\n")


if __name__ == "__main__":
    main()
