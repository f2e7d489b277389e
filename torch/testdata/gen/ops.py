"""Reference values for torch/ops_test.go, computed with PyTorch eager (CPU).

Run with Debian's interpreter:  /usr/bin/python3 torch/testdata/gen/ops.py
It writes torch/testdata/ops.json. Inputs are stored too, so the Go test feeds
exactly the same values.
"""
import json
import math
import os

import torch
import torch.nn.functional as F

torch.manual_seed(1234)
torch.set_num_threads(1)
cases = []


def t(x):
    return {"shape": list(x.shape), "data": [float(v) for v in x.detach().double().flatten().tolist()]}


def ti(x):
    return {"shape": list(x.shape), "data": [int(v) for v in x.flatten().tolist()]}


def add(name, inputs, out, **attrs):
    cases.append({"name": name, "inputs": inputs, "out": out, "attrs": attrs})


a = torch.randn(3, 4)
b = torch.randn(3, 4)
row = torch.randn(4)
add("add", [t(a), t(row)], t(a + row))
add("minus", [t(a), t(b)], t(a - b))
add("mul", [t(a), t(b)], t(a * b))
add("div", [t(a), t(b.abs() + 0.5)], t(a / (b.abs() + 0.5)))
add("add_scalar", [t(a)], t(a + 0.75), v=0.75)
add("mul_scalar", [t(a)], t(a * -1.5), v=-1.5)
add("relu", [t(a)], t(torch.relu(a)))
add("gelu", [t(a)], t(F.gelu(a)))
add("quick_gelu", [t(a)], t(a * torch.sigmoid(1.702 * a)))
add("sigmoid", [t(a)], t(torch.sigmoid(a)))
add("exp", [t(a)], t(torch.exp(a)))
add("softmax", [t(a)], t(torch.softmax(a, dim=-1)), dim=-1)
add("softmax0", [t(a)], t(torch.softmax(a, dim=0)), dim=0)
add("log_softmax", [t(a)], t(torch.log_softmax(a, dim=1)), dim=1)
x = torch.randn(2, 5, 8)
w = torch.randn(8) * 0.1 + 1
bb = torch.randn(8) * 0.1
add("layer_norm", [t(x), t(w), t(bb)], t(F.layer_norm(x, (8,), w, bb, 1e-5)), eps=1e-5)
add("layer_norm_noaffine", [t(x)], t(F.layer_norm(x, (8,), None, None, 1e-5)), eps=1e-5)
m1 = torch.randn(2, 3, 4)
m2 = torch.randn(4, 5)
add("matmul", [t(m1), t(m2)], t(torch.matmul(m1, m2)))
b1 = torch.randn(2, 3, 4)
b2 = torch.randn(2, 4, 5)
add("bmm", [t(b1), t(b2)], t(torch.bmm(b1, b2)))
s0 = torch.randn(2, 3, 5)
add("baddbmm", [t(s0), t(b1), t(b2)], t(torch.baddbmm(s0, b1, b2, beta=0.5, alpha=2.0)), beta=0.5, alpha=2.0)
lx = torch.randn(4, 6)
lw = torch.randn(3, 6)
lb = torch.randn(3)
add("linear", [t(lx), t(lw), t(lb)], t(F.linear(lx, lw, lb)))
add("linear_nobias", [t(lx), t(lw)], t(F.linear(lx, lw)))
cx = torch.randn(2, 3, 8, 6)
cw = torch.randn(4, 3, 2, 2)
add("conv2d", [t(cx), t(cw)], t(F.conv2d(cx, cw, stride=2)), stride=2, padding=0)
add("cat", [t(a), t(b)], t(torch.cat([a, b], dim=0)), dim=0)
add("cat1", [t(a), t(b)], t(torch.cat([a, b], dim=1)), dim=1)
add("stack", [t(a), t(b)], t(torch.stack([a, b], dim=1)), dim=1)
add("reshape", [t(x)], t(x.reshape(5, -1)), shape=[5, -1])
add("permute", [t(x)], t(x.permute(2, 0, 1).contiguous()), dims=[2, 0, 1])
add("transpose", [t(x)], t(x.transpose(0, 1).contiguous()), d0=0, d1=1)
emb = torch.randn(10, 3)
ids = torch.tensor([[1, 5, 9], [0, 0, 3]])
cases.append({"name": "embedding", "inputs": [t(emb)], "ids": ti(ids), "out": t(F.embedding(ids, emb)), "attrs": {}})
sel = torch.tensor([3, 0, 2])
cases.append({"name": "index_select", "inputs": [t(a.t().contiguous())], "ids": ti(sel), "out": t(a.t().index_select(0, sel)), "attrs": {"dim": 0}})
gidx = torch.tensor([[0, 3], [1, 1], [2, 0]])
cases.append({"name": "gather", "inputs": [t(a)], "ids": ti(gidx), "out": t(a.gather(1, gidx)), "attrs": {"dim": 1}})
add("argmax", [t(a)], ti(a.argmax(dim=-1)), dim=-1)
add("normalize", [t(a)], t(F.normalize(a, dim=-1)), dim=-1)
add("mse_loss", [t(a), t(b)], t(F.mse_loss(a, b)))
add("sum_all", [t(x)], t(x.sum()))
add("mean_dim", [t(x)], t(x.mean(dim=1)), dims=[1])
add("triu", [t(torch.randn(4, 4))], None, diagonal=1)
cases[-1]["out"] = t(torch.tensor(cases[-1]["inputs"][0]["data"]).reshape(4, 4).triu(1))
add("narrow", [t(x)], t(x.narrow(1, 1, 3).contiguous()), dim=1, start=1, length=3)
add("select", [t(x)], t(x.select(1, 2)), dim=1, index=2)
# Attention with CLIP's causal mask, computed the long way.
q = torch.randn(2, 3, 5, 4)
k = torch.randn(2, 3, 5, 4)
v = torch.randn(2, 3, 5, 4)
mask = torch.full((5, 5), float("-inf")).triu(1)
att = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(4) + mask, dim=-1) @ v
add("attention_causal", [t(q), t(k), t(v)], t(att), causal=True)
att2 = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(4), dim=-1) @ v
add("attention", [t(q), t(k), t(v)], t(att2), causal=False)
# Precision round trips.
h = torch.randn(7) * 3
add("cast_fp16", [t(h)], t(h.half().float()))
add("cast_bf16", [t(h)], t(h.bfloat16().float()))

# Autograd + SGD: three steps on loss = mse(x @ W^T + c, y) with momentum and
# weight decay, as torch.optim.SGD does it.
W = torch.randn(2, 3, requires_grad=True)
c = torch.randn(2, requires_grad=True)
X = torch.randn(5, 3)
Y = torch.randn(5, 2)
W0, c0 = W.detach().clone(), c.detach().clone()
opt = torch.optim.SGD([W, c], lr=0.1, momentum=0.9, weight_decay=5e-4, dampening=0.0)
losses, gradsW = [], []
for _ in range(3):
    opt.zero_grad()
    loss = F.mse_loss(F.linear(X, W, c), Y)
    loss.backward()
    losses.append(loss.item())
    gradsW.append(t(W.grad))
    opt.step()
sgd = {"W0": t(W0), "c0": t(c0), "X": t(X), "Y": t(Y), "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4,
       "losses": losses, "gradsW": gradsW, "W": t(W), "c": t(c),
       "bufW": t(opt.state[W]["momentum_buffer"])}

out = os.path.join(os.path.dirname(__file__), "..", "ops.json")
with open(out, "w") as f:
    json.dump({"torch": torch.__version__, "cases": cases, "sgd": sgd}, f)
print("wrote", out, len(cases), "cases")
