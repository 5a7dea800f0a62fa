#!/usr/bin/env python3
"""Writes tests/data/full_ft_golden/: forward and backward of small random Llama-family models with
every weight trainable (full fine-tuning, no adapter), computed by transformers on the CPU in float32.
Read by tests/unit/model/test_full_finetune.cpp (the CPU model) and the CUDA model's full fine-tuning
tests. Run by hand, not in CI:

    pip install torch transformers peft bitsandbytes safetensors
    python tests/reference/full_ft_golden.py [--out tests/data/full_ft_golden]

(peft and bitsandbytes only because the batch and the weight randomization are imported from
model_golden.py, so both golden sets follow one convention.)

Every case <name>/ holds
  config.json, model.safetensors
                     the model (float32), written by save_pretrained: the folder loads as an HF model
  batch.safetensors  input_ids, position_ids, segment_ids, labels: int32 [2, 16]
  expected.safetensors
                     loss (f64 [1]) and token_logprobs (f32 [2, 16], 0 where the label is -100)
  grads.safetensors  the gradient (f32) of the loss with respect to every parameter, under its HF name
                     and with its shape: model.embed_tokens.weight, model.layers.N.input_layernorm.weight,
                     model.layers.N.self_attn.{q,k,v,o}_proj.weight, model.layers.N.self_attn.{q,k,v}_proj.bias
                     (Qwen2), model.layers.N.post_attention_layernorm.weight,
                     model.layers.N.mlp.{gate,up,down}_proj.weight, model.norm.weight, and lm_head.weight when
                     the embeddings are untied (tied: the embedding's gradient holds both uses)

The batch is model_golden.py's: row 0 one example right-padded (attention_mask zero on the padding,
labels -100 there), row 1 two packed examples with position_ids restarting at 0; segment_ids are 1, 2
for the examples and 0 for padding. The reference runs each example of row 1 as its own sequence (eager
attention would attend across the boundary) and forms the mean of -log p over every unmasked label of
the batch in one autograd graph, so the gradients are those of the batched loss.
"""
import argparse
import os
import shutil
import sys

import torch
import transformers
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from model_golden import T, make_batch, randomize_base  # noqa: E402

CASES = [
    dict(name="llama3_untied", cls=(LlamaConfig, LlamaForCausalLM), seed=21,
         config=dict(vocab_size=160, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5,
                     tie_word_embeddings=False, max_position_embeddings=256,
                     # original 64: the 8 frequencies of head_dim 16 fall in all three llama3 bands
                     rope_parameters=dict(rope_type="llama3", rope_theta=500000.0, factor=8.0,
                                          low_freq_factor=1.0, high_freq_factor=4.0,
                                          original_max_position_embeddings=64))),
    dict(name="qwen2_tied", cls=(Qwen2Config, Qwen2ForCausalLM), seed=22,
         config=dict(vocab_size=128, hidden_size=64, intermediate_size=80, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-6,
                     rope_theta=1000000.0, tie_word_embeddings=True, max_position_embeddings=256,
                     use_sliding_window=False)),
]


def forward_backward(model, batch):
    ids, pos, seg, labels, n0, spans = batch
    model.zero_grad(set_to_none=True)
    pieces = []
    mask0 = (seg[0] > 0).long()[None]
    logits0 = model(input_ids=ids[0:1], position_ids=pos[0:1], attention_mask=mask0).logits[0]
    pieces.append((0, 0, logits0))
    for b, e, _ in spans:
        pieces.append((1, b, model(input_ids=ids[1:2, b:e], position_ids=pos[1:2, b:e]).logits[0]))
    count = int((labels != -100).sum())
    total = torch.zeros((), dtype=torch.float32)
    tlp = torch.zeros(2, T, dtype=torch.float32)
    for r, b, lg in pieces:
        logp = torch.log_softmax(lg.float(), dim=-1)
        for i in range(lg.shape[0]):
            lab = int(labels[r, b + i])
            if lab == -100:
                continue
            total = total + logp[i, lab]
            tlp[r, b + i] = logp[i, lab].detach()
    loss = -total / count
    loss.backward()
    grads = {name: p.grad.detach().clone().contiguous() for name, p in model.named_parameters()}
    return loss.detach().double(), tlp, grads


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "data", "full_ft_golden"))
    args = ap.parse_args()
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    torch.set_num_threads(1)

    for case in CASES:
        d = os.path.join(out, case["name"])
        shutil.rmtree(d, ignore_errors=True)
        cfg_cls, model_cls = case["cls"]
        torch.manual_seed(case["seed"])
        cfg = cfg_cls(**case["config"])
        model = model_cls(cfg).float().eval()
        randomize_base(model, case["seed"])
        model.config.attn_implementation = "eager"
        model.save_pretrained(d, safe_serialization=True)
        os.remove(os.path.join(d, "generation_config.json"))
        model.set_attn_implementation("eager")

        batch = make_batch(cfg.vocab_size, case["seed"])
        loss, tlp, grads = forward_backward(model, batch)
        ids, pos, seg, labels, _, _ = batch
        save_file({"input_ids": ids.int().contiguous(), "position_ids": pos.int().contiguous(),
                   "segment_ids": seg.int().contiguous(), "labels": labels.int().contiguous()},
                  os.path.join(d, "batch.safetensors"), metadata={"format": "pt"})
        save_file({"loss": loss.reshape(1), "token_logprobs": tlp.contiguous()},
                  os.path.join(d, "expected.safetensors"), metadata={"format": "pt"})
        save_file(grads, os.path.join(d, "grads.safetensors"), metadata={"format": "pt"})
        print(f"{case['name']}: loss {loss.item():.9f}, {len(grads)} gradients")

    with open(os.path.join(out, "VERSIONS"), "w") as f:
        f.write(f"torch {torch.__version__}\ntransformers {transformers.__version__}\n")


if __name__ == "__main__":
    main()
