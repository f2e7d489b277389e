#!/usr/bin/env python3
"""PyTorch side of `make gpu-check`'s throughput table: CLIP's image tower
(reference.py's eager model, same weights as the Go side) timed on one device,
eager and torch.compile, fp32 and fp16 autocast. Prints one JSON object.

  gpu_reference.py --clip FILE --device cuda --batches 1,32,256 [--iters 5]
"""

import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reference import load_clip  # noqa: E402


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_it(fn, x, device, iters, warmup):
    for _ in range(warmup):
        fn(x)
    sync(device)
    t = time.perf_counter()
    for _ in range(iters):
        fn(x)
    sync(device)
    return (time.perf_counter() - t) / iters


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clip", required=True)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--batches", default="1,32,256")
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--no-compile", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = False  # as the Go side's fp32
    torch.backends.cudnn.allow_tf32 = False
    visual = load_clip(args.clip).visual.to(device)
    res = visual.conv1.kernel_size[0] * int(round((visual.positional_embedding.shape[0] - 1) ** 0.5))
    out = {"torch": torch.__version__, "device": str(device), "rows": [], "notes": []}
    if device.type == "cuda":
        out["gpu"] = torch.cuda.get_device_name(device)
    modes = [("eager", "fp32")]
    if device.type == "cuda":
        modes.append(("eager", "fp16"))
    compiled = None
    if not args.no_compile:
        if not hasattr(torch, "compile"):
            out["notes"].append("torch.compile is not in PyTorch %s" % torch.__version__)
        else:
            compiled = torch.compile(visual)
            modes += [("compile", p) for p in ("fp32", "fp16") if p == "fp32" or device.type == "cuda"]
    for b in [int(v) for v in args.batches.split(",")]:
        x = torch.randn(b, 3, res, res, device=device)
        for kind, prec in modes:
            fn = visual if kind == "eager" else compiled

            def run(inp, fn=fn, prec=prec):
                with torch.inference_mode():
                    if prec == "fp16":
                        with torch.autocast(device.type, dtype=torch.float16):
                            return fn(inp)
                    return fn(inp)

            row = {"batch": b, "mode": kind, "precision": prec}
            try:
                t0 = time.perf_counter()
                run(x)  # compiles for this shape
                sync(device)
                row["first_call_s"] = time.perf_counter() - t0
                s = time_it(run, x, device, args.iters, args.warmup)
                row["img_s"] = b / s
            except Exception as e:  # reported, the other rows go on
                row["error"] = "%s: %s" % (type(e).__name__, str(e).splitlines()[0] if str(e) else "")
            out["rows"].append(row)
            print("gpu_reference: %s" % json.dumps(row), file=sys.stderr, flush=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
