#!/usr/bin/env python3
"""PyTorch eager reference for `clipagiqa bench`.

A plain eager CLIP (OpenAI's architecture: seq-first nn.MultiheadAttention,
LayerNorm computed in float32, QuickGELU, class token, causal text mask), the
CoOp/CLIP-AGIQA prompt learner and regressor, and the preprocessing of CLIP's
test transform (PIL bicubic resize of the short side, centre crop, ToTensor,
Normalize) and of the training transform (RandomResizedCrop + flip), written
here because torchvision is not installed. It loads the same weights as the Go
program (TorchScript archive or torch.save state dict) and times what the Go
side asks for.

Protocol (--serve): one JSON object per line on stdin, one JSON reply per line
on stdout. Every reply has "ok" and, for timed ops, "times" (seconds per
iteration after warm-up) and "hwm_kb" (peak RSS during the op: VmHWM after
resetting it through /proc/self/clear_refs; "hwm_reset" says if that worked).
Ops: load, encoder, features, text_features, text, score, train_step, matmul,
rss, compile (torch.compile the image tower; encoder and features then take
"compiled": true), export_onnx (the image tower to an ONNX file, for
onnx_reference.js), quit.
"""

import argparse
import json
import math
import os
import random
import resource
import sys
import time
from collections import OrderedDict

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


# ---------------------------------------------------------------- the model


class LayerNorm32(nn.LayerNorm):
    """LayerNorm in float32 whatever the input dtype, as CLIP does for fp16."""

    def forward(self, x):
        return super().forward(x.float()).to(x.dtype)


class QuickGELU(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


class Block(nn.Module):
    """Pre-norm residual block: x + attn(ln_1(x)); x + mlp(ln_2(x))."""

    def __init__(self, width, heads, mask=None):
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads)
        self.ln_1 = LayerNorm32(width)
        self.mlp = nn.Sequential(OrderedDict([
            ("c_fc", nn.Linear(width, 4 * width)),
            ("gelu", QuickGELU()),
            ("c_proj", nn.Linear(4 * width, width)),
        ]))
        self.ln_2 = LayerNorm32(width)
        self.mask = mask

    def forward(self, x):  # x: [L, N, W]
        h = self.ln_1(x)
        mask = None if self.mask is None else self.mask[:x.shape[0], :x.shape[0]].to(x.dtype)
        x = x + self.attn(h, h, h, need_weights=False, attn_mask=mask)[0]
        return x + self.mlp(self.ln_2(x))


class Stack(nn.Module):
    def __init__(self, width, layers, heads, mask=None):
        super().__init__()
        self.resblocks = nn.Sequential(*[Block(width, heads, mask) for _ in range(layers)])

    def forward(self, x):
        return self.resblocks(x)


class ViT(nn.Module):
    def __init__(self, resolution, patch, width, layers, heads, out_dim):
        super().__init__()
        grid = resolution // patch
        self.conv1 = nn.Conv2d(3, width, patch, stride=patch, bias=False)
        self.class_embedding = nn.Parameter(torch.zeros(width))
        self.positional_embedding = nn.Parameter(torch.zeros(grid * grid + 1, width))
        self.ln_pre = LayerNorm32(width)
        self.transformer = Stack(width, layers, heads)
        self.ln_post = LayerNorm32(width)
        self.proj = nn.Parameter(torch.zeros(width, out_dim))

    def forward(self, x):
        x = self.conv1(x)  # [N, W, G, G]
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)  # [N, G², W]
        cls = self.class_embedding.to(x.dtype) + torch.zeros(x.shape[0], 1, x.shape[-1], dtype=x.dtype)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        x = self.ln_pre(x).permute(1, 0, 2)  # [L, N, W]
        x = self.transformer(x).permute(1, 0, 2)
        return self.ln_post(x[:, 0, :]) @ self.proj


def infer_config(sd):
    width = sd["visual.conv1.weight"].shape[0]
    patch = sd["visual.conv1.weight"].shape[-1]
    grid = round((sd["visual.positional_embedding"].shape[0] - 1) ** 0.5)
    vlayers = len({k.split(".")[3] for k in sd if k.startswith("visual.transformer.resblocks.")})
    tlayers = len({k.split(".")[2] for k in sd if k.startswith("transformer.resblocks.")})
    twidth = sd["ln_final.weight"].shape[0]
    return dict(
        embed_dim=sd["text_projection"].shape[1], image_resolution=grid * patch,
        vision_layers=vlayers, vision_width=width, vision_heads=max(1, width // 64),
        vision_patch_size=patch, context_length=sd["positional_embedding"].shape[0],
        vocab_size=sd["token_embedding.weight"].shape[0], transformer_width=twidth,
        transformer_heads=max(1, twidth // 64), transformer_layers=tlayers)


class CLIP(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.cfg = c
        self.visual = ViT(c["image_resolution"], c["vision_patch_size"], c["vision_width"],
                          c["vision_layers"], c["vision_heads"], c["embed_dim"])
        n = c["context_length"]
        mask = torch.full((n, n), float("-inf")).triu_(1)
        self.transformer = Stack(c["transformer_width"], c["transformer_layers"], c["transformer_heads"], mask)
        self.token_embedding = nn.Embedding(c["vocab_size"], c["transformer_width"])
        self.positional_embedding = nn.Parameter(torch.zeros(n, c["transformer_width"]))
        self.ln_final = LayerNorm32(c["transformer_width"])
        self.text_projection = nn.Parameter(torch.zeros(c["transformer_width"], c["embed_dim"]))
        self.logit_scale = nn.Parameter(torch.zeros([]))


def read_state_dict(path):
    try:
        sd = torch.jit.load(path, map_location="cpu").state_dict()
    except RuntimeError:
        sd = torch.load(path, map_location="cpu")
    return {k: v for k, v in sd.items() if k not in ("input_resolution", "context_length", "vocab_size")}


def load_clip(path):
    sd = read_state_dict(path)
    model = CLIP(infer_config(sd))
    model.load_state_dict({k: v.float() for k, v in sd.items()}, strict=False)
    del sd
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


class PromptLearner(nn.Module):
    """CoOp's unified context at the class-token position 'end'."""

    def __init__(self, clip, ids, n_ctx):
        super().__init__()
        d = clip.cfg["transformer_width"]
        self.ctx = nn.Parameter(torch.randn(n_ctx, d) * 0.02)
        ids = torch.tensor(ids, dtype=torch.long)
        with torch.no_grad():
            emb = clip.token_embedding(ids)
        self.register_buffer("prefix", emb[:, :1, :].clone())
        self.register_buffer("suffix", emb[:, 1 + n_ctx:, :].clone())
        self.eot = ids.argmax(dim=-1)

    def forward(self):
        k = self.prefix.shape[0]
        return torch.cat([self.prefix, self.ctx.unsqueeze(0).expand(k, -1, -1), self.suffix], dim=1)


def encode_prompts(clip, prompts, eot):
    x = prompts + clip.positional_embedding
    x = clip.transformer(x.permute(1, 0, 2)).permute(1, 0, 2)
    x = clip.ln_final(x)
    return x[torch.arange(x.shape[0]), eot] @ clip.text_projection


def regressor(in_dim, hidden=512, p=0.5):
    return nn.Sequential(nn.Dropout(p), nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(p), nn.Linear(hidden, 1))


# ---------------------------------------------------------- preprocessing


def to_tensor(img):
    a = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).float().div(255)
    mean = torch.tensor(CLIP_MEAN).view(3, 1, 1)
    std = torch.tensor(CLIP_STD).view(3, 1, 1)
    return (a - mean) / std


def center_transform(path, n):
    img = Image.open(path)
    w, h = img.size
    if w <= h:
        size = (n, int(n * h / w))
    else:
        size = (int(n * w / h), n)
    img = img.resize(size, Image.BICUBIC)
    left = int(round((size[0] - n) / 2.0))
    top = int(round((size[1] - n) / 2.0))
    img = img.crop((left, top, left + n, top + n)).convert("RGB")
    return to_tensor(img)


def random_transform(path, n, rng):
    img = Image.open(path).convert("RGB")
    w, h = img.size
    area = w * h
    box = None
    for _ in range(10):
        target = area * rng.uniform(0.08, 1.0)
        ratio = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        cw = int(round(math.sqrt(target * ratio)))
        ch = int(round(math.sqrt(target / ratio)))
        if 0 < cw <= w and 0 < ch <= h:
            left, top = rng.randint(0, w - cw), rng.randint(0, h - ch)
            box = (left, top, left + cw, top + ch)
            break
    if box is None:
        s = min(w, h)
        box = ((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)
    img = img.resize((n, n), Image.BICUBIC, box=box)
    if rng.random() < 0.5:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    return to_tensor(img)


# ------------------------------------------------------------------ memory


def reset_hwm():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def status_kb(field):
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    if field == "VmHWM":
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return 0


# --------------------------------------------------------------- the server


class Server:
    def __init__(self):
        self.clip = None
        self.prompts = None
        self.head = None
        self.compiled = None

    def op_load(self, req):
        torch.set_num_threads(int(req.get("threads") or torch.get_num_threads()))
        torch.manual_seed(int(req.get("seed", 1)))
        t = time.perf_counter()
        self.clip = load_clip(req["clip"])
        load_s = time.perf_counter() - t
        if req.get("token_ids"):
            self.prompts = PromptLearner(self.clip, req["token_ids"], int(req.get("n_ctx", 16)))
            if req.get("ctx"):  # the Go side's context, to compare text features
                with torch.no_grad():
                    self.prompts.ctx.copy_(torch.tensor(req["ctx"]).view_as(self.prompts.ctx))
            k = len(req["token_ids"])
            self.head = regressor((1 + k) * self.clip.cfg["embed_dim"])
        return {"config": self.clip.cfg, "load_s": load_s, "threads": torch.get_num_threads(),
                "torch": torch.__version__}

    def res(self):
        return self.clip.cfg["image_resolution"]

    def visual(self, req):
        if not req.get("compiled"):
            return self.clip.visual
        if self.compiled is None:
            raise ValueError("compiled: send the compile op first")
        return self.compiled

    def op_compile(self, req):
        # Static shapes: each batch size compiles once, in the caller's warm-up.
        self.compiled = torch.compile(self.clip.visual, dynamic=False)
        return {"torch": torch.__version__}

    def op_export_onnx(self, req):
        n = self.res()
        x = torch.randn(1, 3, n, n)
        t = time.perf_counter()
        with torch.no_grad():
            torch.onnx.export(self.clip.visual, (x,), req["path"], input_names=["pixels"],
                              output_names=["features"], opset_version=int(req.get("opset", 14)),
                              dynamic_axes={"pixels": {0: "batch"}, "features": {0: "batch"}})
        return {"load_s": time.perf_counter() - t}

    def op_encoder(self, req):
        b = int(req["batch"])
        x = torch.randn(b, 3, self.res(), self.res())
        fn = self.visual(req)
        times = []
        with torch.no_grad():
            for i in range(int(req.get("warmup", 1)) + int(req["iters"])):
                t = time.perf_counter()
                fn(x)
                times.append(time.perf_counter() - t)
        return {"times": times[int(req.get("warmup", 1)):]}

    def op_features(self, req):
        x = torch.from_numpy(np.load(req["pixels"]))
        with torch.no_grad():
            f = self.visual(req)(x)
        return {"features": f.flatten().tolist(), "shape": list(f.shape)}

    def op_text_features(self, req):
        with torch.no_grad():
            f = F.normalize(self.text_features(), dim=-1)
        return {"features": f.flatten().tolist()}

    def text_features(self):
        return encode_prompts(self.clip, self.prompts(), self.prompts.eot)

    def op_text(self, req):
        times = []
        for i in range(int(req.get("warmup", 1)) + int(req["iters"])):
            t = time.perf_counter()
            self.prompts.zero_grad(set_to_none=True)
            f = self.text_features()
            f.pow(2).sum().backward()
            times.append(time.perf_counter() - t)
        return {"times": times[int(req.get("warmup", 1)):]}

    def op_score(self, req):
        files, b = req["files"], int(req["batch"])
        n = self.res()
        self.head.eval()
        preds = []
        t = time.perf_counter()
        with torch.no_grad():
            text = F.normalize(self.text_features(), dim=-1)
            for i in range(0, len(files), b):
                x = torch.stack([center_transform(p, n) for p in files[i:i + b]])
                img = F.normalize(self.clip.visual(x), dim=-1)
                feat = torch.cat([img, text.reshape(1, -1).expand(img.shape[0], -1)], dim=1)
                preds.append(self.head(feat).flatten())
        elapsed = time.perf_counter() - t
        return {"times": [elapsed], "images": len(files), "n_preds": int(torch.cat(preds).numel())}

    def op_train_step(self, req):
        """The official regime: fresh augmentation and the encoder every step."""
        files, mos, b = req["files"], req["mos"], int(req["batch"])
        params = list(self.prompts.parameters()) + list(self.head.parameters())
        opt = torch.optim.SGD(params, lr=float(req.get("lr", 0.002)), momentum=0.9, weight_decay=5e-4)
        rng = random.Random(int(req.get("seed", 1)))
        self.head.train()
        n = self.res()
        times = []
        steps = int(req.get("warmup", 1)) + int(req["steps"])
        for s in range(steps):
            idx = [(s * b + j) % len(files) for j in range(b)]
            t = time.perf_counter()
            x = torch.stack([random_transform(files[i], n, rng) for i in idx])
            y = torch.tensor([mos[i] for i in idx], dtype=torch.float32)
            img = F.normalize(self.clip.visual(x), dim=-1)  # frozen: no graph is recorded
            text = F.normalize(self.text_features(), dim=-1)
            feat = torch.cat([img, text.reshape(1, -1).expand(img.shape[0], -1)], dim=1)
            loss = F.mse_loss(self.head(feat).flatten(), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            times.append(time.perf_counter() - t)
        return {"times": times[int(req.get("warmup", 1)):]}

    def op_matmul(self, req):
        n = int(req.get("n", 768))
        a, b = torch.randn(n, n), torch.randn(n, n)
        times = []
        for i in range(int(req.get("warmup", 2)) + int(req["iters"])):
            t = time.perf_counter()
            torch.matmul(a, b)
            times.append(time.perf_counter() - t)
        return {"times": times[int(req.get("warmup", 2)):], "flops": 2.0 * n * n * n}

    def op_rss(self, req):
        return {"rss_kb": status_kb("VmRSS")}

    def handle(self, req):
        op = req.get("op")
        fn = getattr(self, "op_" + str(op), None)
        if fn is None:
            raise ValueError("unknown op %r" % op)
        reset_ok = reset_hwm()
        out = fn(req)
        out["hwm_kb"] = status_kb("VmHWM")
        out["hwm_reset"] = reset_ok
        return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--serve", action="store_true", help="answer JSON requests on stdin")
    ap.add_argument("--clip", help="one-shot: load this model and time the encoder")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--iters", type=int, default=3)
    args = ap.parse_args()
    srv = Server()
    if not args.serve:
        if not args.clip:
            ap.error("need --serve or --clip")
        srv.op_load({"clip": args.clip, "threads": args.threads})
        r = srv.op_encoder({"batch": args.batch, "iters": args.iters})
        best = min(r["times"])
        print("batch %d: %.3f s/iter, %.2f img/s" % (args.batch, best, args.batch / best))
        return
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            req = json.loads(line)
            if req.get("op") == "quit":
                print(json.dumps({"ok": True}), flush=True)
                break
            out = srv.handle(req)
            out["ok"] = True
        except Exception as e:  # reported to the Go side, which fails with it
            out = {"ok": False, "error": "%s: %s" % (type(e).__name__, e)}
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
