"""Reference values for torch/ops_nn_test.go, computed with PyTorch eager (CPU).

Run with Debian's interpreter:  /usr/bin/python3 torch/testdata/gen/nn_ops.py
It writes torch/testdata/nn_ops.json. Every case stores its float32 inputs,
the output, and the gradients of sum(out * upstream) with respect to each
input that takes a gradient (null for the others), so the Go test replays
exactly the same computation forward and backward.
"""
import json
import math
import os

import torch
import torch.nn.functional as F

torch.manual_seed(20261202)
torch.set_num_threads(1)
cases = []


def t(x):
    if x is None:
        return None
    return {"shape": list(x.shape), "data": [float(v) for v in x.detach().double().flatten().tolist()]}


def case(name, fn, inputs, grad=None, ints=None, **attrs):
    """Runs fn(*inputs) (float inputs get requires_grad where grad[i] is True)."""
    grad = grad if grad is not None else [True] * len(inputs)
    leaves = []
    for x, g in zip(inputs, grad):
        x = x.detach().clone()
        if g:
            x.requires_grad_(True)
        leaves.append(x)
    out = fn(*leaves)
    up = torch.randn(out.shape)
    (out * up).sum().backward()
    cases.append({
        "name": name,
        "inputs": [t(x) for x in leaves],
        "ints": [t(x) for x in (ints or [])],
        "out": t(out),
        "upstream": t(up),
        "grads": [t(x.grad) if g else None for x, g in zip(leaves, grad)],
        "attrs": attrs,
    })


# conv2d with everything non-default: rectangular stride/padding/dilation, groups, bias.
x = torch.randn(2, 4, 9, 8)
w = torch.randn(6, 2, 3, 3) * 0.3
b = torch.randn(6)
case("conv2d_groups", lambda x, w, b: F.conv2d(x, w, b, stride=(2, 1), padding=(1, 2), dilation=(2, 1), groups=2),
     [x, w, b], stride=[2, 1], padding=[1, 2], dilation=[2, 1], groups=2)
w1 = torch.randn(5, 4, 3, 3) * 0.3
case("conv2d_nobias", lambda x, w: F.conv2d(x, w, None, stride=2, padding=1), [x, w1],
     stride=[2, 2], padding=[1, 1], dilation=[1, 1], groups=1)
wd = torch.randn(4, 1, 3, 3) * 0.3
case("conv2d_depthwise", lambda x, w: F.conv2d(x, w, None, padding=1, groups=4), [x, wd],
     stride=[1, 1], padding=[1, 1], dilation=[1, 1], groups=4)

# pooling
xp = torch.randn(2, 3, 7, 9)
for name, kw in [
    ("avg_pool2d_k2", dict(kernel_size=2)),
    ("avg_pool2d_pad_ceil", dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=True)),
    ("avg_pool2d_pad_exclude", dict(kernel_size=(3, 2), stride=(2, 3), padding=(1, 1), ceil_mode=False, count_include_pad=False)),
    ("avg_pool2d_divisor", dict(kernel_size=3, stride=1, padding=0, divisor_override=4)),
]:
    k = kw["kernel_size"]
    k = [k, k] if isinstance(k, int) else list(k)
    s = kw.get("stride", k)
    s = [s, s] if isinstance(s, int) else list(s)
    p = kw.get("padding", 0)
    p = [p, p] if isinstance(p, int) else list(p)
    case(name, lambda x, kw=kw: F.avg_pool2d(x, **kw), [xp], kernel=k, stride=s, padding=p,
         ceil_mode=kw.get("ceil_mode", False), count_include_pad=kw.get("count_include_pad", True),
         divisor_override=kw.get("divisor_override", 0))
case("max_pool2d", lambda x: F.max_pool2d(x, 3, stride=2, padding=1, ceil_mode=True), [xp],
     kernel=[3, 3], stride=[2, 2], padding=[1, 1], dilation=[1, 1], ceil_mode=True)
case("adaptive_avg_pool2d_3x2", lambda x: F.adaptive_avg_pool2d(x, (3, 2)), [xp], size=[3, 2])
case("adaptive_avg_pool2d_1", lambda x: F.adaptive_avg_pool2d(x, 1), [xp], size=[1, 1])

# batch norm: train (batch statistics) and eval (running statistics)
xb = torch.randn(4, 3, 5, 5) * 2 + 0.5
gb = torch.randn(3) * 0.2 + 1
bb = torch.randn(3) * 0.2
rm = torch.randn(3) * 0.1
rv = torch.rand(3) + 0.5
case("batch_norm_train", lambda x, w, b: F.batch_norm(x, rm.clone(), rv.clone(), w, b, training=True, momentum=0.1, eps=1e-5),
     [xb, gb, bb], training=True, momentum=0.1, eps=1e-5, running_mean=t(rm)["data"], running_var=t(rv)["data"])
rm_after, rv_after = rm.clone(), rv.clone()
F.batch_norm(xb, rm_after, rv_after, gb, bb, training=True, momentum=0.1, eps=1e-5)
cases[-1]["attrs"]["running_mean_after"] = t(rm_after)["data"]
cases[-1]["attrs"]["running_var_after"] = t(rv_after)["data"]
case("batch_norm_eval", lambda x, w, b: F.batch_norm(x, rm, rv, w, b, training=False, eps=1e-5),
     [xb, gb, bb], training=False, momentum=0.1, eps=1e-5, running_mean=t(rm)["data"], running_var=t(rv)["data"])

# interpolation (the CLIP positional-embedding resize is bicubic, align_corners=False)
xi = torch.randn(1, 6, 7, 7)
for name, mode, ac, size in [
    ("interpolate_bicubic", "bicubic", False, [10, 12]),
    ("interpolate_bicubic_down", "bicubic", False, [4, 5]),
    ("interpolate_bicubic_ac", "bicubic", True, [10, 12]),
    ("interpolate_bilinear", "bilinear", False, [9, 5]),
]:
    case(name, lambda x, mode=mode, ac=ac, size=size: F.interpolate(x, size=size, mode=mode, align_corners=ac),
         [xi], size=size, mode=mode, align_corners=ac)
case("interpolate_nearest", lambda x: F.interpolate(x, size=[9, 5], mode="nearest"), [xi], size=[9, 5], mode="nearest",
     align_corners=False)

# small helpers
xf = torch.randn(2, 3, 4, 5)
case("flatten", lambda x: torch.flatten(x, 1, 2), [xf], start=1, end=2)
case("amax", lambda x: torch.amax(x, dim=(1, 3), keepdim=True), [xf], dims=[1, 3], keepdim=True)
mask = torch.rand(3, 1, 5) > 0.5
case("masked_fill", lambda x: x.masked_fill(mask, -3.5), [xf], value=-3.5, mask=[int(v) for v in mask.flatten().tolist()],
     mask_shape=list(mask.shape))
we = torch.randn(6, 4)
ids = torch.tensor([[1, 0, 3], [0, 5, 1]])
case("embedding_padded", lambda w: F.embedding(ids, w, padding_idx=0), [we], ints=[ids], padding_idx=0)
a1 = torch.randn(5, 8)
a2 = torch.randn(5, 8)
tg = torch.tensor([1.0, -1.0, 1.0, -1.0, -1.0])
case("cosine_embedding_loss", lambda a, b, y: F.cosine_embedding_loss(a, b, y, margin=0.2), [a1, a2, tg],
     grad=[True, True, False], margin=0.2)

# clip_grad_norm_: gradients before and after, and the returned total norm
clip = []
for norm_type, max_norm in [(2.0, 1.0), (1.0, 100.0), (math.inf, 0.5)]:
    ps = [torch.randn(3, 4, requires_grad=True), torch.randn(5, requires_grad=True)]
    for p in ps:
        p.grad = torch.randn(p.shape)
    before = [t(p.grad) for p in ps]
    total = torch.nn.utils.clip_grad_norm_(ps, max_norm, norm_type)
    clip.append({"norm_type": "inf" if math.isinf(norm_type) else norm_type, "max_norm": max_norm,
                 "params": [t(p) for p in ps], "grads": before, "clipped": [t(p.grad) for p in ps],
                 "total": float(total)})

# batch norm running statistics over three training steps
steps = []
rm3, rv3 = torch.zeros(3), torch.ones(3)
for i in range(3):
    xs = torch.randn(4, 3, 2, 3) * (i + 1) + i
    y = F.batch_norm(xs, rm3, rv3, gb, bb, training=True, momentum=0.3, eps=1e-3)
    steps.append({"x": t(xs), "out": t(y), "running_mean": t(rm3)["data"], "running_var": t(rv3)["data"]})

out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "nn_ops.json")
with open(out, "w") as f:
    json.dump({"torch": torch.__version__, "cases": cases, "clip_grad_norm": clip,
               "bn_steps": {"weight": t(gb), "bias": t(bb), "momentum": 0.3, "eps": 1e-3, "steps": steps}}, f)
print("wrote", os.path.normpath(out), len(cases), "cases")
