#!/usr/bin/env python3
"""Writes tests/data/bnb_tiny/: a tiny random Llama quantized to NF4 by transformers + bitsandbytes and
saved with save_pretrained, plus bitsandbytes' own dequantization of every 4-bit weight. Read by
tests/unit/io/test_bnb4bit_golden.cpp, which loads the folder with qtrain's loader and compares.
Run by hand, not in CI:

    pip install torch bitsandbytes transformers
    python tests/reference/bnb_model_golden.py [--out tests/data/bnb_tiny]
    python tests/reference/bnb_model_golden.py --check QUANTIZED_DIR --orig FLOAT_DIR

The second form checks the other direction: a folder written by `qtrain quantize FLOAT_DIR
QUANTIZED_DIR` loads in transformers + bitsandbytes, and every 4-bit weight dequantizes exactly as
bitsandbytes' own quantization of the original weight does (the double-quant offset may differ by an
ulp, since the two sum the absmax mean in different orders, so the comparison allows 1e-6 relative).

Files written into --out:
  model/            the save_pretrained folder (config.json with quantization_config, model.safetensors)
  dequantized.safetensors
                    for each 4-bit weight P.weight: P.weight as float32 [out, in], from
                    bitsandbytes.functional.dequantize_4bit with its quant state asked for float32 output
  VERSIONS          torch, bitsandbytes and transformers versions and how the model was quantized

The shapes are chosen so that the MLP weights end in a partial NF4 block and need two nested (256)
blocks: hidden 72, intermediate 230 (72 * 230 = 16560 = 258.75 blocks of 64).
If transformers cannot quantize on the CPU with the installed bitsandbytes, each linear weight is
quantized with bitsandbytes.functional.quantize_4bit and its state dict written the way Linear4bit
does (weight + QuantState.as_dict(packed=True)), which is what save_pretrained writes.
"""
import argparse
import json
import os
import shutil
import tempfile

import torch
import bitsandbytes
import bitsandbytes.functional as F
import transformers
from safetensors.torch import save_file
from transformers import BitsAndBytesConfig, LlamaConfig, LlamaForCausalLM

LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def tiny_config():
    return LlamaConfig(
        vocab_size=256,
        hidden_size=72,
        intermediate_size=230,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
        torch_dtype="bfloat16",
    )


def bnb_config():
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )


def dequantize_f32(weight_u8, quant_state):
    qs = quant_state
    qs32 = F.QuantState(
        absmax=qs.absmax, shape=qs.shape, code=qs.code, blocksize=qs.blocksize, quant_type=qs.quant_type,
        dtype=torch.float32, offset=qs.offset, state2=qs.state2,
    )
    return F.dequantize_4bit(weight_u8, qs32).to(torch.float32).contiguous()


def via_transformers(float_dir, model_dir):
    model = LlamaForCausalLM.from_pretrained(
        float_dir, quantization_config=bnb_config(), device_map="cpu", torch_dtype=torch.bfloat16
    )
    model.save_pretrained(model_dir, safe_serialization=True)
    deq = {}
    for name, module in model.named_modules():
        if isinstance(module, bitsandbytes.nn.Linear4bit):
            deq[name + ".weight"] = dequantize_f32(module.weight.data, module.weight.quant_state)
    return deq


def via_functional(model, model_dir):
    os.makedirs(model_dir, exist_ok=True)
    state = {}
    deq = {}
    for key, value in model.state_dict().items():
        prefix = key[: -len(".weight")] if key.endswith(".weight") else None
        if prefix and prefix.split(".")[-1] in LINEAR:
            packed, qs = F.quantize_4bit(value, blocksize=64, compress_statistics=True, quant_type="nf4")
            state[key] = packed
            for k, v in qs.as_dict(packed=True).items():
                state[key + "." + k] = v
            deq[key] = dequantize_f32(packed, qs)
        else:
            state[key] = value.contiguous()
    save_file(state, os.path.join(model_dir, "model.safetensors"), metadata={"format": "pt"})
    config = model.config
    config.quantization_config = bnb_config()
    config.save_pretrained(model_dir)
    return deq


def check_qtrain_output(quantized_dir, float_dir):
    from safetensors.torch import load_file
    import glob
    original = {}
    for f in glob.glob(os.path.join(float_dir, "*.safetensors")):
        original.update(load_file(f))
    model = transformers.AutoModelForCausalLM.from_pretrained(quantized_dir, device_map="cpu")
    checked = 0
    for name, module in model.named_modules():
        if isinstance(module, bitsandbytes.nn.Linear4bit):
            ours = dequantize_f32(module.weight.data, module.weight.quant_state)
            packed, qs = F.quantize_4bit(original[name + ".weight"], blocksize=module.weight.quant_state.blocksize,
                                         compress_statistics=module.weight.quant_state.nested, quant_type="nf4")
            theirs = dequantize_f32(packed, qs)
            assert torch.equal(packed, module.weight.data), name + ": packed nibbles differ"
            assert torch.allclose(ours, theirs, rtol=1e-6, atol=0), name + ": dequantized values differ"
            checked += 1
    ids = torch.tensor([[1, 5, 9, 17, 33]])
    logits = model(ids).logits
    assert torch.isfinite(logits).all()
    print(f"{quantized_dir}: loaded by transformers {transformers.__version__} + bitsandbytes "
          f"{bitsandbytes.__version__}; {checked} 4-bit weights match bitsandbytes' own quantization; forward ok")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--check", help="a folder written by qtrain quantize (see above)")
    ap.add_argument("--orig", help="the folder it was quantized from")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "data", "bnb_tiny"))
    args = ap.parse_args()
    if args.check:
        check_qtrain_output(args.check, args.orig)
        return
    out = os.path.abspath(args.out)
    model_dir = os.path.join(out, "model")
    shutil.rmtree(model_dir, ignore_errors=True)
    os.makedirs(out, exist_ok=True)

    torch.manual_seed(20240611)
    model = LlamaForCausalLM(tiny_config()).to(torch.bfloat16)
    with torch.no_grad():  # weights of a realistic scale, with a few outliers per matrix
        for p in model.parameters():
            if p.dim() == 2:
                p.copy_((torch.randn(p.shape) * 0.02 * (1 + 4 * (torch.rand(p.shape) > 0.995))).to(p.dtype))

    method = "transformers from_pretrained(quantization_config=BitsAndBytesConfig(nf4, double quant)) + save_pretrained"
    with tempfile.TemporaryDirectory() as float_dir:
        model.save_pretrained(float_dir, safe_serialization=True)
        try:
            deq = via_transformers(float_dir, model_dir)
        except Exception as e:  # noqa: BLE001 - any failure of the CPU path selects the fallback
            print(f"transformers path failed ({type(e).__name__}: {e}); using bitsandbytes.functional")
            shutil.rmtree(model_dir, ignore_errors=True)
            deq = via_functional(model, model_dir)
            method = "bitsandbytes.functional.quantize_4bit per weight, Linear4bit state-dict keys (fallback)"
    for extra in ("generation_config.json",):
        p = os.path.join(model_dir, extra)
        if os.path.exists(p):
            os.remove(p)
    save_file(deq, os.path.join(out, "dequantized.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(out, "VERSIONS"), "w") as f:
        f.write(f"torch {torch.__version__}\nbitsandbytes {bitsandbytes.__version__}\n"
                f"transformers {transformers.__version__}\nmethod {method}\n")
    print(f"wrote {out}: {len(deq)} dequantized weights ({method})")


if __name__ == "__main__":
    main()
