#!/usr/bin/env python3
"""Writes tests/data/adamw8bit/: bitsandbytes' AdamW8bit run for 20 steps on generated gradients, read by
tests/unit/optim/test_adamw8bit_golden.cpp. Run by hand, not in CI:

    pip install torch bitsandbytes numpy
    python tests/reference/adamw8bit_golden.py [--device cpu|cuda] [--out tests/data/adamw8bit]

Parameters and gradients come from a small integer generator (splitmix64) that the C++ test repeats, so
only the results are stored. Every value it makes is exact in fp32:
    u(stream) = ((next() >> 40) * 2 - 2^24) / 2^24               in [-1, 1)
    param[t][i]      = 0.5 * u(stream 1000 + t)                  (step 0)
    grad[s][t] block b (256 elements): e = next() % 7, then each g = u * 2^-e   (stream 100000 * s + t)
Tensors: sizes 300 and 1000 (under bnb's min_8bit_size of 4096: 32-bit states), 4096 (16 full blocks) and
4353 (17 blocks and a last block of one element).

golden.safetensors holds qmap1 / qmap2 (the two dynamic codes bitsandbytes used), and for steps 0, 1
and 20: t<k>.param.step<s> (f32); for steps 1 and 20: t<k>.state1/.state2 (u8 codes, or f32 moments
for the small tensors) and t<k>.absmax1/.absmax2 (f32, quantized tensors only). The metadata records
the hyper-parameters and the versions.
"""
import argparse
import json
import os
import struct

import numpy as np
import torch
import bitsandbytes
import bitsandbytes.optim

MASK = (1 << 64) - 1
SIZES = [300, 1000, 4096, 4353]
STEPS = 20
SNAPSHOTS = [1, 20]
LR, BETAS, EPS, WD = 5e-3, (0.9, 0.999), 1e-8, 1e-2


class SplitMix64:
    def __init__(self, seed):
        self.s = seed & MASK

    def next(self):
        self.s = (self.s + 0x9E3779B97F4A7C15) & MASK
        z = self.s
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        return z ^ (z >> 31)

    def u(self):
        a = self.next() >> 40
        return (a * 2 - (1 << 24)) / float(1 << 24)


def params0(t, n):
    r = SplitMix64(1000 + t)
    return np.array([0.5 * r.u() for _ in range(n)], dtype=np.float32)


def grads(step, t, n):
    r = SplitMix64(100000 * step + t)
    out = np.empty(n, dtype=np.float32)
    for b in range(0, n, 256):
        scale = 2.0 ** -(r.next() % 7)
        for i in range(b, min(b + 256, n)):
            out[i] = r.u() * scale
    return out


def write_safetensors(path, tensors, metadata):
    header, offset, blobs = {"__metadata__": metadata}, 0, []
    for name, arr in tensors:
        arr = np.ascontiguousarray(arr)
        dtype = {np.dtype("float32"): "F32", np.dtype("uint8"): "U8"}[arr.dtype]
        raw = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": dtype, "shape": list(arr.shape), "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        blobs.append(raw)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "data", "adamw8bit"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)

    ps = [torch.nn.Parameter(torch.from_numpy(params0(t, n)).to(args.device)) for t, n in enumerate(SIZES)]
    opt = bitsandbytes.optim.AdamW8bit(ps, lr=LR, betas=BETAS, eps=EPS, weight_decay=WD)
    out = []
    for t, p in enumerate(ps):
        out.append((f"t{t}.param.step0", p.detach().cpu().numpy().copy()))
    for step in range(1, STEPS + 1):
        for t, (p, n) in enumerate(zip(ps, SIZES)):
            p.grad = torch.from_numpy(grads(step, t, n)).to(args.device)
        opt.step()
        if step in SNAPSHOTS:
            for t, p in enumerate(ps):
                st = opt.state[p]
                out.append((f"t{t}.param.step{step}", p.detach().cpu().numpy().copy()))
                out.append((f"t{t}.state1.step{step}", st["state1"].cpu().numpy().copy()))
                out.append((f"t{t}.state2.step{step}", st["state2"].cpu().numpy().copy()))
                if "absmax1" in st:
                    out.append((f"t{t}.absmax1.step{step}", st["absmax1"].cpu().numpy().copy()))
                    out.append((f"t{t}.absmax2.step{step}", st["absmax2"].cpu().numpy().copy()))
                if "qmap1" in st and not any(name == "qmap1" for name, _ in out):
                    out.append(("qmap1", st["qmap1"].cpu().numpy().copy()))
                    out.append(("qmap2", st["qmap2"].cpu().numpy().copy()))
    meta = {
        "bitsandbytes": bitsandbytes.__version__,
        "torch": torch.__version__,
        "device": args.device,
        "sizes": json.dumps(SIZES),
        "steps": str(STEPS),
        "lr": repr(LR),
        "betas": json.dumps(list(BETAS)),
        "eps": repr(EPS),
        "weight_decay": repr(WD),
    }
    write_safetensors(os.path.join(args.out, "golden.safetensors"), out, meta)
    print(f"wrote {len(out)} tensors to {args.out}/golden.safetensors ({meta})")


if __name__ == "__main__":
    main()
