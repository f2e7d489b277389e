#!/usr/bin/python3
"""Generate the small torch.save / torch.jit.save fixtures read by ptfile's tests.

Run with Debian's interpreter (torch 1.13 CPU):  /usr/bin/python3 testdata/gen/roundtrip.py
Writes into testdata/: py_tensors.pt, py_checkpoint.pt, py_proto4.pt, py_script.pt,
half_table.json, pickles/proto{0..5}.pkl (one plain structure in every pickle
protocol) and py_expected.json (what each file holds, values exact).
"""
import collections
import json
import os
import pickle

import torch
import torch.nn as nn

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
torch.manual_seed(0)
g = torch.Generator().manual_seed(1234)


def randn(*shape, dtype=torch.float32):
    return torch.randn(*shape, generator=g, dtype=dtype)


def describe(t):
    """dtype, shape and the values in row-major order (exact as Python floats/ints)."""
    t = t.detach()
    vals = t.reshape(-1).tolist() if t.numel() else []
    if t.dtype == torch.bool:
        vals = [int(v) for v in vals]
    return {"dtype": str(t.dtype).replace("torch.", ""), "shape": list(t.shape), "values": vals}


expected = {}

# 1. Every dtype, views with offsets/strides, shared storage, a Parameter, plain Python values.
base = randn(3, 5)
grid = randn(4, 6)
col = randn(3, 1)
tensors = collections.OrderedDict()
tensors["f32"] = randn(3, 4)
tensors["f16"] = randn(2, 3).half()
tensors["bf16"] = randn(5).bfloat16()
tensors["f64"] = randn(2, 2, dtype=torch.float64)
tensors["i64"] = torch.tensor([-3, 0, 7, 2**40], dtype=torch.int64)
tensors["i32"] = torch.tensor([-(2**31), -1, 5, 2**31 - 1], dtype=torch.int32)
tensors["i16"] = torch.tensor([-32768, 3, 32767], dtype=torch.int16)
tensors["i8"] = torch.tensor([-128, -1, 127], dtype=torch.int8)
tensors["u8"] = torch.tensor([0, 17, 255], dtype=torch.uint8)
tensors["bool"] = torch.tensor([True, False, True])
tensors["transposed"] = base.t()  # stride (1, 5)
tensors["grid"] = grid
tensors["sliced"] = grid[1:3, 2:5]  # offset 8, stride (6, 1), shares grid's storage
tensors["expanded"] = col.expand(3, 4)  # stride (1, 0)
tensors["scalar"] = torch.tensor(3.5)
tensors["empty"] = torch.zeros(0, 4)
tensors["param"] = nn.Parameter(randn(2))
assert not tensors["transposed"].is_contiguous() and tensors["sliced"].storage_offset() == 8
plain = {
    "list": [1, 2.5, "x", None, True],
    "tuple": (1, (2, 3)),
    "big": 2**70,
    "neg": -(2**40),
    "bytes": b"\x00\xff",
    "unicode": "héllo ✓",
}
torch.save({"tensors": tensors, "plain": plain}, os.path.join(OUT, "py_tensors.pt"))
expected["py_tensors.pt"] = {
    "tensors": {k: describe(v) for k, v in tensors.items()},
    "order": list(tensors),
    "plain": {"list": plain["list"], "tuple": [1, [2, 3]], "big": str(plain["big"]),
              "neg": plain["neg"], "bytes": list(plain["bytes"]), "unicode": plain["unicode"]},
}

# 2. A Dassl-style checkpoint: state_dict, epoch, optimizer state, a scheduler state_dict and,
#    like CLIP-AGIQA's ConstantWarmupScheduler, a live optimizer object (unknown classes,
#    defaultdict keyed by Parameters).
model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 1))
opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 10.0)
x = randn(8, 4)
loss = model(x).pow(2).mean()
loss.backward()
opt.step()
sched.step()
ckpt = {
    "state_dict": model.state_dict(),
    "epoch": 5,
    "optimizer": opt.state_dict(),
    "scheduler": {"successor": sched, "last_epoch": 1},
    "val_result": None,
}
torch.save(ckpt, os.path.join(OUT, "py_checkpoint.pt"))
expected["py_checkpoint.pt"] = {
    "state_dict": {k: describe(v) for k, v in ckpt["state_dict"].items()},
    "order": list(ckpt["state_dict"]),
    "epoch": 5,
    "lr": opt.state_dict()["param_groups"][0]["lr"],
    "momentum_buffers": {str(k): describe(v["momentum_buffer"]) for k, v in opt.state_dict()["state"].items()},
    "successor_class": "torch.optim.lr_scheduler.CosineAnnealingLR",
    "successor_T_max": 10.0,
}

# 3. Protocol 4 (FRAME, MEMOIZE, SHORT_BINUNICODE ...).
p4 = collections.OrderedDict([("w", randn(2, 2)), ("h", randn(3).half()), ("n", 7)])
torch.save(p4, os.path.join(OUT, "py_proto4.pt"), pickle_protocol=4)
expected["py_proto4.pt"] = {"w": describe(p4["w"]), "h": describe(p4["h"]), "n": 7}


# 4. A small TorchScript archive with nested modules, a buffer and a bare Parameter.
class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.p = nn.Parameter(randn(4))
        self.register_buffer("steps", torch.tensor(3))
        self.lin = nn.Linear(3, 2)
        self.sub = nn.Sequential(nn.Linear(2, 2), nn.LayerNorm(2))

    def forward(self, x):
        return self.sub(self.lin(x)) * self.steps + self.p.sum()


tiny = torch.jit.script(Tiny())
tiny.save(os.path.join(OUT, "py_script.pt"))
sd = tiny.state_dict()
expected["py_script.pt"] = {"state_dict": {k: describe(v) for k, v in sd.items()}, "order": list(sd)}

# 5. float32 -> float16 / bfloat16 rounding and the upcasts back, as torch does them, by bit pattern.
specials = [0.0, -0.0, 1.0, -2.5, 65504.0, 65519.0, 65520.0, 1e6, -1e6, 6.1035156e-05,
            5.9604645e-08, 2.9802322e-08, 2.9802326e-08, 1e-10, 1.0009765625, 1.00048828125,
            1.00146484375, 3.4e38, float("inf"), float("-inf")]
vals = torch.cat([torch.tensor(specials, dtype=torch.float32), randn(200) * 10,
                  randn(50) * 1e-5, randn(30) * 1e4])
bits = vals.view(torch.int32).tolist()
half_bits = vals.half().view(torch.int16).tolist()
bf16_bits = vals.bfloat16().view(torch.int16).tolist()
half_up = vals.half().float().view(torch.int32).tolist()
bf16_up = vals.bfloat16().float().view(torch.int32).tolist()
table = [{"f32": b & 0xFFFFFFFF, "f16": h & 0xFFFF, "bf16": bf & 0xFFFF,
          "f16_up": hu & 0xFFFFFFFF, "bf16_up": bu & 0xFFFFFFFF}
         for b, h, bf, hu, bu in zip(bits, half_bits, bf16_bits, half_up, bf16_up)]
with open(os.path.join(OUT, "half_table.json"), "w") as f:
    json.dump({"torch": torch.__version__, "entries": table}, f)


# 6. Plain pickles of one fixed structure in every protocol, for the unpickler's opcode coverage.
class Thing:
    def __init__(self):
        self.a = 1
        self.name = "thing"


shared = [7]
plain_obj = {
    "int": 5, "neg": -70000, "i32": 2**31 - 1, "big": 2**100, "negbig": -(2**65),
    "float": 1.25, "str": "h\u00e9llo\n", "bytes": b"ab\x00\xff", "list": [1, [2, 3]],
    "tuple": (1, "a"), "empty": (), "none": None, "t": True, "f": False,
    "set": {1}, "frozenset": frozenset({2}),
    "od": collections.OrderedDict([("b", 1), ("a", 2)]),
    "obj": Thing(), "shared": [shared, shared],
}
os.makedirs(os.path.join(OUT, "pickles"), exist_ok=True)
for proto in range(0, 6):
    with open(os.path.join(OUT, "pickles", "proto%d.pkl" % proto), "wb") as f:
        pickle.dump(plain_obj, f, protocol=proto)

with open(os.path.join(OUT, "py_expected.json"), "w") as f:
    json.dump({"torch": torch.__version__, "files": expected}, f, indent=1)
print("wrote fixtures to", os.path.normpath(OUT))
