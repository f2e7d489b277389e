#!/usr/bin/python3
"""IP-IQA (RN50 at 512x512) data-parallel scaling on paper.

Measures, on the RN50-geometry model of bench/ipiqa_reference.py (random
weights; FLOPs and sizes do not depend on them), the forward FLOPs per image
with the PyTorch profiler (with_flops: convolutions and matrix products,
2 FLOPs per multiply-add) and the trainable parameters, whose fp32 gradients
one data-parallel step all-reduces. Then estimates the step time on G GPUs
for a per-GPU batch b:

    compute  = b * (3 * F_trained + 2 * F_frozen) / (peak * mfu)
    allreduce = 2 * (G-1)/G * gradient_bytes / bus_bandwidth     (ring)

(backward costs about 2 forwards where weights train; the frozen text
transformer still back-propagates to the token embedding, one more forward's
worth). Our all-reduce runs after backward, so a step is compute + all-reduce;
PyTorch DDP overlaps buckets with backward, so its step approaches
max(compute, all-reduce). Prints a JSON object.

    /usr/bin/python3 bench/ipiqa_scaling.py [--gpus 8] [--batch 16]
"""
import argparse, json, os, sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ipiqa_reference import IPIQA  # noqa: E402


def forward_flops(module_call):
    with torch.autograd.profiler.profile(with_flops=True) as prof:
        module_call()
    return sum(e.flops for e in prof.function_events if e.flops)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gpus", type=int, default=8)
    ap.add_argument("--batch", type=int, default=16, help="images per GPU per step (assumed)")
    ap.add_argument("--peak-tflops", type=float, default=312, help="dense bf16/tf32 peak (A100: 312 bf16, H100 SXM: 989)")
    ap.add_argument("--mfu", type=float, default=0.4, help="achieved share of peak")
    ap.add_argument("--bus-gbps", type=float, default=240, help="NCCL all-reduce bus bandwidth, GB/s (A100 NVLink: ~230-240)")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    m = IPIQA().train()
    ids = torch.zeros(1, 77, dtype=torch.long)
    ids[:, 0], ids[:, 1:6], ids[:, 6] = 49406, 320, 49407
    x = torch.randn(1, 3, 512, 512)
    with torch.no_grad():
        total = forward_flops(lambda: m(x, ids))
        text = forward_flops(lambda: m.encode_text(ids))
    trained_params = sum(p.numel() for p in m.parameters() if p.requires_grad)
    grad_bytes = 4 * trained_params
    step_flops = a.batch * (3 * (total - text) + 2 * text)
    compute_s = step_flops / (a.peak_tflops * 1e12 * a.mfu)
    g = a.gpus
    reduce_s = 2 * (g - 1) / g * grad_bytes / (a.bus_gbps * 1e9)
    serial = compute_s / (compute_s + reduce_s)
    overlap = compute_s / max(compute_s, reduce_s)
    print(json.dumps({
        "forward_gflops_per_image": total / 1e9, "text_encoder_gflops": text / 1e9,
        "train_step_gflops_per_image": (3 * (total - text) + 2 * text) / 1e9,
        "trainable_params": trained_params, "gradient_mb_per_step": grad_bytes / 1e6,
        "gpus": g, "batch_per_gpu": a.batch, "peak_tflops": a.peak_tflops, "mfu": a.mfu, "bus_gbps": a.bus_gbps,
        "compute_ms": 1e3 * compute_s, "allreduce_ms": 1e3 * reduce_s,
        "efficiency_after_backward": serial, "speedup_after_backward": g * serial,
        "efficiency_overlapped": overlap, "speedup_overlapped": g * overlap,
    }, indent=1))


if __name__ == "__main__":
    main()
