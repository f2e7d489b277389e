#!/usr/bin/python3
"""Build randomly initialised CLIP ViT models in OpenAI's release format.

The model is written here from CLIP's architecture description (ViT image
tower, causal text transformer, OpenAI's parameter names) so the archives look
like OpenAI's TorchScript releases: a traced module with `forward`,
`encode_image` and `encode_text`, the weights under OpenAI's state-dict names
and the three int64 root buffers `input_resolution`, `context_length`,
`vocab_size`.

Run from the repository root with Debian's interpreter (torch 1.13 CPU):

    /usr/bin/python3 testdata/gen/make_clip.py --config tiny-p32
    /usr/bin/python3 testdata/gen/make_clip.py --config tiny-p16
    /usr/bin/python3 testdata/gen/make_clip.py --config vitb16 --out /tmp/vitb16.pt

The tiny configs also write reference inputs/outputs to
testdata/clipgen/<config>/ (see testdata/gen/README.md).
"""

import argparse
import hashlib
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

# Hyper-parameters; heads are always width // 64, as in OpenAI's build_model.
CONFIGS = {
    "tiny-p32": dict(embed_dim=32, image_resolution=64, vision_patch_size=32,
                     vision_width=64, vision_layers=2, context_length=77,
                     vocab_size=49408, transformer_width=64, transformer_layers=2,
                     seed=20501),
    # Vision width 128 gives two heads; text stays at 64 (one head) because the
    # 49408-row token embedding dominates the archive size.
    "tiny-p16": dict(embed_dim=48, image_resolution=48, vision_patch_size=16,
                     vision_width=128, vision_layers=2, context_length=77,
                     vocab_size=49408, transformer_width=64, transformer_layers=1,
                     seed=20502),
    # OpenAI ViT-B/16 shapes, for benchmarks only (never committed).
    "vitb16": dict(embed_dim=512, image_resolution=224, vision_patch_size=16,
                   vision_width=768, vision_layers=12, context_length=77,
                   vocab_size=49408, transformer_width=512, transformer_layers=12,
                   seed=20503),
}

SOT, EOT = 49406, 49407
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# Real CLIP BPE ids (from /work/shared/clip/tokenizer_vectors.json).
TEXTS = {
    "a photo of a cat": [SOT, 320, 1125, 539, 320, 2368, EOT],
    "": [SOT, EOT],
    "Good photo.": [SOT, 886, 1125, 269, EOT],
    "X*16 terrible.": [SOT] + [343] * 16 + [9741, 269, EOT],
    "日本語のテキスト": [SOT, 39121, 44353, 34002, 252, 21575, 2429, 228, 47121,
                  32421, 486, EOT],
    "statue of a man": [SOT, 8222, 539, 320, 786, EOT],
}
# Word pieces cycled to fill a full 77-token context (EOT lands at index 76,
# as clip.tokenize(truncate=True) does).
FILL_IDS = [550, 18376, 2071, 550, 9639, 17221, 3175, 14758, 267, 3616, 3140,
            320, 1642, 2857, 13093, 2076, 5868, 26850, 835, 639, 38466, 3120,
            4262, 272, 273, 274, 3306, 268, 1002, 318, 23435, 2411, 1097, 35689]


def heads_of(width):
    return width // 64


class LayerNorm(nn.LayerNorm):
    """LayerNorm that always computes in float32 and returns the input dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.dtype
        y = F.layer_norm(x.float(), self.normalized_shape, self.weight, self.bias, self.eps)
        return y.to(t)


class QuickGELU(nn.Module):
    """x * sigmoid(1.702 x), CLIP's activation."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class Block(nn.Module):
    """Pre-LN residual block: x + attn(ln_1(x)); x + mlp(ln_2(x)). Layout [L, N, D]."""

    def __init__(self, width, mask=None):
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads_of(width))
        self.ln_1 = LayerNorm(width)
        self.mlp = nn.Sequential(OrderedDict([
            ("c_fc", nn.Linear(width, 4 * width)),
            ("gelu", QuickGELU()),
            ("c_proj", nn.Linear(4 * width, width)),
        ]))
        self.ln_2 = LayerNorm(width)
        # A plain attribute, not a buffer: OpenAI's state dicts have no mask.
        self.attn_mask = mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.attn_mask
        if m is not None:
            m = m.to(dtype=x.dtype, device=x.device)
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False, attn_mask=m)[0]
        x = x + self.mlp(self.ln_2(x))
        return x


class Transformer(nn.Module):
    """A stack of blocks under the name `resblocks`."""

    def __init__(self, width, layers, mask=None):
        super().__init__()
        self.resblocks = nn.Sequential(*[Block(width, mask) for _ in range(layers)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.resblocks(x)


class VisionTransformer(nn.Module):
    """Patchify (conv, no bias), prepend class token, add positions, ln_pre,
    transformer, ln_post on the class token, project."""

    def __init__(self, resolution, patch, width, layers, embed):
        super().__init__()
        grid = resolution // patch
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch, stride=patch, bias=False)
        self.class_embedding = nn.Parameter(torch.zeros(width))
        self.positional_embedding = nn.Parameter(torch.zeros(grid * grid + 1, width))
        self.ln_pre = LayerNorm(width)
        self.transformer = Transformer(width, layers)
        self.ln_post = LayerNorm(width)
        self.proj = nn.Parameter(torch.zeros(width, embed))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)                              # [N, w, g, g]
        x = x.reshape(x.shape[0], x.shape[1], -1)      # [N, w, g*g]
        x = x.permute(0, 2, 1)                         # [N, g*g, w]
        cls = self.class_embedding.to(x.dtype) + torch.zeros(
            x.shape[0], 1, x.shape[-1], dtype=x.dtype, device=x.device)
        x = torch.cat([cls, x], dim=1)
        x = x + self.positional_embedding.to(x.dtype)
        x = self.ln_pre(x)
        x = self.transformer(x.permute(1, 0, 2)).permute(1, 0, 2)
        x = self.ln_post(x[:, 0, :])
        return x @ self.proj


class CLIP(nn.Module):
    """CLIP ViT with OpenAI's parameter names and methods."""

    def __init__(self, embed_dim, image_resolution, vision_patch_size, vision_width,
                 vision_layers, context_length, vocab_size, transformer_width,
                 transformer_layers, **_):
        super().__init__()
        self.positional_embedding = nn.Parameter(torch.zeros(context_length, transformer_width))
        self.text_projection = nn.Parameter(torch.zeros(transformer_width, embed_dim))
        self.logit_scale = nn.Parameter(torch.zeros([]))
        self.register_buffer("input_resolution", torch.tensor(image_resolution, dtype=torch.int64))
        self.register_buffer("context_length", torch.tensor(context_length, dtype=torch.int64))
        self.register_buffer("vocab_size", torch.tensor(vocab_size, dtype=torch.int64))
        self.visual = VisionTransformer(image_resolution, vision_patch_size, vision_width,
                                        vision_layers, embed_dim)
        causal = torch.full((context_length, context_length), float("-inf")).triu_(1)
        self.transformer = Transformer(transformer_width, transformer_layers, causal)
        self.token_embedding = nn.Embedding(vocab_size, transformer_width)
        self.ln_final = LayerNorm(transformer_width)

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        return self.visual(image.to(self.visual.conv1.weight.dtype))

    def text_features_from_embeddings(self, emb: torch.Tensor, eot: torch.Tensor) -> torch.Tensor:
        """Prompt-learning path: token embeddings [N, ctx, w] and EOT indices [N]."""
        dt = self.visual.conv1.weight.dtype
        x = emb.to(dt) + self.positional_embedding.to(dt)
        x = self.transformer(x.permute(1, 0, 2)).permute(1, 0, 2)
        x = self.ln_final(x).to(dt)
        x = x[torch.arange(x.shape[0], device=x.device), eot]
        return x @ self.text_projection

    def encode_text(self, text: torch.Tensor) -> torch.Tensor:
        # EOT has the largest id, so argmax finds it.
        return self.text_features_from_embeddings(self.token_embedding(text), text.argmax(dim=-1))

    def forward(self, image: torch.Tensor, text: torch.Tensor):
        im = self.encode_image(image)
        tx = self.encode_text(text)
        if torch.jit.is_scripting():
            # TorchScript's norm needs p; tracing records OpenAI's frobenius_norm.
            im = im / im.norm(p=2.0, dim=[-1], keepdim=True)
            tx = tx / tx.norm(p=2.0, dim=[-1], keepdim=True)
        else:
            im = im / im.norm(dim=-1, keepdim=True)
            tx = tx / tx.norm(dim=-1, keepdim=True)
        logits_per_image = self.logit_scale.exp() * im @ tx.t()
        return logits_per_image, logits_per_image.t()


def fp16_names(model):
    """Names of the tensors OpenAI's convert_weights turns into fp16: conv/linear
    weights and biases, attention in-projections, text_projection, visual.proj."""
    names = []
    for mname, mod in model.named_modules():
        pre = mname + "." if mname else ""
        if isinstance(mod, (nn.Conv2d, nn.Linear)):
            names += [pre + "weight"] + ([pre + "bias"] if mod.bias is not None else [])
        if isinstance(mod, nn.MultiheadAttention):
            names += [pre + "in_proj_weight", pre + "in_proj_bias"]
        for p in ("text_projection", "proj"):
            if isinstance(getattr(mod, p, None), nn.Parameter):
                names.append(pre + p)
    have = dict(model.named_parameters())
    missing = [n for n in names if n not in have]
    if missing:
        raise RuntimeError(f"fp16 names not parameters: {missing}")
    return sorted(set(names), key=list(have).index)


def randomise(model, cfg, gen):
    """Overwrite every parameter with seeded random values, including the ones
    CLIP's init leaves constant (LayerNorm affine, biases, logit_scale)."""
    wt, wv = cfg["transformer_width"], cfg["vision_width"]
    p = cfg["vision_patch_size"]

    def n(shape):
        return torch.randn(shape, generator=gen)

    for name, t in model.named_parameters():
        w = wv if name.startswith("visual.") else wt
        layers = cfg["vision_layers"] if name.startswith("visual.") else cfg["transformer_layers"]
        proj_std = w ** -0.5 * (2 * layers) ** -0.5
        s = t.shape
        if name == "token_embedding.weight":
            v = 0.02 * n(s)
        elif name == "positional_embedding":
            v = 0.01 * n(s)
        elif name in ("visual.class_embedding", "visual.positional_embedding", "visual.proj"):
            v = wv ** -0.5 * n(s)
        elif name == "text_projection":
            v = wt ** -0.5 * n(s)
        elif name == "logit_scale":
            v = math.log(1 / 0.07) + 0.25 * n(s)
        elif name == "visual.conv1.weight":
            v = (3 * p * p) ** -0.5 * n(s)
        elif name.endswith("attn.in_proj_weight"):
            v = w ** -0.5 * n(s)
        elif name.endswith(("attn.out_proj.weight", "mlp.c_proj.weight")):
            v = proj_std * n(s)
        elif name.endswith("mlp.c_fc.weight"):
            v = (2 * w) ** -0.5 * n(s)
        elif name.endswith(("in_proj_bias", "out_proj.bias", "c_fc.bias", "c_proj.bias")):
            v = 0.02 * n(s)
        elif ".ln_" in "." + name or name.startswith("ln_"):
            if name.endswith(".weight"):
                v = 1 + 0.1 * n(s)
            elif name.endswith(".bias"):
                v = 0.05 * n(s)
            else:
                raise RuntimeError(f"no init rule for {name}")
        else:
            raise RuntimeError(f"no init rule for {name}")
        with torch.no_grad():
            t.copy_(v)


def build(cfg, seed):
    """Eager model with random weights; fp16-bound tensors pre-rounded to fp16."""
    model = CLIP(**cfg).eval()
    gen = torch.Generator().manual_seed(seed)
    randomise(model, cfg, gen)
    params = dict(model.named_parameters())
    names = fp16_names(model)
    with torch.no_grad():
        for nm in names:
            params[nm].copy_(params[nm].half().float())
    for prm in model.parameters():
        prm.requires_grad_(False)
    return model, names


def pad_ids(seqs, ctx):
    out = np.zeros((len(seqs), ctx), dtype=np.int64)
    for i, s in enumerate(seqs):
        if len(s) > ctx:
            raise ValueError(f"sequence of {len(s)} ids exceeds context {ctx}")
        out[i, :len(s)] = s
    return out


def full_context_ids(ctx):
    body = [FILL_IDS[i % len(FILL_IDS)] for i in range(ctx - 2)]
    return [SOT] + body + [EOT]


def random_pixels(gen, n, res):
    """Values distributed like CLIP-normalised images."""
    u = torch.rand((n, 3, res, res), generator=gen)
    mean = torch.tensor(CLIP_MEAN, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, dtype=torch.float32).view(1, 3, 1, 1)
    return ((u - mean) / std).float()


def trace(model, cfg, with_forward=True):
    res, ctx = cfg["image_resolution"], cfg["context_length"]
    gen = torch.Generator().manual_seed(7)
    image = random_pixels(gen, 1, res)
    text = torch.from_numpy(pad_ids([TEXTS["a photo of a cat"]], ctx))
    methods = {"encode_image": image, "encode_text": text}
    if with_forward:
        methods = {"forward": (image, text), **methods}
    return torch.jit.trace_module(model, methods)


def script(model):
    """TorchScript without running the model (for --no-trace)."""
    for fn in (CLIP.encode_image, CLIP.encode_text, CLIP.text_features_from_embeddings):
        torch.jit.export(fn)
    return torch.jit.script(model)


def to_fp16_archive(jit_module, names, path):
    """OpenAI-release layout: convert_weights' tensors stored as float16. The
    traced graph still casts its inputs to float32 (traced from fp32)."""
    params = dict(jit_module.named_parameters())
    for nm in names:
        params[nm].data = params[nm].data.half()
    jit_module.save(path)


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def hyper(cfg, model):
    g = cfg["image_resolution"] // cfg["vision_patch_size"]
    ls = float(model.logit_scale)
    return OrderedDict(
        embed_dim=cfg["embed_dim"], image_resolution=cfg["image_resolution"],
        vision_layers=cfg["vision_layers"], vision_width=cfg["vision_width"],
        vision_heads=heads_of(cfg["vision_width"]), vision_patch_size=cfg["vision_patch_size"],
        grid=g, vision_tokens=g * g + 1, context_length=cfg["context_length"],
        vocab_size=cfg["vocab_size"], transformer_width=cfg["transformer_width"],
        transformer_heads=heads_of(cfg["transformer_width"]),
        transformer_layers=cfg["transformer_layers"], backbone="ViT",
        logit_scale=ls, logit_scale_exp=math.exp(ls))


class Refs:
    """Collects .npy arrays and their index for reference.json."""

    def __init__(self, outdir):
        self.outdir = outdir
        self.index = OrderedDict()

    def add(self, name, arr):
        arr = np.ascontiguousarray(arr)
        if arr.dtype not in (np.float32, np.int64):
            raise TypeError(f"{name}: dtype {arr.dtype}")
        fname = name + ".npy"
        np.save(os.path.join(self.outdir, fname), arr)
        flat = arr.reshape(-1)
        self.index[name] = OrderedDict(
            file=fname, shape=list(arr.shape), dtype=str(arr.dtype),
            sum=float(flat.astype(np.float64).sum()),
            first8=[x.item() for x in flat[:8]])
        return name


def max_abs(a, b):
    return float((a.double() - b.double()).abs().max())


def write_reference(config, cfg, model, names, outdir, archive):
    torch.manual_seed(0)  # nothing below should draw from it; fixed anyway
    res, ctx = cfg["image_resolution"], cfg["context_length"]
    gen = torch.Generator().manual_seed(cfg["seed"] + 1000)
    refs = Refs(outdir)
    checks = OrderedDict()
    jm = torch.jit.load(archive)
    jm.eval()

    # Image tower, through the archive's own traced graph.
    enc_img = []
    for b in (1, 17):
        px = random_pixels(gen, b, res)
        with torch.no_grad():
            feat = jm.encode_image(px)
            eager = model.encode_image(px)
        checks[f"encode_image_b{b}_traced_vs_eager_maxabs"] = max_abs(feat, eager)
        enc_img.append(OrderedDict(
            pixels=refs.add(f"pixels_b{b}", px.numpy()),
            features=refs.add(f"image_features_b{b}", feat.numpy())))

    # Text tower on real CLIP ids, zero padded, EOT at 11 (b1) and 6, 1, 19, 76, 4 (b5).
    text_sets = {
        1: [TEXTS["日本語のテキスト"]],
        5: [TEXTS["a photo of a cat"], TEXTS[""], TEXTS["X*16 terrible."],
            full_context_ids(ctx), TEXTS["Good photo."]],
    }
    enc_txt = []
    for b, seqs in text_sets.items():
        ids = torch.from_numpy(pad_ids(seqs, ctx))
        with torch.no_grad():
            feat = jm.encode_text(ids)
            feat32 = jm.encode_text(ids.int())
            eager = model.encode_text(ids)
        checks[f"encode_text_b{b}_traced_vs_eager_maxabs"] = max_abs(feat, eager)
        checks[f"encode_text_b{b}_int32_vs_int64_maxabs"] = max_abs(feat, feat32)
        enc_txt.append(OrderedDict(
            ids=refs.add(f"ids_b{b}", ids.numpy()),
            eot_index=[int(i) for i in ids.argmax(dim=-1)],
            features=refs.add(f"text_features_b{b}", feat.numpy())))

    # forward(image b1, text b5) -> (logits_per_image [1,5], logits_per_text [5,1]).
    px1 = torch.from_numpy(np.load(os.path.join(outdir, "pixels_b1.npy")))
    ids5 = torch.from_numpy(np.load(os.path.join(outdir, "ids_b5.npy")))
    with torch.no_grad():
        lpi, lpt = jm(px1, ids5)
        elpi, _ = model(px1, ids5)
    checks["forward_traced_vs_eager_maxabs"] = max_abs(lpi, elpi)
    checks["forward_logits_per_text_is_transpose"] = bool(torch.equal(lpt, lpi.t()))
    fwd = OrderedDict(image="pixels_b1", text="ids_b5",
                      logits_per_image=refs.add("logits_per_image", lpi.numpy()))

    # Prompt-learning path (eager): [SOT, ctx*n, class, '.', EOT] with random ctx.
    rows = [(16, 9741), (8, 886), (4, 1878)]  # (n_ctx, class id): terrible, good, perfect
    wt = cfg["transformer_width"]
    ctx_vec = 0.02 * torch.randn((16, wt), generator=gen)
    ids = torch.from_numpy(pad_ids([[SOT] + [343] * k + [c, 269, EOT] for k, c in rows], ctx))
    with torch.no_grad():
        emb = model.token_embedding(ids).clone()
        for i, (k, _) in enumerate(rows):
            emb[i, 1:1 + k] = ctx_vec[:k]
        plain = model.token_embedding(ids)
        checks["from_embeddings_equals_encode_text_maxabs"] = max_abs(
            model.text_features_from_embeddings(plain, ids.argmax(-1)), model.encode_text(ids))
    eot = ids.argmax(dim=-1)
    emb = emb.float().requires_grad_(True)
    feat = model.text_features_from_embeddings(emb, eot)
    weights = torch.randn(feat.shape, generator=gen)
    loss = (feat * weights).sum()
    loss.backward()
    grad = emb.grad.detach()
    after = torch.zeros(grad.shape[:2], dtype=torch.bool)
    for i, e in enumerate(eot.tolist()):
        after[i, e + 1:] = True
    checks["grad_zero_after_eot"] = bool((grad[after] == 0).all())
    tfe = OrderedDict(
        embeddings=refs.add("prompt_embeddings", emb.detach().numpy()),
        eot_index=refs.add("prompt_eot_index", eot.numpy()),
        ids=refs.add("prompt_ids", ids.numpy()),
        features=refs.add("prompt_text_features", feat.detach().numpy()),
        loss_weights=refs.add("prompt_loss_weights", weights.numpy()),
        loss=float(loss),
        grad_embeddings=refs.add("prompt_embeddings_grad", grad.numpy()))

    sd = []
    for k, v in jm.state_dict().items():
        fl = v.reshape(-1)
        sd.append(OrderedDict(name=k, shape=list(v.shape), dtype=str(v.dtype).replace("torch.", ""),
                              sum=float(fl.double().sum()),
                              first4=[x.item() for x in fl[:4]]))
    fp16_roundtrip = all(torch.equal(model.state_dict()[n].half().float(), model.state_dict()[n])
                         for n in names)
    checks["fp16_tensors_exact_in_fp16"] = fp16_roundtrip

    ref = OrderedDict(
        config=config,
        generator="testdata/gen/make_clip.py",
        torch_version=torch.__version__,
        numpy_version=np.__version__,
        seed=cfg["seed"],
        hyper=hyper(cfg, model),
        archive=OrderedDict(file=os.path.basename(archive), bytes=os.path.getsize(archive),
                            sha256=sha256(archive), float_dtype="float32",
                            methods=["forward", "encode_image", "encode_text"]),
        fp16_tensors=names,
        state_dict=sd,
        arrays=refs.index,
        encode_image=enc_img,
        encode_text=enc_txt,
        forward=fwd,
        text_features_from_embeddings=tfe,
        checks=checks,
        # float64 re-runs land within 3e-6 (features, logits) and 1e-4 on
        # gradients of magnitude ~100 (LayerNorm of 0.02-scale embeddings).
        tolerances=OrderedDict(features_atol=1e-5, logits_atol=5e-5,
                               grad_atol=1e-3, loss_rtol=1e-5),
    )
    with open(os.path.join(outdir, "reference.json"), "w") as f:
        json.dump(ref, f, indent=1, ensure_ascii=False)
        f.write("\n")
    bad = [k for k, v in checks.items()
           if (isinstance(v, bool) and not v) or (isinstance(v, float) and v > 1e-5)]
    if bad:
        raise RuntimeError(f"self-checks failed: {bad}: {dict(checks)}")
    return ref


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", required=True, choices=sorted(CONFIGS))
    ap.add_argument("--out", help="archive path (vitb16: required; tiny: default "
                    "testdata/clipgen/<config>/clip.pt, reference data beside it)")
    ap.add_argument("--fp16", action="store_true",
                    help="also write <out stem>_fp16.pt with convert_weights' tensors in float16")
    ap.add_argument("--no-trace", action="store_true",
                    help="torch.jit.script the model instead of tracing (no reference data)")
    ap.add_argument("--no-forward", action="store_true",
                    help="trace only encode_image and encode_text")
    ap.add_argument("--seed", type=int, help="weight seed (default: per config)")
    args = ap.parse_args(argv)

    torch.set_num_threads(1)
    t0 = time.time()
    cfg = dict(CONFIGS[args.config])
    if args.seed is not None:
        cfg["seed"] = args.seed
    tiny = args.config.startswith("tiny")
    if args.out:
        out = os.path.abspath(args.out)
    elif tiny:
        here = os.path.dirname(os.path.abspath(__file__))
        out = os.path.join(os.path.dirname(here), "clipgen", args.config, "clip.pt")
    else:
        ap.error("--out is required for " + args.config)
    os.makedirs(os.path.dirname(out), exist_ok=True)

    model, names = build(cfg, cfg["seed"])
    t_build = time.time() - t0
    if args.no_trace:
        jm = script(model)
    else:
        jm = trace(model, cfg, with_forward=not args.no_forward)
    t_trace = time.time() - t0 - t_build
    jm.save(out)
    t_save = time.time() - t0 - t_build - t_trace

    ref = None
    if tiny and not args.no_trace:
        ref = write_reference(args.config, cfg, model, names, os.path.dirname(out), out)
    if args.fp16:
        stem, ext = os.path.splitext(out)
        to_fp16_archive(torch.jit.load(out), names, stem + "_fp16" + ext)

    nparams = sum(p.numel() for p in model.parameters())
    print(f"{args.config}: {nparams} parameters, seed {cfg['seed']}, "
          f"build {t_build:.1f}s, {'script' if args.no_trace else 'trace'} {t_trace:.1f}s, "
          f"save {t_save:.1f}s, total {time.time() - t0:.1f}s")
    files = [out] + ([os.path.splitext(out)[0] + "_fp16.pt"] if args.fp16 else [])
    if ref:
        files += [os.path.join(os.path.dirname(out), a["file"]) for a in ref["arrays"].values()]
        files.append(os.path.join(os.path.dirname(out), "reference.json"))
    for f in files:
        print(f"  {os.path.getsize(f):>11,d}  {f}")
    if ref:
        for k, v in ref["checks"].items():
            print(f"  check {k}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
