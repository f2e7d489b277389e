"""Reference values for torch/nn's module tests, computed with PyTorch 1.13 eager (CPU).

Run with Debian's interpreter:  /usr/bin/python3 torch/nn/testdata/gen/modules.py
It writes torch/nn/testdata/modules.json. Each case stores the module's
state_dict (names in PyTorch's order), its float inputs, the output, and the
gradients of sum(out * upstream) with respect to every float input and every
parameter (by name); the Go test loads the state dict strictly, so names and
order are checked too. BatchNorm cases store several training steps (outputs,
running buffers, num_batches_tracked) and an eval forward.
"""
import json
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

torch.manual_seed(1202)
torch.set_num_threads(1)


def t(x):
    if x is None:
        return None
    return {"shape": list(x.shape), "data": [float(v) for v in x.detach().double().flatten().tolist()]}


def sd(m):
    s = m.state_dict()
    return {"names": list(s.keys()), "tensors": {k: t(v) for k, v in s.items()}}


cases = []


def case(name, m, inputs, fwd, grad=None, ints=None, **attrs):
    """fwd(m, *inputs) → output. Float inputs with grad[i] get requires_grad."""
    with torch.no_grad():  # non-default values everywhere, so loading is observable
        for p in m.parameters():
            p.copy_(torch.randn(p.shape) * 0.5)
    state = sd(m)
    grad = grad if grad is not None else [True] * len(inputs)
    leaves = []
    for x, g in zip(inputs, grad):
        x = x.detach().clone()
        if g:
            x.requires_grad_(True)
        leaves.append(x)
    out = fwd(m, *leaves)
    up = torch.randn(out.shape)
    (out * up).sum().backward()
    cases.append({
        "name": name, "state": state,
        "inputs": [t(x) for x in leaves], "ints": [t(x) for x in (ints or [])],
        "out": t(out), "upstream": t(up),
        "input_grads": [t(x.grad) if g else None for x, g in zip(leaves, grad)],
        "param_grads": {n: t(p.grad) for n, p in m.named_parameters() if p.grad is not None},
        "attrs": attrs,
    })


case("linear", nn.Linear(5, 4), [torch.randn(2, 3, 5)], lambda m, x: m(x))
case("linear_nobias", nn.Linear(5, 4, bias=False), [torch.randn(3, 5)], lambda m, x: m(x))
case("layer_norm", nn.LayerNorm(6, eps=1e-5), [torch.randn(2, 3, 6) * 3 + 1], lambda m, x: m(x), eps=1e-5)
case("conv2d_stride_pad", nn.Conv2d(4, 6, 3, stride=2, padding=1, bias=False), [torch.randn(2, 4, 9, 8)],
     lambda m, x: m(x), cin=4, cout=6, kernel=[3, 3], stride=[2, 2], padding=[1, 1], dilation=[1, 1], groups=1, bias=False)
case("conv2d_groups_dilation", nn.Conv2d(4, 6, (3, 2), stride=(1, 2), padding=(2, 1), dilation=(2, 1), groups=2, bias=True),
     [torch.randn(2, 4, 9, 8)], lambda m, x: m(x), cin=4, cout=6, kernel=[3, 2], stride=[1, 2], padding=[2, 1],
     dilation=[2, 1], groups=2, bias=True)
case("embedding_padding", nn.Embedding(7, 4, padding_idx=2), [], lambda m, ids=torch.tensor([[1, 2, 6], [2, 0, 1]]): m(ids),
     ints=[torch.tensor([[1, 2, 6], [2, 0, 1]])], num=7, dim=4, padding_idx=2)
case("avg_pool2d", nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False), [torch.randn(2, 3, 7, 6)],
     lambda m, x: m(x), kernel=[3, 3], stride=[2, 2], padding=[1, 1], ceil_mode=True, count_include_pad=False)
case("adaptive_avg_pool2d", nn.AdaptiveAvgPool2d((2, 3)), [torch.randn(2, 3, 7, 6)], lambda m, x: m(x), size=[2, 3])
case("relu", nn.ReLU(), [torch.randn(3, 4)], lambda m, x: m(x))

# nn.MultiheadAttention, packed in_proj, self-attention with a causal float
# mask and a key padding mask.
L, N, E, H = 5, 2, 8, 2
causal = torch.triu(torch.full((L, L), float("-inf")), 1)
kpm = torch.tensor([[False, False, False, True, True], [False, False, False, False, False]])
case("mha_packed", nn.MultiheadAttention(E, H), [torch.randn(L, N, E)],
     lambda m, x: m(x, x, x, attn_mask=causal, key_padding_mask=kpm, need_weights=False)[0],
     heads=H, embed=E, causal=True, kpm=[int(v) for v in kpm.flatten().tolist()], kpm_shape=list(kpm.shape))
# Separate q/k/v weights (kdim, vdim ≠ E), cross-attention, bool mask.
bmask = torch.rand(3, 5) > 0.7
bmask[:, 0] = False
case("mha_separate", nn.MultiheadAttention(E, H, kdim=6, vdim=4), [torch.randn(3, N, E), torch.randn(5, N, 6), torch.randn(5, N, 4)],
     lambda m, q, k, v: m(q, k, v, attn_mask=bmask, need_weights=False)[0], heads=H, embed=E, kdim=6, vdim=4,
     mask=[int(v) for v in bmask.flatten().tolist()], mask_shape=list(bmask.shape))
case("mha_batch_first", nn.MultiheadAttention(E, 4, batch_first=True, bias=False), [torch.randn(N, L, E)],
     lambda m, x: m(x, x, x, need_weights=False)[0], heads=4, embed=E)


class AttnPoolHead(nn.Module):
    """The attention of CLIP's AttentionPool2d (model.py), without the spatial
    pooling and positional embedding: separate q/k/v/c Linear projections,
    the mean token as the only query."""

    def __init__(self, embed, heads, out):
        super().__init__()
        self.k_proj = nn.Linear(embed, embed)
        self.q_proj = nn.Linear(embed, embed)
        self.v_proj = nn.Linear(embed, embed)
        self.c_proj = nn.Linear(embed, out)
        self.num_heads = heads

    def forward(self, x):  # x: [S, N, E]
        x, _ = F.multi_head_attention_forward(
            query=x[:1], key=x, value=x, embed_dim_to_check=x.shape[-1], num_heads=self.num_heads,
            q_proj_weight=self.q_proj.weight, k_proj_weight=self.k_proj.weight, v_proj_weight=self.v_proj.weight,
            in_proj_weight=None, in_proj_bias=torch.cat([self.q_proj.bias, self.k_proj.bias, self.v_proj.bias]),
            bias_k=None, bias_v=None, add_zero_attn=False, dropout_p=0, out_proj_weight=self.c_proj.weight,
            out_proj_bias=self.c_proj.bias, use_separate_proj_weight=True, training=self.training, need_weights=False)
        return x


case("attnpool_linears", AttnPoolHead(E, H, 10), [torch.randn(6, N, E)], lambda m, x: m(x), heads=H, embed=E, out=10)


class CrossAttn(nn.Module):
    """A cross attention in the style of IP-IQA's TextAttentionPool2d: text
    queries of another width (qdim) attend to image tokens; q·kᵀ is divided
    by √d after the product; projections q_proj, k_proj, v_proj, out_proj."""

    def __init__(self, qdim, embed, heads, out):
        super().__init__()
        self.q_proj = nn.Linear(qdim, embed)
        self.k_proj = nn.Linear(embed, embed)
        self.v_proj = nn.Linear(embed, embed)
        self.out_proj = nn.Linear(embed, out)
        self.heads = heads

    def forward(self, q, kv):  # q: [L, N, qdim], kv: [S, N, E]
        L, N, _ = q.shape
        S = kv.shape[0]
        E = self.k_proj.out_features
        hd = E // self.heads
        split = lambda x, n: x.reshape(n, N * self.heads, hd).transpose(0, 1)
        qh, kh, vh = split(self.q_proj(q), L), split(self.k_proj(kv), S), split(self.v_proj(kv), S)
        attn = torch.softmax(torch.bmm(qh, kh.transpose(1, 2)) / hd ** 0.5, dim=-1)
        o = torch.bmm(attn, vh).transpose(0, 1).reshape(L * N, E)
        return self.out_proj(o).reshape(L, N, -1)


case("cross_attn_ipiqa_style", CrossAttn(6, E, H, 5), [torch.randn(3, N, 6), torch.randn(7, N, E)],
     lambda m, q, kv: m(q, kv), heads=H, embed=E, qdim=6, out=5)

# BatchNorm2d: three training steps, then eval.
bn_cases = []
for name, momentum in [("batch_norm2d", 0.1), ("batch_norm2d_cumulative", None)]:
    bn = nn.BatchNorm2d(3, momentum=momentum, eps=1e-5)
    with torch.no_grad():
        bn.weight.copy_(torch.randn(3) * 0.3 + 1)
        bn.bias.copy_(torch.randn(3) * 0.3)
        bn.running_mean.copy_(torch.randn(3) * 0.2)
        bn.running_var.copy_(torch.rand(3) + 0.5)
    state = sd(bn)
    steps = []
    bn.train()
    for i in range(3):
        x = (torch.randn(4, 3, 3, 5) * (1 + i) + i).requires_grad_(True)
        bn.zero_grad()
        y = bn(x)
        up = torch.randn(y.shape)
        (y * up).sum().backward()
        steps.append({"x": t(x), "out": t(y), "upstream": t(up), "x_grad": t(x.grad),
                      "weight_grad": t(bn.weight.grad), "bias_grad": t(bn.bias.grad),
                      "running_mean": t(bn.running_mean), "running_var": t(bn.running_var),
                      "num_batches_tracked": int(bn.num_batches_tracked)})
    bn.eval()
    xe = torch.randn(2, 3, 3, 5).requires_grad_(True)
    ye = bn(xe)
    upe = torch.randn(ye.shape)
    (ye * upe).sum().backward()
    bn_cases.append({"name": name, "momentum": momentum, "eps": 1e-5, "state": state, "train_steps": steps,
                     "eval": {"x": t(xe), "out": t(ye), "upstream": t(upe), "x_grad": t(xe.grad)}})


# CLIP's LayerNorm on fp16 input: normalises in fp32, returns fp16.
class CLIPLayerNorm(nn.LayerNorm):
    def forward(self, x):
        orig = x.dtype
        return super().forward(x.type(torch.float32)).type(orig)


ln = CLIPLayerNorm(6)
with torch.no_grad():
    ln.weight.copy_(torch.randn(6) * 0.5 + 1)
    ln.bias.copy_(torch.randn(6) * 0.5)
xh = (torch.randn(3, 6) * 4 + 2).half()
yh = ln(xh)
ln_fp16 = {"state": sd(ln), "x": t(xh), "out": t(yh), "out_dtype": str(yh.dtype)}

out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "modules.json")
with open(out, "w") as f:
    json.dump({"torch": torch.__version__, "cases": cases, "batch_norm": bn_cases, "layer_norm_fp16": ln_fp16}, f, allow_nan=False)
print("wrote", os.path.normpath(out), len(cases), "cases,", len(bn_cases), "batch-norm cases")


# A CLIP ModifiedResNet Bottleneck (model.py) in training mode, two steps:
# composed modules, OrderedDict names ("downsample.0"), batch statistics, and
# gradients through everything.
class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.avgpool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu3 = nn.ReLU(inplace=True)
        self.downsample = None
        self.stride = stride
        if stride > 1 or inplanes != planes * Bottleneck.expansion:
            from collections import OrderedDict
            self.downsample = nn.Sequential(OrderedDict([
                ("-1", nn.AvgPool2d(stride)),
                ("0", nn.Conv2d(inplanes, planes * self.expansion, 1, stride=1, bias=False)),
                ("1", nn.BatchNorm2d(planes * self.expansion))
            ]))

    def forward(self, x):
        identity = x
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        out = self.avgpool(out)
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        out = self.relu3(out)
        return out


blk = Bottleneck(4, 2, stride=2)
with torch.no_grad():
    for n, p in blk.named_parameters():
        p.copy_(torch.randn(p.shape) * 0.5 + (1 if n.endswith("weight") and "bn" in n else 0))
blk_state = sd(blk)
blk.train()
blk_steps = []
for i in range(2):
    blk.zero_grad()
    x = torch.randn(2, 4, 6, 6).requires_grad_(True)
    y = blk(x)
    up = torch.randn(y.shape)
    (y * up).sum().backward()
    blk_steps.append({"x": t(x), "out": t(y), "upstream": t(up), "x_grad": t(x.grad),
                      "param_grads": {n: t(p.grad) for n, p in blk.named_parameters()},
                      "buffers": {n: t(b) for n, b in blk.named_buffers()}})
blk.eval()
xe = torch.randn(2, 4, 6, 6)
with torch.no_grad():
    ye = blk(xe)
with open(out, "r") as f:
    d = json.load(f)
d["bottleneck"] = {"state": blk_state, "train_steps": blk_steps, "eval": {"x": t(xe), "out": t(ye)}}
with open(out, "w") as f:
    json.dump(d, f, allow_nan=False)
print("added the bottleneck case")
