#!/usr/bin/python3
"""PyTorch eager reference for the IP-IQA benchmark (`clipagiqa bench --only ipiqa`).

Our own restatement of what the official IP-IQA code (github.com/Coobiw/IP-IQA
at b486be5: ipiqa/models/ipiqa.py, ipiqa/models/utils.py, clip/model.py,
trainer.py) computes, with the official module names, so that its state_dict
has the official keys and the Go side loads the very same weights:

- resnet50: CLIP's ModifiedResNet (3-conv stem, Bottlenecks with avgpool
  strides, in-place ReLUs, `out += identity`) with attnpool = Identity;
- attnpool: CLIP's AttentionPool2d with a (G*G+1)-row positional embedding;
- txt_attnpool: TextAttentionPool2d (MultiHeadCrossAttention, scaled after
  q.k^T); head: MLPHead (dropout 0.5, dense, tanh, dropout, out_proj);
- the text tower (txt_model, ln_final frozen and in eval mode; wte, txt_pos,
  text_projection trainable, as the official freeze_module leaves them),
  re-run over all 77 positions of every row on every call, as the official
  forward does;
- the training step: model.train(), MSE on [quality, alignment], backward,
  AdamW over get_optimizer_params (head groups at lr x head_scale 10,
  weight decay 0), zero_grad.

RN50 geometry at 512x512 with random weights. Two ways to run it:

    /usr/bin/python3 bench/ipiqa_reference.py [--threads 2] [--score-batches 1,32] [--train-batches 8,32]
        standalone: one JSON line per measurement (img/s, step seconds, peak RSS)
    /usr/bin/python3 bench/ipiqa_reference.py --serve
        one JSON request per stdin line, one JSON reply per stdout line; driven
        by internal/benchkit/ipiqa.go, which interleaves it with the Go side
"""
import argparse
import json
import math
import sys
import time
import traceback
from collections import OrderedDict

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

RESOLUTION = 512


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
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu3 = nn.ReLU(inplace=True)
        self.downsample = None
        if stride > 1 or inplanes != planes * 4:
            # As CLIP: the shortcut's avgpool exists (a copy) even at stride 1.
            self.downsample = nn.Sequential(OrderedDict([
                ("-1", nn.AvgPool2d(stride)),
                ("0", nn.Conv2d(inplanes, planes * 4, 1, bias=False)),
                ("1", nn.BatchNorm2d(planes * 4))]))

    def forward(self, x):
        identity = x
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        out = self.avgpool(out)
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu3(out)


class ModifiedResNet(nn.Module):
    def __init__(self, layers=(3, 4, 6, 3), width=64):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width // 2, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width // 2)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(width // 2, width // 2, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width // 2)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(width // 2, width, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.relu3 = nn.ReLU(inplace=True)
        self.avgpool = nn.AvgPool2d(2)
        self._inplanes = width
        self.layer1 = self._make_layer(width, layers[0])
        self.layer2 = self._make_layer(width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(width * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(width * 8, layers[3], stride=2)
        self.attnpool = nn.Identity()  # IP-IQA moves it out (self.attnpool)

    def _make_layer(self, planes, blocks, stride=1):
        layers = [Bottleneck(self._inplanes, planes, stride)]
        self._inplanes = planes * 4
        layers += [Bottleneck(self._inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.relu2(self.bn2(self.conv2(x)))
        x = self.relu3(self.bn3(self.conv3(x)))
        x = self.avgpool(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.attnpool(x)


class AttentionPool2d(nn.Module):
    def __init__(self, spacial_dim, embed_dim, num_heads, output_dim):
        super().__init__()
        self.positional_embedding = nn.Parameter(torch.randn(spacial_dim ** 2 + 1, embed_dim) / embed_dim ** 0.5)
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.c_proj = nn.Linear(embed_dim, output_dim)
        self.num_heads = num_heads

    def forward(self, x):
        x = x.flatten(start_dim=2).permute(2, 0, 1)
        x = torch.cat([x.mean(dim=0, keepdim=True), x], dim=0)
        x = x + self.positional_embedding[:, None, :].to(x.dtype)
        x, _ = F.multi_head_attention_forward(
            query=x[:1], key=x, value=x, embed_dim_to_check=x.shape[-1], num_heads=self.num_heads,
            q_proj_weight=self.q_proj.weight, k_proj_weight=self.k_proj.weight, v_proj_weight=self.v_proj.weight,
            in_proj_weight=None, in_proj_bias=torch.cat([self.q_proj.bias, self.k_proj.bias, self.v_proj.bias]),
            bias_k=None, bias_v=None, add_zero_attn=False, dropout_p=0, out_proj_weight=self.c_proj.weight,
            out_proj_bias=self.c_proj.bias, use_separate_proj_weight=True, training=self.training,
            need_weights=False)
        return x.squeeze(0)


class MultiHeadCrossAttention(nn.Module):
    def __init__(self, embed_dim, query_dim, kv_dim, num_heads, output_dim):
        super().__init__()
        self.embed_dim, self.num_heads, self.head_dim = embed_dim, num_heads, embed_dim // num_heads
        self.q_proj = nn.Linear(query_dim, embed_dim)
        self.k_proj = nn.Linear(kv_dim, embed_dim)
        self.v_proj = nn.Linear(kv_dim, embed_dim)
        self.out_proj = nn.Linear(embed_dim, output_dim)

    def forward(self, query, key, value):
        n = query.size(0)
        q = self.q_proj(query).reshape(n, -1, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(key).reshape(n, -1, self.num_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(value).reshape(n, -1, self.num_heads, self.head_dim).transpose(1, 2)
        attn = F.softmax(torch.matmul(q, k.transpose(-2, -1)) / (self.head_dim ** 0.5), dim=-1)
        context = torch.matmul(attn, v).transpose(1, 2).reshape(n, -1, self.embed_dim)
        return self.out_proj(context)


class TextAttentionPool2d(nn.Module):
    def __init__(self, spacial_dim, embed_dim, txt_dim, num_heads, output_dim):
        super().__init__()
        self.positional_embedding = nn.Parameter(torch.randn(spacial_dim ** 2 + 1, embed_dim) / embed_dim ** 0.5)
        self.cross_attn = MultiHeadCrossAttention(embed_dim, txt_dim, embed_dim, num_heads, output_dim)

    def forward(self, x, txt_feat):
        x = x.flatten(start_dim=2).permute(2, 0, 1)
        x = torch.cat([x.mean(dim=0, keepdim=True), x], dim=0)
        x = x + self.positional_embedding[:, None, :].to(x.dtype)
        x = x.permute(1, 0, 2).contiguous()
        return self.cross_attn(txt_feat.unsqueeze(dim=1), x, x).squeeze(dim=1)


class LayerNorm(nn.LayerNorm):
    def forward(self, x):
        return super().forward(x.type(torch.float32)).type(x.dtype)


class QuickGELU(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    def __init__(self, d_model, n_head, attn_mask):
        super().__init__()
        self.attn = nn.MultiheadAttention(d_model, n_head)
        self.ln_1 = LayerNorm(d_model)
        self.mlp = nn.Sequential(OrderedDict([
            ("c_fc", nn.Linear(d_model, d_model * 4)), ("gelu", QuickGELU()), ("c_proj", nn.Linear(d_model * 4, d_model))]))
        self.ln_2 = LayerNorm(d_model)
        self.attn_mask = attn_mask

    def forward(self, x):
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False, attn_mask=self.attn_mask)[0]
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width, layers, heads, attn_mask):
        super().__init__()
        self.resblocks = nn.Sequential(*[ResidualAttentionBlock(width, heads, attn_mask) for _ in range(layers)])

    def forward(self, x):
        return self.resblocks(x)


class MLPHead(nn.Module):
    def __init__(self, in_dim, out_dim, drop_rate):
        super().__init__()
        self.dense = nn.Linear(in_dim, in_dim)
        self.dropout = nn.Dropout(drop_rate)
        self.out_proj = nn.Linear(in_dim, out_dim)

    def forward(self, x):
        return self.out_proj(self.dropout(torch.tanh(self.dense(self.dropout(x)))))


def disabled_train(self, mode=True):
    return self


def freeze_module(module):
    # The official freeze_module: a Module is frozen and pinned to eval mode;
    # a Parameter gets requires_grad = True (the quirk that trains txt_pos
    # and text_projection).
    if isinstance(module, nn.Module):
        for p in module.parameters():
            p.requires_grad = False
        module.eval()
        module.train = disabled_train.__get__(module)
    elif isinstance(module, nn.Parameter):
        module.requires_grad = True


class IPIQA(nn.Module):
    def __init__(self, input_resolution=RESOLUTION, embed_dim=1024, width=64, txt_width=512, txt_layers=12,
                 context_length=77, vocab=49408, output_dim=2, dropout_rate=0.5, head_scale=10.0):
        super().__init__()
        d = width * 32
        self.resnet50 = ModifiedResNet(width=width)
        mask = torch.empty(context_length, context_length).fill_(float("-inf")).triu_(1)
        self.txt_model = Transformer(txt_width, txt_layers, txt_width // 64, mask)
        self.wte = nn.Embedding(vocab, txt_width)
        self.ln_final = LayerNorm(txt_width)
        self.txt_pos = nn.Parameter(torch.empty(context_length, txt_width))
        self.text_projection = nn.Parameter(torch.empty(txt_width, embed_dim))
        # CLIP's initialize_parameters for the text side.
        nn.init.normal_(self.wte.weight, std=0.02)
        nn.init.normal_(self.txt_pos, std=0.01)
        nn.init.normal_(self.text_projection, std=txt_width ** -0.5)
        self.attnpool = AttentionPool2d(input_resolution // 32, d, d // 64, embed_dim)
        self.txt_attnpool = TextAttentionPool2d(input_resolution // 32, d, embed_dim, 32, embed_dim)
        self.head = MLPHead(2 * embed_dim, output_dim, dropout_rate)
        freeze_module(self.txt_model)
        freeze_module(self.ln_final)
        freeze_module(self.txt_pos)
        freeze_module(self.text_projection)
        self.head_scale = head_scale

    def encode_text(self, text):
        x = self.wte(text) + self.txt_pos
        x = self.txt_model(x.permute(1, 0, 2)).permute(1, 0, 2)
        x = self.ln_final(x)
        return x[torch.arange(x.shape[0]), text.argmax(dim=-1)] @ self.text_projection

    def forward(self, x, text):
        txt_feat = self.encode_text(text)
        feat = self.resnet50(x)
        return self.head(torch.cat([self.attnpool(feat), self.txt_attnpool(feat, txt_feat)], dim=-1))

    def get_optimizer_params(self, weight_decay, lr_scale=1):
        groups = [[], [], [], []]  # wd, no wd, head wd, head no wd
        for n, p in self.named_parameters():
            if not p.requires_grad:
                continue
            i = 1 if p.ndim < 2 or "bias" in n or "ln" in n or "bn" in n else 0
            groups[i + (2 if "head" in n else 0)].append(p)
        return [{"params": groups[0], "weight_decay": weight_decay, "lr_scale": lr_scale},
                {"params": groups[1], "weight_decay": 0, "lr_scale": lr_scale},
                {"params": groups[2], "weight_decay": weight_decay, "lr_scale": self.head_scale},
                {"params": groups[3], "weight_decay": 0, "lr_scale": self.head_scale}]


def status_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def reset_hwm():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class Bench:
    """The model, its optimizer and the token rows; one method per request."""

    def __init__(self, threads, token_ids, seed=0, lr=1e-5):
        torch.set_num_threads(threads)
        torch.manual_seed(seed)
        t = time.perf_counter()
        self.model = IPIQA()
        self.ids = token_ids
        groups = self.model.get_optimizer_params(weight_decay=0)
        for g in groups:  # the official scheduler sets lr = init_lr * lr_scale
            g["lr"] = lr * g.pop("lr_scale")
        self.opt = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), weight_decay=0)
        self.load_s = time.perf_counter() - t

    def tokens(self, n):
        # The official forward tokenizes the prompts on every call.
        if n > len(self.ids):
            raise ValueError(f"batch {n} but only {len(self.ids)} token rows")
        return torch.tensor(self.ids[:n], dtype=torch.long)

    def save_state(self, path):
        # num_batches_tracked is left out: the Go RN50 has no such counters.
        sd = OrderedDict((k, v) for k, v in self.model.state_dict().items() if not k.endswith("num_batches_tracked"))
        torch.save(sd, path)

    def scores(self, pixels):
        self.model.eval()
        with torch.no_grad():
            return self.model(pixels, self.tokens(pixels.shape[0]))

    def score(self, batch, iters, warmup):
        x = torch.randn(batch, 3, RESOLUTION, RESOLUTION)
        times, cpu = [], []
        for i in range(warmup + iters):
            t, c = time.perf_counter(), time.process_time()
            self.scores(x)
            if i >= warmup:
                times.append(time.perf_counter() - t)
                cpu.append(time.process_time() - c)
        return times, cpu

    def train_step(self, batch, iters, warmup):
        x = torch.randn(batch, 3, RESOLUTION, RESOLUTION)
        y = torch.rand(batch, 2) * 4 + 1
        times, cpu = [], []
        for i in range(warmup + iters):
            t, c = time.perf_counter(), time.process_time()
            self.model.train()
            loss = F.mse_loss(self.model(x, self.tokens(batch)), y)
            loss.backward()
            self.opt.step()
            self.opt.zero_grad()
            if i >= warmup:
                times.append(time.perf_counter() - t)
                cpu.append(time.process_time() - c)
        return times, cpu


def profile(bench, batch):
    """Seconds of the parts of a scoring call (text tower, ResNet, all) and
    of a training step (forward, backward, AdamW + zero_grad)."""
    m, x = bench.model, torch.randn(batch, 3, RESOLUTION, RESOLUTION)
    y = torch.rand(batch, 2) * 4 + 1
    out = {}
    m.eval()
    with torch.no_grad():
        for name, f in [("text", lambda: m.encode_text(bench.tokens(batch))), ("resnet", lambda: m.resnet50(x)),
                        ("score", lambda: m(x, bench.tokens(batch)))]:
            t = time.perf_counter(); f(); out[name] = time.perf_counter() - t
    m.train()
    t = time.perf_counter()
    loss = F.mse_loss(m(x, bench.tokens(batch)), y)
    out["forward"] = time.perf_counter() - t
    t = time.perf_counter(); loss.backward(); out["backward"] = time.perf_counter() - t
    t = time.perf_counter(); bench.opt.step(); bench.opt.zero_grad(); out["optimizer"] = time.perf_counter() - t
    return out


def serve():
    bench = None
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            req = json.loads(line)
            op = req.get("op")
            rep = {"ok": True}
            if op == "quit":
                print(json.dumps(rep), flush=True)
                return
            if op == "load":
                bench = Bench(req.get("threads", 2), req["token_ids"], req.get("seed", 0))
                if req.get("state_out"):
                    bench.save_state(req["state_out"])
                rep.update(torch=torch.__version__, load_s=bench.load_s, threads=torch.get_num_threads())
            elif op == "reset_hwm":
                rep["hwm_reset"] = reset_hwm()
            elif op == "status":
                pass
            elif bench is None:
                raise RuntimeError(f"{op}: no model loaded (send a load request first)")
            elif op == "features":
                pixels = torch.from_numpy(np.load(req["pixels"]).astype(np.float32))
                rep["features"] = bench.scores(pixels).flatten().tolist()
            elif op == "score":
                rep["times"], rep["cpu"] = bench.score(req["batch"], req.get("iters", 1), req.get("warmup", 0))
            elif op == "profile":
                rep["phases"] = profile(bench, req["batch"])
            elif op == "train_step":
                rep["times"], rep["cpu"] = bench.train_step(req["batch"], req.get("iters", 1), req.get("warmup", 0))
            else:
                raise ValueError(f"unknown op {op!r}")
            rep["hwm_kb"], rep["rss_kb"] = status_kb("VmHWM"), status_kb("VmRSS")
        except Exception as e:  # the reply carries it; the driver decides
            rep = {"ok": False, "error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc(limit=3)}
        print(json.dumps(rep), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--serve", action="store_true", help="answer JSON requests on stdin (used by clipagiqa bench)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--score-batches", default="1,32")
    ap.add_argument("--train-batches", default="8")
    a = ap.parse_args()
    if a.serve:
        serve()
        return
    # Standalone: every row the same short prompt (<sot> a a a a a <eot>).
    ids = [[49406] + [320] * 5 + [49407] + [0] * 70 for _ in range(64)]
    b = Bench(a.threads, ids)
    for n in [int(v) for v in a.score_batches.split(",") if v]:
        t = b.score(n, 1, 1)[0][0]
        print(json.dumps({"what": "score", "batch": n, "seconds": t, "img_per_s": n / t,
                          "peak_rss_mib": status_kb("VmHWM") / 1024}), flush=True)
    for n in [int(v) for v in a.train_batches.split(",") if v]:
        t = b.train_step(n, 1, 1)[0][0]
        print(json.dumps({"what": "train_step", "batch": n, "seconds": t, "peak_rss_mib": status_kb("VmHWM") / 1024}),
              flush=True)


if __name__ == "__main__":
    main()
