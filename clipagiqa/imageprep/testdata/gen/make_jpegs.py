#!/usr/bin/python3
"""Generate JPEG decode-parity fixtures for the imageprep tests.

Run from the repository root with Debian's interpreter (Pillow 9.4 linked to
libjpeg-turbo 2.1.5, numpy):
    /usr/bin/python3 clipagiqa/imageprep/testdata/gen/make_jpegs.py

Writes testdata/jpeg/*.jpg and testdata/jpeg/jpeg.json. For every file the manifest
holds what Pillow produces:
  native: np.asarray(Image.open(f))           (mode L, RGB or CMYK as Pillow opens it)
  rgb:    np.asarray(Image.open(f).convert("RGB"))
  clip:   the uint8 RGB crop of CLIP's _transform(n_px) (resize the shorter side to
          n_px with BICUBIC in the image's own mode, center crop, convert("RGB")),
          i.e. the tensor before ToTensor/Normalize
  clip_first: the same, but with convert("RGB") first (Dassl's read_image)
Byte arrays are base64 (Go's encoding/json reads them into []byte).
"""
import base64
import io
import json
import os

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "jpeg")
N_PX = 16


def b64(a):
    return base64.b64encode(np.ascontiguousarray(a).tobytes()).decode("ascii")


def pattern(w, h, seed):
    """Smooth gradients, a sine grating and noise: realistic JPEG content with edges."""
    rs = np.random.RandomState(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 255 * x / max(w - 1, 1)
    g = 255 * y / max(h - 1, 1)
    b = 127.5 + 120 * np.sin(x / 3.0 + y / 5.0)
    img = np.stack([r, g, b], axis=-1) + rs.normal(0, 12, (h, w, 3))
    img[h // 3 : h // 2, w // 4 : w // 2] = [250, 10, 30]  # a saturated block (chroma edges)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def clip_u8(im, n, convert_first):
    """CLIP _transform(n) up to the uint8 crop, in torchvision 0.14's PIL semantics."""
    if convert_first:
        im = im.convert("RGB")
    w, h = im.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = n, int(n * long / short)
    nw, nh = (new_short, new_long) if w <= h else (new_long, new_short)
    if (nw, nh) != (w, h):
        im = im.resize((nw, nh), Image.BICUBIC)
    top = int(round((nh - n) / 2.0))
    left = int(round((nw - n) / 2.0))
    im = im.crop((left, top, left + n, top + n))
    return np.asarray(im.convert("RGB"))


def record(name, data, cases, note):
    path = os.path.join(OUT, name)
    with open(path, "wb") as f:
        f.write(data)
    im = Image.open(io.BytesIO(data))
    im.load()
    cases.append(
        {
            "file": name,
            "note": note,
            "mode": im.mode,
            "width": im.size[0],
            "height": im.size[1],
            "native": b64(np.asarray(im)),
            "rgb": b64(np.asarray(im.convert("RGB"))),
            "clip": b64(clip_u8(im, N_PX, False)),
            "clip_first": b64(clip_u8(im, N_PX, True)),
        }
    )


def save(im, **kw):
    buf = io.BytesIO()
    im.save(buf, "JPEG", **kw)
    return buf.getvalue()


def main():
    os.makedirs(OUT, exist_ok=True)
    cases = []
    for (w, h, seed) in [(64, 48, 1), (37, 29, 2)]:
        rgb = Image.fromarray(pattern(w, h, seed), "RGB")
        tag = "%dx%d" % (w, h)
        for sub, sname in [(0, "444"), (1, "422"), (2, "420")]:
            record(
                "rgb_%s_%s.jpg" % (tag, sname),
                save(rgb, quality=90, subsampling=sub),
                cases,
                "baseline, subsampling %s" % sname,
            )
        record(
            "rgb_%s_420_progressive.jpg" % tag,
            save(rgb, quality=85, subsampling=2, progressive=True),
            cases,
            "progressive 4:2:0",
        )
        record(
            "rgb_%s_444_progressive_optimized.jpg" % tag,
            save(rgb, quality=95, subsampling=0, progressive=True, optimize=True),
            cases,
            "progressive 4:4:4, optimized Huffman tables",
        )
        record(
            "rgb_%s_420_q30.jpg" % tag,
            save(rgb, quality=30, subsampling=2),
            cases,
            "baseline 4:2:0 at low quality (strong ringing, clipping in color conversion)",
        )
        record("gray_%s.jpg" % tag, save(rgb.convert("L"), quality=90), cases, "grayscale (mode L)")
        cmyk = Image.fromarray(
            np.concatenate(
                [255 - pattern(w, h, seed + 10), np.asarray(rgb.convert("L"))[..., None] // 3], axis=-1
            ),
            "CMYK",
        )
        record(
            "cmyk_%s.jpg" % tag,
            save(cmyk, quality=90),
            cases,
            "CMYK with an Adobe APP14 marker (Pillow stores inverted CMYK)",
        )
    # Garbage bytes before the SOS marker: libjpeg warns "extraneous bytes before marker"
    # and Pillow decodes the image anyway.
    base = save(Image.fromarray(pattern(37, 29, 2), "RGB"), quality=90, subsampling=0)
    sos = base.index(b"\xff\xda")
    record(
        "rgb_37x29_444_extraneous.jpg",
        base[:sos] + b"\x12\x34\x56\x78\x9a" + base[sos:],
        cases,
        "5 garbage bytes before SOS (a libjpeg warning, no error)",
    )
    # A tall one, so the portrait branch of the resize is exercised through JPEG as well.
    tall = Image.fromarray(pattern(23, 51, 7), "RGB")
    record("rgb_23x51_420.jpg", save(tall, quality=90, subsampling=2), cases, "portrait 4:2:0")
    with open(os.path.join(OUT, "jpeg.json"), "w") as f:
        json.dump({"n_px": N_PX, "cases": cases}, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
