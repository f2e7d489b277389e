#!/usr/bin/python3
"""Reduce the shared CLIP-AGIQA reference preprocessing fixture for the imageprep tests.

Run from the repository root with Debian's interpreter (Pillow 9.4, numpy):
    /usr/bin/python3 clipagiqa/imageprep/testdata/gen/make_ref.py [fixture_dir]
fixture_dir defaults to /work/shared/fixtures/clip-agiqa-ref.

preprocessed.npy (8x3x224x224 float32, 4.8 MB) is too big to commit, so it is stored as
the uint8 crops it was computed from (crop_K.png) plus the SHA-256 of each image's float32
bytes. The script checks that (u8/255 - mean)/std in float32 reproduces every float bit
exactly, so the crops plus the formula are the npy. The 8 source PNGs are re-saved with
maximum compression after checking that the pixels are unchanged.
"""
import hashlib
import json
import os
import sys

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "ref")
MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32).reshape(3, 1, 1)
STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32).reshape(3, 1, 1)


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else "/work/shared/fixtures/clip-agiqa-ref"
    os.makedirs(OUT, exist_ok=True)
    pre = np.load(os.path.join(src, "preprocessed.npy"))
    assert pre.dtype == np.float32 and pre.shape == (8, 3, 224, 224), (pre.dtype, pre.shape)
    meta = json.load(open(os.path.join(src, "expected.json")))
    images = []
    for k in range(8):
        name = "img_%d.png" % k
        im = Image.open(os.path.join(src, name))
        im.load()
        mode = im.mode
        dst = os.path.join(OUT, name)
        im.save(dst, optimize=True)
        back = Image.open(dst)
        assert back.mode == mode and np.array_equal(np.asarray(back), np.asarray(im)), name

        x = pre[k]
        u8 = np.round((x.astype(np.float64) * STD + MEAN) * 255.0)
        assert u8.min() >= 0 and u8.max() <= 255
        u8 = u8.astype(np.uint8)
        again = ((u8.astype(np.float32) / np.float32(255)) - MEAN) / STD
        assert again.dtype == np.float32
        assert np.array_equal(again.view(np.uint32), x.view(np.uint32)), "formula mismatch %d" % k
        crop = "crop_%d.png" % k
        Image.fromarray(np.ascontiguousarray(u8.transpose(1, 2, 0)), "RGB").save(
            os.path.join(OUT, crop), optimize=True
        )
        images.append(
            {
                "file": name,
                "crop": crop,
                "mode": mode,
                "width": im.size[0],
                "height": im.size[1],
                "sha256_f32le": hashlib.sha256(x.astype("<f4").tobytes()).hexdigest(),
                "sum": float(x.astype(np.float64).sum()),
                "first8": [float(v) for v in x.reshape(-1)[:8]],
            }
        )
    out = {
        "source": "preprocessed.npy of the clip-agiqa-ref fixture (openai/CLIP _transform(224), Pillow 9.4)",
        "size": 224,
        "images": images,
        "fixture_images_meta": meta.get("images"),
    }
    with open(os.path.join(OUT, "ref.json"), "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
