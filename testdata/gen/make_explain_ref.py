#!/usr/bin/python3
"""Reference attention weights for `clipagiqa explain` (testdata/explain-ref/).

Run from the repository root with Debian's interpreter (torch 1.13 CPU):

    /usr/bin/python3 testdata/gen/make_explain_ref.py

Independent of our Go code: the networks run through the fixtures' traced
TorchScript archives (their own submodules), the attention weights through
PyTorch's F.multi_head_attention_forward where the original model uses it,
and through IP-IQA's cross-attention formula (q·kᵀ, then / sqrt(head dim))
where it does not. Each step is self-checked against the fixture's recorded
outputs before anything is written.

IP-IQA (testdata/ipiqa-ref: tiny_clip_rn_fp16.pt + init_new_params.pth, the
fixture's initial model, eval mode, the 8 resized 512x512 inputs and prompts):
  ipiqa_visual_attn.npy [8, 2, 257]  CLIP attnpool, mean-token query
  ipiqa_text_attn.npy   [8, 2, 257]  txt_attnpool, text-feature query
CLIP ViT (testdata/clip-agiqa-ref: tiny_clip_vit.pt, preprocessed.npy):
  vit_cls_attn.npy      [8, 3, 50]   last block, class-token query
Token 0 is the mean (RN) or class (ViT) token, then the grid row-major.
"""

import json
import math
import os

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

torch.set_num_threads(1)
torch.manual_seed(0)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
IPIQA = os.path.join(ROOT, "testdata", "ipiqa-ref")
AGIQA = os.path.join(ROOT, "testdata", "clip-agiqa-ref")
OUT = os.path.join(ROOT, "testdata", "explain-ref")
MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073], dtype=torch.float32)
STD = torch.tensor([0.26862954, 0.26130258, 0.27577711], dtype=torch.float32)


def first(x):
    """Traced LayerNorms return (output, input); take the output."""
    return x[0] if isinstance(x, tuple) else x


def summary_check(name, got, want, tol):
    err = float(np.max(np.abs(np.asarray(got, dtype=np.float64) - np.asarray(want, dtype=np.float64))))
    assert err <= tol, f"{name}: max abs err {err} > {tol}"
    return err


def ipiqa_refs(checks):
    exp = json.load(open(os.path.join(IPIQA, "expected.json")))
    m = torch.jit.load(os.path.join(IPIQA, "tiny_clip_rn_fp16.pt"), map_location="cpu").float().eval()
    init = torch.load(os.path.join(IPIQA, "init_new_params.pth"), map_location="cpu")
    px = []
    for k in range(8):
        u8 = np.asarray(Image.open(os.path.join(IPIQA, "resized", f"img_{k}_512.png")).convert("RGB"))
        t = torch.from_numpy(u8.copy()).permute(2, 0, 1).to(torch.float32) / 255
        px.append((t - MEAN[:, None, None]) / STD[:, None, None])
    px = torch.stack(px)
    ids = torch.tensor([p["tokens_77"] for p in exp["prompts"]], dtype=torch.int64)
    v = m.visual
    with torch.no_grad():
        x = px
        for a, b, c in ((v.conv1, v.bn1, v.relu1), (v.conv2, v.bn2, v.relu2), (v.conv3, v.bn3, v.relu3)):
            x = c(b(a(x)))
        x = v.avgpool(x)
        fmap = v.layer4(v.layer3(v.layer2(v.layer1(x))))  # [8, D, 16, 16]
        text = m.encode_text(ids)  # [8, E]
    checks["ipiqa_text_features_max_abs_err"] = summary_check(
        "text_features", text.numpy(), exp["eval"]["text_features"], 1e-5)
    for i, s in enumerate(exp["eval"]["feature_map"]):
        assert abs(float(fmap[i].sum()) - s["sum"]) <= 1e-3 * max(1, abs(s["sum"])), f"feature map {i} sum"

    n, d = fmap.shape[0], fmap.shape[1]
    tokens = fmap.reshape(n, d, -1).permute(2, 0, 1)  # [HW, N, D]
    tokens = torch.cat([tokens.mean(dim=0, keepdim=True), tokens], 0)  # [L, N, D]

    # CLIP's AttentionPool2d: the mean token queries all tokens.
    ap = v.attnpool
    heads = exp["tiny_clip"]["attnpool"]["num_heads"]
    x = tokens + init["attnpool.positional_embedding"][:, None, :]
    with torch.no_grad():
        pooled, w = F.multi_head_attention_forward(
            query=x[:1], key=x, value=x, embed_dim_to_check=d, num_heads=heads,
            q_proj_weight=ap.q_proj.weight, k_proj_weight=ap.k_proj.weight, v_proj_weight=ap.v_proj.weight,
            in_proj_weight=None, in_proj_bias=torch.cat([ap.q_proj.bias, ap.k_proj.bias, ap.v_proj.bias]),
            bias_k=None, bias_v=None, add_zero_attn=False, dropout_p=0, out_proj_weight=ap.c_proj.weight,
            out_proj_bias=ap.c_proj.bias, use_separate_proj_weight=True, training=False,
            need_weights=True, average_attn_weights=False)
    checks["ipiqa_global_visual_max_abs_err"] = summary_check(
        "global_visual", pooled[0].numpy(), exp["eval"]["global_visual"], 1e-4)
    visual = w[:, :, 0, :]  # [N, H, L]

    # IP-IQA's MultiHeadCrossAttention: the text feature queries all tokens.
    p = "txt_attnpool."
    x = (tokens + init[p + "positional_embedding"][:, None, :]).permute(1, 0, 2)  # [N, L, D]
    lin = lambda name, t: F.linear(t, init[p + "cross_attn." + name + ".weight"], init[p + "cross_attn." + name + ".bias"])
    with torch.no_grad():
        hd = d // heads
        q = lin("q_proj", text[:, None, :]).reshape(n, 1, heads, hd).transpose(1, 2)
        k = lin("k_proj", x).reshape(n, -1, heads, hd).transpose(1, 2)
        vv = lin("v_proj", x).reshape(n, -1, heads, hd).transpose(1, 2)
        tw = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(hd), dim=-1)  # [N, H, 1, L]
        ctx = (tw @ vv).transpose(1, 2).reshape(n, d)
        gtxt = lin("out_proj", ctx)
    checks["ipiqa_global_txt_max_abs_err"] = summary_check(
        "global_txt", gtxt.numpy(), exp["eval"]["global_txt"], 1e-4)
    return visual.contiguous(), tw[:, :, 0, :].contiguous()


def vit_refs(checks):
    m = torch.jit.load(os.path.join(AGIQA, "tiny_clip_vit.pt"), map_location="cpu").eval()
    px = torch.from_numpy(np.load(os.path.join(AGIQA, "preprocessed.npy")))
    v = m.visual
    blocks = [getattr(v.transformer.resblocks, str(i)) for i in range(len(list(v.transformer.resblocks.children())))]
    with torch.no_grad():
        x = v.conv1(px)
        n, w = x.shape[0], x.shape[1]
        x = x.reshape(n, w, -1).permute(0, 2, 1)
        x = torch.cat([v.class_embedding.expand(n, 1, w), x], 1) + v.positional_embedding
        x = first(v.ln_pre(x)).permute(1, 0, 2)  # [L, N, W]
        for b in blocks[:-1]:
            x = b(x)
        last = blocks[-1]
        h = first(last.ln_1(x))
        heads = w // 64
        _, attn = F.multi_head_attention_forward(
            h, h, h, w, heads, last.attn.in_proj_weight, last.attn.in_proj_bias, None, None, False, 0.0,
            last.attn.out_proj.weight, last.attn.out_proj.bias, training=False,
            need_weights=True, average_attn_weights=False)  # [N, H, L, L]
        feats = first(v.ln_post(last(x).permute(1, 0, 2)[:, 0, :])) @ v.proj
        want = m.encode_image(px)
    checks["vit_features_vs_traced_encode_image_max_abs_err"] = summary_check(
        "vit features", feats.numpy(), want.numpy(), 1e-5)
    return attn[:, :, 0, :].contiguous()


def main():
    os.makedirs(OUT, exist_ok=True)
    checks = {}
    visual, text = ipiqa_refs(checks)
    cls = vit_refs(checks)
    arrays = {"ipiqa_visual_attn": visual, "ipiqa_text_attn": text, "vit_cls_attn": cls}
    index = {"generator": "testdata/gen/make_explain_ref.py", "torch_version": torch.__version__,
             "checks": checks, "tolerance_abs": 1e-5, "arrays": {}}
    for name, a in arrays.items():
        a = a.numpy().astype("<f4")
        rows = a.sum(-1)
        assert np.allclose(rows, 1, atol=1e-5), name
        np.save(os.path.join(OUT, name + ".npy"), a)
        index["arrays"][name] = {"file": name + ".npy", "shape": list(a.shape), "sum": float(a.sum()),
                                 "max": float(a.max())}
    with open(os.path.join(OUT, "reference.json"), "w") as f:
        json.dump(index, f, indent=1, sort_keys=True)
        f.write("\n")
    print(json.dumps(checks, indent=1))


if __name__ == "__main__":
    main()
