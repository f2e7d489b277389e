#!/usr/bin/python3
"""PyTorch eager reference for clipagiqa/ipiqa's RN50 benchmarks.

Our own compact re-statement of IP-IQA's computation (CLIP ModifiedResNet at
512x512 without its attnpool, CLIP attnpool with a 16x16 positional
embedding, text-guided cross-attention pool, MLP head, CLIP text encoder
re-run for every call as the official forward does), RN50 geometry, random
weights. Prints one JSON line per measurement: scoring img/s (batch 1, 32)
and one training step (train-mode BatchNorm, MSE, backward, AdamW) at batch 8.

    /usr/bin/python3 bench/ipiqa_reference.py [--threads 2] [--train-batches 8]
"""
import argparse, json, resource, time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Bottleneck(nn.Module):
    def __init__(self, inp, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(inp, planes, 1, bias=False); self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False); self.bn2 = nn.BatchNorm2d(planes)
        self.pool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False); self.bn3 = nn.BatchNorm2d(planes * 4)
        self.down = None
        if stride > 1 or inp != planes * 4:
            self.down = nn.Sequential(nn.AvgPool2d(stride) if stride > 1 else nn.Identity(),
                                      nn.Conv2d(inp, planes * 4, 1, bias=False), nn.BatchNorm2d(planes * 4))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(self.pool(out)))
        return F.relu(out + (self.down(x) if self.down is not None else x))


class ResNet(nn.Module):
    def __init__(self, layers=(3, 4, 6, 3), width=64):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, width // 2, 3, 2, 1, bias=False), nn.BatchNorm2d(width // 2), nn.ReLU(),
            nn.Conv2d(width // 2, width // 2, 3, 1, 1, bias=False), nn.BatchNorm2d(width // 2), nn.ReLU(),
            nn.Conv2d(width // 2, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(), nn.AvgPool2d(2))
        blocks, inp = [], width
        for st, n in enumerate(layers):
            for i in range(n):
                blocks.append(Bottleneck(inp, width << st, 2 if st > 0 and i == 0 else 1))
                inp = (width << st) * 4
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x):
        return self.blocks(self.stem(x))


def tokens(x, pos):
    n, d, h, w = x.shape
    x = x.reshape(n, d, h * w).permute(0, 2, 1)
    return torch.cat([x.mean(1, keepdim=True), x], 1) + pos


class AttnPool(nn.Module):
    def __init__(self, grid, d, heads, out):
        super().__init__()
        self.pos = nn.Parameter(torch.randn(grid * grid + 1, d) / d ** 0.5)
        self.q, self.k, self.v, self.c = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, out)
        self.heads = heads

    def forward(self, x):
        t = tokens(x, self.pos).permute(1, 0, 2)
        o, _ = F.multi_head_attention_forward(
            query=t[:1], key=t, value=t, embed_dim_to_check=t.shape[-1], num_heads=self.heads,
            q_proj_weight=self.q.weight, k_proj_weight=self.k.weight, v_proj_weight=self.v.weight,
            in_proj_weight=None, in_proj_bias=torch.cat([self.q.bias, self.k.bias, self.v.bias]),
            bias_k=None, bias_v=None, add_zero_attn=False, dropout_p=0, out_proj_weight=self.c.weight,
            out_proj_bias=self.c.bias, use_separate_proj_weight=True, training=self.training, need_weights=False)
        return o.squeeze(0)


class TextPool(nn.Module):
    def __init__(self, grid, d, txt, heads, out):
        super().__init__()
        self.pos = nn.Parameter(torch.randn(grid * grid + 1, d) / d ** 0.5)
        self.q, self.k, self.v, self.o = nn.Linear(txt, d), nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, out)
        self.heads = heads

    def forward(self, x, txt):
        t = tokens(x, self.pos)
        n, l, d = t.shape
        hd = d // self.heads
        q = self.q(txt).reshape(n, 1, self.heads, hd).transpose(1, 2)
        k = self.k(t).reshape(n, l, self.heads, hd).transpose(1, 2)
        v = self.v(t).reshape(n, l, self.heads, hd).transpose(1, 2)
        a = torch.softmax(q @ k.transpose(-1, -2) / hd ** 0.5, -1)
        return self.o((a @ v).transpose(1, 2).reshape(n, d))


class TextBlock(nn.Module):
    def __init__(self, w, heads):
        super().__init__()
        self.attn = nn.MultiheadAttention(w, heads)
        self.ln_1, self.ln_2 = nn.LayerNorm(w), nn.LayerNorm(w)
        self.fc, self.proj = nn.Linear(w, 4 * w), nn.Linear(4 * w, w)

    def forward(self, x, mask):
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, attn_mask=mask, need_weights=False)[0]
        h = self.fc(self.ln_2(x))
        return x + self.proj(h * torch.sigmoid(1.702 * h))


class IPIQA(nn.Module):
    def __init__(self, res=512, embed=1024, width=64, txt=512, layers=12):
        super().__init__()
        d, grid = 32 * width, res // 32
        self.resnet50 = ResNet(width=width)
        self.attnpool = AttnPool(grid, d, d // 64, embed)
        self.txt_attnpool = TextPool(grid, d, embed, d // 64, embed)
        self.wte = nn.Embedding(49408, txt)
        self.txt_pos = nn.Parameter(torch.randn(77, txt) * 0.01)
        self.blocks = nn.ModuleList([TextBlock(txt, txt // 64) for _ in range(layers)])
        self.ln_final = nn.LayerNorm(txt)
        self.text_projection = nn.Parameter(torch.randn(txt, embed) * txt ** -0.5)
        self.dense, self.out_proj = nn.Linear(2 * embed, 2 * embed), nn.Linear(2 * embed, 2)
        self.register_buffer("mask", torch.full((77, 77), float("-inf")).triu(1))
        for p in list(self.blocks.parameters()) + list(self.ln_final.parameters()):
            p.requires_grad = False

    def encode_text(self, ids):
        x = (self.wte(ids) + self.txt_pos).permute(1, 0, 2)
        for b in self.blocks:
            x = b(x, self.mask)
        x = self.ln_final(x.permute(1, 0, 2))
        return x[torch.arange(x.shape[0]), ids.argmax(-1)] @ self.text_projection

    def forward(self, images, ids):
        txt = self.encode_text(ids)
        fmap = self.resnet50(images)
        h = torch.cat([self.attnpool(fmap), self.txt_attnpool(fmap, txt)], 1)
        return self.out_proj(torch.tanh(self.dense(h)))


def rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--score-batches", default="1,32")
    ap.add_argument("--train-batches", default="8")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    m = IPIQA()
    ids = torch.zeros(64, 77, dtype=torch.long)
    ids[:, 0], ids[:, 1:6], ids[:, 6] = 49406, 320, 49407
    for n in [int(v) for v in a.score_batches.split(",") if v]:
        m.eval()
        x = torch.randn(n, 3, 512, 512)
        with torch.no_grad():
            m(x[:1], ids[:1])  # warm-up (first-call initialisation)
            t = time.perf_counter(); m(x, ids[:n]); dt = time.perf_counter() - t
        print(json.dumps({"what": "score", "batch": n, "seconds": dt, "img_per_s": n / dt, "peak_rss_mib": rss_mib()}), flush=True)
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-5, weight_decay=0)
    for n in [int(v) for v in a.train_batches.split(",") if v]:
        m.train()
        x, y = torch.randn(n, 3, 512, 512), torch.zeros(n, 2)
        t = time.perf_counter()
        loss = F.mse_loss(m(x, ids[:n]), y); loss.backward(); opt.step(); opt.zero_grad()
        dt = time.perf_counter() - t
        print(json.dumps({"what": "train_step", "batch": n, "seconds": dt, "peak_rss_mib": rss_mib()}), flush=True)


if __name__ == "__main__":
    main()
