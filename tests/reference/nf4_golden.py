#!/usr/bin/env python3
"""Writes tests/data/nf4/: NF4 golden files from bitsandbytes' own quantize_4bit / dequantize_4bit
(CPU path), read by tests/unit/kernels/test_nf4_golden.cpp. Run by hand, not in CI:

    pip install torch bitsandbytes numpy
    python tests/reference/nf4_golden.py [--out tests/data/nf4]

Each case is one binary file <name>.bin holding, in order (little-endian, no padding):
  x        n values of the input dtype (f32, bf16 or f16 bits)
  packed   (n + 1) / 2 bytes                 quantize_4bit(compress_statistics=False)
  absmax   nblocks f32
  deq      n f32                              dequantize_4bit of the above, float32 output
  and, when nested (compress_statistics=True):
  qabsmax  nblocks bytes
  nested   ceil(nblocks / 256) f32
  deq_dq   n f32                              dequantize_4bit with the double-quantized state
manifest.txt has one line per case: name dtype n blocksize nested offset_bits(hex, 0 if not nested).
dynamic_code.bin holds the 256 f32 values of the nested quant map bitsandbytes stored.
"""
import argparse
import os
import struct

import numpy as np
import torch
import bitsandbytes
import bitsandbytes.functional as F

DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}


def raw_bytes(t):
    t = t.contiguous().cpu()
    if t.dtype in (torch.bfloat16, torch.float16):
        return t.view(torch.int16).numpy().astype("<i2").tobytes()
    if t.dtype == torch.float32:
        return t.numpy().astype("<f4").tobytes()
    return t.numpy().astype(np.uint8).tobytes()


def make_input(seed, shape, kind, dtype):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float32)
    if kind == "heavy":  # Student-t-like tails: a few large outliers per block
        x = x / torch.rand(shape, generator=g).clamp(min=0.02)
    elif kind == "large":
        x = x * 3.0e4
    elif kind == "tiny":
        x = x * 1.0e-30
    elif kind == "zero_block":  # block 1 and the (partial) last block all zero
        flat = x.reshape(-1)
        flat[64:128] = 0.0
        flat[-(flat.numel() % 64 or 64):] = 0.0
    elif kind == "mixed":  # magnitudes spanning many decades from block to block
        flat = x.reshape(-1)
        scales = 10.0 ** torch.randint(-6, 4, ((flat.numel() + 63) // 64,), generator=g).float()
        flat *= scales.repeat_interleave(64)[: flat.numel()]
    return x.to(DTYPES[dtype])


# name, dtype, shape, blocksize, data kind. bitsandbytes' CPU quantizer scales a partial last block of a
# 16-bit input in that 16-bit type (a PyTorch promotion detail), so 16-bit cases use whole blocks only.
CASES = [
    ("f32_5x7_bs64", "f32", (5, 7), 64, "normal"),
    ("f32_13x11_bs32", "f32", (13, 11), 32, "normal"),
    ("f32_1x129_bs64", "f32", (1, 129), 64, "heavy"),
    ("f32_7x333_bs64_zero", "f32", (7, 333), 64, "zero_block"),
    ("f32_64x520_bs64", "f32", (64, 520), 64, "mixed"),
    ("f32_9x517_bs256", "f32", (9, 517), 256, "large"),
    ("f32_3x1001_bs256_tiny", "f32", (3, 1001), 256, "tiny"),
    ("f32_3x4099_bs4096", "f32", (3, 4099), 4096, "heavy"),
    ("f32_1x4096_bs4096", "f32", (1, 4096), 4096, "normal"),
    ("bf16_32x64_bs64", "bf16", (32, 64), 64, "normal"),
    ("bf16_16x512_bs32", "bf16", (16, 512), 32, "heavy"),
    ("f16_8x256_bs256", "f16", (8, 256), 256, "normal"),
    ("bf16_4x4096_bs4096", "bf16", (4, 4096), 4096, "mixed"),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "data", "nf4"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    lines = []
    dyn = None
    for seed, (name, dtype, shape, bs, kind) in enumerate(CASES):
        x = make_input(1000 + seed, shape, kind, dtype)
        n = x.numel()
        packed, st = F.quantize_4bit(x, blocksize=bs, compress_statistics=False, quant_type="nf4")
        deq = F.dequantize_4bit(packed, st).to(torch.float32)
        # The f32 output of dequantize_4bit: request it directly, so no 16-bit rounding interferes.
        st32 = F.QuantState(absmax=st.absmax, shape=st.shape, dtype=torch.float32, blocksize=bs, code=st.code,
                            quant_type="nf4")
        deq = F.dequantize_4bit(packed, st32)
        blob = raw_bytes(x) + raw_bytes(packed.reshape(-1)) + raw_bytes(st.absmax) + raw_bytes(deq.reshape(-1))
        nested = 1
        packed2, st2 = F.quantize_4bit(x, blocksize=bs, compress_statistics=True, quant_type="nf4")
        assert torch.equal(packed2, packed)
        st2_32 = F.QuantState(absmax=st2.absmax, shape=st2.shape, dtype=torch.float32, blocksize=bs, code=st2.code,
                              quant_type="nf4", offset=st2.offset, state2=st2.state2)
        deq_dq = F.dequantize_4bit(packed2, st2_32)
        blob += raw_bytes(st2.absmax) + raw_bytes(st2.state2.absmax) + raw_bytes(deq_dq.reshape(-1))
        offset_bits = struct.unpack("<I", struct.pack("<f", float(st2.offset)))[0]
        dyn = st2.state2.code
        with open(os.path.join(args.out, name + ".bin"), "wb") as f:
            f.write(blob)
        lines.append(f"{name} {dtype} {n} {bs} {nested} {offset_bits:08x}")
    with open(os.path.join(args.out, "dynamic_code.bin"), "wb") as f:
        f.write(raw_bytes(dyn))
    with open(os.path.join(args.out, "manifest.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(args.out, "VERSIONS"), "w") as f:
        f.write(f"bitsandbytes {bitsandbytes.__version__}\ntorch {torch.__version__}\n")


if __name__ == "__main__":
    main()
