"""Reference trajectories of torch.optim (PyTorch 1.13, foreach=False) for
torch/optim's tests.

    /usr/bin/python3 torch/optim/testdata/gen/make_ref.py
        writes ../ref.json and ../resume_<case>.pt
    /usr/bin/python3 torch/optim/testdata/gen/make_ref.py continue DIR
        for each case with a DIR/<case>.pt ({"optimizer", "params"}, written
        by the Go side after RESUME_AT steps), loads it, runs the remaining
        steps with the recorded gradients and prints {case: {"steps": [...]}}
        (the parameters after each step) as JSON.

Each case optimises the same six named tensors for STEPS steps; gradients are
seeded random tensors given directly as .grad, so no autograd is involved.
"""
import json
import math
import os
import sys
from collections import OrderedDict

import torch

torch.set_num_threads(1)

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.dirname(HERE)
STEPS = 5
RESUME_AT = 3

SHAPES = OrderedDict([
    ("encoder.weight", (6, 5)),
    ("encoder.bias", (6,)),
    ("norm.weight", (6,)),
    ("norm.bias", (6,)),
    ("head.weight", (2, 6)),
    ("head.bias", (2,)),
])


def group_of(name):
    """IP-IQA-style split: 0 decayed weights, 1 biases and norms (no decay),
    2 head (lr x 10)."""
    if name.startswith("head."):
        return 2
    if name.endswith(".bias") or name.startswith("norm."):
        return 1
    return 0


# Each case: optimizer class, its keyword arguments, and, when grouped, the
# per-group lr scale and weight decay override (None: the default), and an
# optional per-step schedule.
CASES = OrderedDict([
    ("sgd", dict(cls="SGD", kw=dict(lr=0.1))),
    ("sgd_momentum_wd", dict(cls="SGD", kw=dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=5e-4))),
    ("sgd_nesterov_groups", dict(cls="SGD", kw=dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
                                 groups=[(1.0, None), (1.0, 0.0), (10.0, None)])),
    ("sgd_momentum_groups_cosine", dict(cls="SGD", kw=dict(lr=0.02, momentum=0.9, weight_decay=5e-4),
                                        groups=[(1.0, None), (1.0, 0.0), (10.0, None)],
                                        schedule=dict(kind="warmup_cosine", warmup=0, start_factor=1.0, total=5, min_lr=1e-4))),
    ("adam", dict(cls="Adam", kw=dict(lr=1e-2, weight_decay=1e-2))),
    ("adam_groups", dict(cls="Adam", kw=dict(lr=1e-2, betas=(0.8, 0.99), eps=1e-6, weight_decay=1e-2),
                         groups=[(1.0, None), (1.0, 0.0), (10.0, None)])),
    ("adamw", dict(cls="AdamW", kw=dict(lr=1e-2))),
    ("adamw_groups_warmup_cosine", dict(cls="AdamW", kw=dict(lr=1e-2, weight_decay=0.05),
                                        groups=[(1.0, None), (1.0, 0.0), (10.0, None)],
                                        schedule=dict(kind="warmup_cosine", warmup=2, start_factor=0.1, total=5, min_lr=0.0))),
    ("adam_maximize_linear_warmup", dict(cls="Adam", kw=dict(lr=5e-3, maximize=True),
                                         schedule=dict(kind="linear_warmup", warmup=3, start_factor=0.25))),
])


def initial_params():
    g = torch.Generator().manual_seed(1234)
    return OrderedDict((n, torch.randn(s, generator=g)) for n, s in SHAPES.items())


def grads_for(case_index):
    g = torch.Generator().manual_seed(100 + case_index)
    return [OrderedDict((n, torch.randn(s, generator=g)) for n, s in SHAPES.items()) for _ in range(STEPS)]


def build(case, params):
    cls = getattr(torch.optim, case["cls"])
    kw = dict(case["kw"], foreach=False)
    if "groups" in case:
        groups = []
        for gi, (scale, wd) in enumerate(case["groups"]):
            g = {"params": [p for n, p in params.items() if group_of(n) == gi], "lr": kw["lr"] * scale}
            if wd is not None:
                g["weight_decay"] = wd
            groups.append(g)
        opt = cls(groups, **kw)
    else:
        opt = cls(list(params.values()), **kw)
    sched = None
    s = case.get("schedule")
    if s is not None:
        if s["kind"] == "linear_warmup":
            sched = torch.optim.lr_scheduler.LinearLR(opt, start_factor=s["start_factor"], total_iters=s["warmup"])
        elif s["warmup"] == 0:
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=s["total"], eta_min=s["min_lr"])
        else:
            warm = torch.optim.lr_scheduler.LinearLR(opt, start_factor=s["start_factor"], total_iters=s["warmup"])
            cos = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=s["total"] - s["warmup"], eta_min=s["min_lr"])
            sched = torch.optim.lr_scheduler.SequentialLR(opt, [warm, cos], milestones=[s["warmup"]])
    return opt, sched


def values(t):
    return [float(v) for v in t.detach().reshape(-1).tolist()]


def run(case, params, opt, sched, grads, start, stop, lrs_at=None):
    """Steps start..stop-1; returns per step the lrs used and the params after.
    lrs_at[k], when given, sets the groups' lrs of step k instead of sched."""
    out = []
    for k in range(start, stop):
        if lrs_at is not None:
            for g, lr in zip(opt.param_groups, lrs_at[k]):
                g["lr"] = lr
        lrs = [g["lr"] for g in opt.param_groups]
        for n, p in params.items():
            p.grad = grads[k][n].clone()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if sched is not None:
            sched.step()
        out.append(dict(lrs=lrs, params={n: values(p) for n, p in params.items()}))
    return out


def jsonable(v):
    if isinstance(v, torch.Tensor):
        return dict(shape=list(v.shape), dtype=str(v.dtype), values=values(v))
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    return v


def make():
    ref = dict(torch=torch.__version__, steps=STEPS, resume_at=RESUME_AT,
               shapes={n: list(s) for n, s in SHAPES.items()},
               initial={n: values(t) for n, t in initial_params().items()}, cases=OrderedDict())
    for ci, (name, case) in enumerate(CASES.items()):
        params = OrderedDict((n, t.clone().requires_grad_(True)) for n, t in initial_params().items())
        grads = grads_for(ci)
        opt, sched = build(case, params)
        steps = run(case, params, opt, sched, grads, 0, RESUME_AT)
        sd = opt.state_dict()
        torch.save({"optimizer": sd, "params": OrderedDict((n, p.detach().clone()) for n, p in params.items())},
                   os.path.join(OUT, "resume_%s.pt" % name))
        steps += run(case, params, opt, sched, grads, RESUME_AT, STEPS)
        final = opt.state_dict()
        ref["cases"][name] = dict(
            case=jsonable(case),
            grads=[{n: values(t) for n, t in g.items()} for g in grads],
            steps=steps,
            state_dict_at_resume=jsonable(sd),
            final_state_dict=jsonable(final))
    with open(os.path.join(OUT, "ref.json"), "w") as f:
        json.dump(ref, f)


def cont(name, path, ref):
    case = CASES[name]
    ci = list(CASES).index(name)
    saved = torch.load(path)
    params = OrderedDict((n, saved["params"][n].clone().requires_grad_(True)) for n in SHAPES)
    opt, _ = build(case, params)
    opt.load_state_dict(saved["optimizer"])
    # The schedule is checked by the full runs; here the recorded lrs are set
    # so that only the optimizer's resumed state decides the result.
    lrs_at = [s["lrs"] for s in ref["cases"][name]["steps"]]
    grads = [{n: torch.tensor(v, dtype=torch.float32).reshape(SHAPES[n]) for n, v in g.items()}
             for g in ref["cases"][name]["grads"]]
    steps = run(case, params, opt, None, grads, RESUME_AT, STEPS, lrs_at)
    return dict(steps=steps)


def cont_all(folder):
    with open(os.path.join(OUT, "ref.json")) as f:
        ref = json.load(f)
    out = {}
    for name in CASES:
        path = os.path.join(folder, name + ".pt")
        if os.path.exists(path):
            out[name] = cont(name, path, ref)
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "continue":
        cont_all(sys.argv[2])
    elif len(sys.argv) == 1:
        # The committed references come from 1.13; "continue" runs on any version.
        assert torch.__version__.startswith("1.13"), torch.__version__
        make()
    else:
        sys.exit(__doc__)
