#!/usr/bin/python3
"""Build a tiny randomly initialised CLIP ResNet in OpenAI's release format.

The image tower is written here from the ModifiedResNet description in the
CLIP paper and OpenAI's parameter names (it does not import or copy
openai/CLIP): a stem of three 3x3 convs with BatchNorm and ReLU (the first
with stride 2) and a 2x2 average pool; four stages of Bottlenecks (1x1, 3x3,
avgpool(stride) when stride > 1, 1x1 to 4x the planes; shortcut = avgpool +
1x1 conv + BatchNorm when the stride or the channels change); attention
pooling whose query is the mean token (multi-head, separate q/k/v/c
projections, learned positional embedding). The text tower and the archive
layout come from make_clip.py.

Run from anywhere with Debian's interpreter (torch 1.13 CPU):

    /usr/bin/python3 testdata/gen/make_clip_rn.py     # -> testdata/clipgen/tiny-rn/

Outputs and checks: testdata/gen/README.md ("tiny-rn").
"""

import argparse
import json
import math
import os
import sys
import time
from collections import OrderedDict

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_clip as mc  # noqa: E402  (text tower, archive helpers)

CONFIG = dict(embed_dim=32, image_resolution=96, vision_layers=(1, 2, 1, 1), vision_width=8,
              context_length=77, vocab_size=512, transformer_width=64, transformer_layers=1,
              seed=20601)
# Grid the attnpool positional embedding is resized to for the resized check
# (input 160x160 instead of 96x96).
RESIZED_GRID = 5


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.pool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample = None
        if stride > 1 or inplanes != planes * 4:
            # Names "0" and "1" are the conv and the BatchNorm; the pool has no
            # parameters, so it sits outside the Sequential here.
            self.down_pool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
            self.downsample = nn.Sequential(OrderedDict([
                ("0", nn.Conv2d(inplanes, planes * 4, 1, bias=False)),
                ("1", nn.BatchNorm2d(planes * 4)),
            ]))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(self.pool(out)))
        identity = x if self.downsample is None else self.downsample(self.down_pool(x))
        return F.relu(out + identity)


class AttentionPool2d(nn.Module):
    def __init__(self, grid, dim, heads, out_dim):
        super().__init__()
        self.positional_embedding = nn.Parameter(torch.zeros(grid * grid + 1, dim))
        self.k_proj = nn.Linear(dim, dim)
        self.q_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.c_proj = nn.Linear(dim, out_dim)
        self.heads = heads

    def forward(self, x, pos=None):
        pos = self.positional_embedding if pos is None else pos
        n, d, h, w = x.shape
        x = x.reshape(n, d, h * w).permute(2, 0, 1)              # [HW, N, D]
        x = torch.cat([x.mean(dim=0, keepdim=True), x], dim=0)   # [HW+1, N, D]
        x = x + pos[:, None, :].to(x.dtype)
        out, _ = F.multi_head_attention_forward(
            query=x[:1], key=x, value=x, embed_dim_to_check=d, num_heads=self.heads,
            q_proj_weight=self.q_proj.weight, k_proj_weight=self.k_proj.weight,
            v_proj_weight=self.v_proj.weight, in_proj_weight=None,
            in_proj_bias=torch.cat([self.q_proj.bias, self.k_proj.bias, self.v_proj.bias]),
            bias_k=None, bias_v=None, add_zero_attn=False, dropout_p=0.0,
            out_proj_weight=self.c_proj.weight, out_proj_bias=self.c_proj.bias,
            use_separate_proj_weight=True, training=self.training, need_weights=False)
        return out.squeeze(0)


class ModifiedResNet(nn.Module):
    def __init__(self, layers, width, resolution, heads, out_dim):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width // 2, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width // 2)
        self.conv2 = nn.Conv2d(width // 2, width // 2, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width // 2)
        self.conv3 = nn.Conv2d(width // 2, width, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        inplanes = width
        for i, n in enumerate(layers):
            planes = width * 2 ** i
            blocks = []
            for b in range(n):
                blocks.append(Bottleneck(inplanes, planes, 2 if (i > 0 and b == 0) else 1))
                inplanes = planes * 4
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.attnpool = AttentionPool2d(resolution // 32, width * 32, heads, out_dim)

    def feature_map(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        x = F.relu(self.bn3(self.conv3(x)))
        x = F.avg_pool2d(x, 2)
        for i in range(1, 5):
            x = getattr(self, f"layer{i}")(x)
        return x

    def forward(self, x):
        return self.attnpool(self.feature_map(x))


class CLIPResNet(mc.CLIP):
    """CLIP with the ResNet image tower; text tower and methods from make_clip."""

    def __init__(self, embed_dim, image_resolution, vision_layers, vision_width, context_length,
                 vocab_size, transformer_width, transformer_layers, **_):
        nn.Module.__init__(self)
        self.positional_embedding = nn.Parameter(torch.zeros(context_length, transformer_width))
        self.text_projection = nn.Parameter(torch.zeros(transformer_width, embed_dim))
        self.logit_scale = nn.Parameter(torch.zeros([]))
        self.register_buffer("input_resolution", torch.tensor(image_resolution, dtype=torch.int64))
        self.register_buffer("context_length", torch.tensor(context_length, dtype=torch.int64))
        self.register_buffer("vocab_size", torch.tensor(vocab_size, dtype=torch.int64))
        self.visual = ModifiedResNet(vision_layers, vision_width, image_resolution,
                                     vision_width * 32 // 64, embed_dim)
        causal = torch.full((context_length, context_length), float("-inf")).triu_(1)
        self.transformer = mc.Transformer(transformer_width, transformer_layers, causal)
        self.token_embedding = nn.Embedding(vocab_size, transformer_width)
        self.ln_final = mc.LayerNorm(transformer_width)


def randomise(model, cfg, gen):
    """Seeded values for every parameter (BatchNorm affine included); then the
    running statistics are set from a train-mode pass over a random batch and
    perturbed, so a port that ignores any of them fails."""
    def n(shape):
        return torch.randn(shape, generator=gen)

    d = cfg["vision_width"] * 32
    wt = cfg["transformer_width"]
    for name, t in model.named_parameters():
        s = t.shape
        if not name.startswith("visual."):
            continue
        if name.endswith("conv1.weight") or name.endswith("conv2.weight") or \
                name.endswith("conv3.weight") or name.endswith("downsample.0.weight"):
            v = (s[1] * s[2] * s[3]) ** -0.5 * n(s)
        elif name.endswith(".weight") and t.dim() == 1:   # BatchNorm gamma
            v = 1 + 0.1 * n(s)
        elif name.endswith(".bias") and ".bn" in name or "downsample.1.bias" in name:
            v = 0.05 * n(s)
        elif name == "visual.attnpool.positional_embedding":
            v = d ** -0.5 * n(s)
        elif name.startswith("visual.attnpool.") and name.endswith(".weight"):
            v = d ** -0.5 * n(s)
        elif name.startswith("visual.attnpool.") and name.endswith(".bias"):
            v = 0.02 * n(s)
        else:
            raise RuntimeError(f"no init rule for {name}")
        with torch.no_grad():
            t.copy_(v)
    # Text tower: make_clip's rules (its randomise covers the non-visual names).
    text_cfg = dict(cfg, vision_width=wt, vision_layers=1, vision_patch_size=1)
    vis = model.visual
    model.visual = nn.Module()
    mc.randomise(model, text_cfg, gen)
    model.visual = vis

    bns = [m for m in model.visual.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in bns:
        m.momentum = None  # cumulative average: one batch sets the batch statistics
    model.visual.train()
    with torch.no_grad():
        model.visual(mc.random_pixels(gen, 8, cfg["image_resolution"]))
    model.visual.eval()
    with torch.no_grad():
        for m in bns:
            m.running_mean += 0.1 * n(m.running_mean.shape) * m.running_var.sqrt()
            m.running_var *= torch.exp(0.1 * n(m.running_var.shape))
            m.num_batches_tracked.zero_()
            m.momentum = 0.1


def build(cfg):
    model = CLIPResNet(**cfg).eval()
    gen = torch.Generator().manual_seed(cfg["seed"])
    randomise(model, cfg, gen)
    params = dict(model.named_parameters())
    names = mc.fp16_names(model)
    with torch.no_grad():
        for nm in names:
            params[nm].copy_(params[nm].half().float())
    for prm in model.parameters():
        prm.requires_grad_(False)
    return model, names, gen


def interpolate_pos(pos, grid):
    """IP-IQA's interpolate_pos_embed: keep row 0, bicubic-resize the grid."""
    g = int(round((pos.shape[0] - 1) ** 0.5))
    body = pos[1:].reshape(1, g, g, -1).permute(0, 3, 1, 2)
    body = F.interpolate(body, size=(grid, grid), mode="bicubic", align_corners=False)
    return torch.cat([pos[:1], body.permute(0, 2, 3, 1).reshape(grid * grid, -1)], dim=0)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out-dir", default=os.path.join(os.path.dirname(here), "clipgen", "tiny-rn"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.time()
    cfg = dict(CONFIG)
    out = os.path.abspath(args.out_dir)
    os.makedirs(out, exist_ok=True)
    archive = os.path.join(out, "clip.pt")

    model, names, gen = build(cfg)
    res, ctx, vocab = cfg["image_resolution"], cfg["context_length"], cfg["vocab_size"]
    sot, eot = vocab - 2, vocab - 1  # the two largest ids, as in CLIP's vocabulary

    def ids_with_eot(positions):
        rows = np.zeros((len(positions), ctx), dtype=np.int64)
        for i, e in enumerate(positions):
            rows[i, 0] = sot
            rows[i, 1:e] = torch.randint(1, vocab - 2, (e - 1,), generator=gen).numpy()
            rows[i, e] = eot
        return torch.from_numpy(rows)

    image = mc.random_pixels(gen, 1, res)
    text = ids_with_eot([5])
    jm = torch.jit.trace_module(model, {"forward": (image, text), "encode_image": image,
                                        "encode_text": text})
    jm.save(archive)
    jm = torch.jit.load(archive)
    jm.eval()

    refs = mc.Refs(out)
    checks = OrderedDict()
    enc_img = []
    for b in (1, 3):
        px = mc.random_pixels(gen, b, res)
        with torch.no_grad():
            feat = jm.encode_image(px)
            eager = model.encode_image(px)
            fmap = model.visual.feature_map(px)
        checks[f"encode_image_b{b}_traced_vs_eager_maxabs"] = mc.max_abs(feat, eager)
        enc_img.append(OrderedDict(
            pixels=refs.add(f"pixels_b{b}", px.numpy()),
            features=refs.add(f"image_features_b{b}", feat.numpy()),
            feature_map=refs.add(f"feature_map_b{b}", fmap.numpy())))

    ids = ids_with_eot([1, 9, 76])
    with torch.no_grad():
        tfeat = jm.encode_text(ids)
        checks["encode_text_traced_vs_eager_maxabs"] = mc.max_abs(tfeat, model.encode_text(ids))
    enc_txt = OrderedDict(ids=refs.add("ids_b3", ids.numpy()), eot_index=[1, 9, 76],
                          features=refs.add("text_features_b3", tfeat.numpy()))

    # Another resolution: positional embedding resized bicubically, as IP-IQA does.
    big = RESIZED_GRID * 32
    px = mc.random_pixels(gen, 2, big)
    with torch.no_grad():
        pos = interpolate_pos(model.visual.attnpool.positional_embedding, RESIZED_GRID)
        feat = model.visual.attnpool(model.visual.feature_map(px), pos)
    resized = OrderedDict(grid=RESIZED_GRID, pixels=refs.add("pixels_resized", px.numpy()),
                          positional_embedding=refs.add("positional_embedding_resized", pos.numpy()),
                          features=refs.add("image_features_resized", feat.numpy()))

    # Gradient of sum(encode_image(px) * V) with respect to the pixels (eval mode).
    px = torch.from_numpy(np.load(os.path.join(out, "pixels_b1.npy"))).requires_grad_(True)
    feat = model.encode_image(px)
    weights = torch.randn(feat.shape, generator=gen)
    loss = (feat * weights).sum()
    loss.backward()
    grad = OrderedDict(pixels="pixels_b1", loss_weights=refs.add("grad_loss_weights", weights.numpy()),
                       loss=float(loss), grad_pixels=refs.add("grad_pixels_b1", px.grad.numpy()))

    sd = []
    for k, v in jm.state_dict().items():
        fl = v.reshape(-1)
        sd.append(OrderedDict(name=k, shape=list(v.shape), dtype=str(v.dtype).replace("torch.", ""),
                              sum=float(fl.double().sum()), first4=[x.item() for x in fl[:4]]))
    checks["fp16_tensors_exact_in_fp16"] = all(
        torch.equal(model.state_dict()[n].half().float(), model.state_dict()[n]) for n in names)
    grid = res // 32
    hyper = OrderedDict(
        embed_dim=cfg["embed_dim"], image_resolution=res, vision_layers=sum(cfg["vision_layers"]),
        vision_width=cfg["vision_width"], vision_heads=cfg["vision_width"] * 32 // 64,
        vision_patch_size=0, context_length=ctx, vocab_size=vocab,
        transformer_width=cfg["transformer_width"], transformer_heads=max(1, cfg["transformer_width"] // 64),
        transformer_layers=cfg["transformer_layers"], backbone="ModifiedResNet",
        vision_stages=list(cfg["vision_layers"]))
    ref = OrderedDict(
        config="tiny-rn", generator="testdata/gen/make_clip_rn.py", torch_version=torch.__version__,
        numpy_version=np.__version__, seed=cfg["seed"], hyper=hyper,
        attnpool=OrderedDict(dim=cfg["vision_width"] * 32, heads=cfg["vision_width"] * 32 // 64,
                             grid=grid, tokens=grid * grid + 1),
        archive=OrderedDict(file="clip.pt", bytes=os.path.getsize(archive), sha256=mc.sha256(archive),
                            float_dtype="float32", methods=["forward", "encode_image", "encode_text"]),
        fp16_tensors=names, state_dict=sd, arrays=refs.index, encode_image=enc_img,
        encode_text=enc_txt, resized=resized, grad=grad, checks=checks,
        tolerances=OrderedDict(features_rel=1e-5, feature_map_rel=1e-5, grad_rel=1e-4))
    with open(os.path.join(out, "reference.json"), "w") as f:
        json.dump(ref, f, indent=1, ensure_ascii=False)
        f.write("\n")
    bad = [k for k, v in checks.items()
           if (isinstance(v, bool) and not v) or (isinstance(v, float) and v > 1e-5)]
    if bad:
        raise RuntimeError(f"self-checks failed: {bad}: {dict(checks)}")
    nparams = sum(p.numel() for p in model.parameters())
    print(f"tiny-rn: {nparams} parameters, seed {cfg['seed']}, {time.time() - t0:.1f}s")
    for name in sorted(os.listdir(out)):
        print(f"  {os.path.getsize(os.path.join(out, name)):>10,d}  {name}")
    for k, v in checks.items():
        print(f"  check {k}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
