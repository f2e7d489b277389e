#!/usr/bin/python3
"""Generate mode/format and resize fixtures for the imageprep tests.

Run from the repository root with Debian's interpreter (Pillow 9.4, numpy):
    /usr/bin/python3 clipagiqa/imageprep/testdata/gen/make_modes.py

Writes testdata/modes/* (small PNG/GIF/BMP/WebP files), testdata/modes/modes.json and
testdata/resize.json.

modes.json, per file: Pillow's mode on open, the full image after convert("RGB"), and the
uint8 crop of CLIP's _transform(n_px) for n_px in N_PXS (Pillow resizes in the image's own
mode: P and 1 with NEAREST, RGBA/LA premultiplied, I in 32-bit), plus the same with
convert("RGB") done first (Dassl's read_image).

resize.json: in-memory sources (raw bytes recorded) resized with Image.resize(size, BICUBIC)
(reducing_gap None), the crop+resize that RandomResizedCrop performs, and their results.
Byte arrays are base64; mode I data is int32 little-endian.
"""
import base64
import io
import json
import os
import struct
import zlib

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
TD = os.path.join(HERE, "..")
OUT = os.path.join(TD, "modes")
N_PXS = [16, 45]


def b64(a):
    return base64.b64encode(np.ascontiguousarray(a).tobytes()).decode("ascii")


def native(im):
    if im.mode == "P":
        return np.zeros(0, np.uint8)  # P results are compared after convert("RGB")
    a = np.asarray(im)
    if im.mode == "I":
        a = a.astype("<i4")
    return a


def rgb_pattern(w, h, seed):
    rs = np.random.RandomState(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 255 * x / max(w - 1, 1)
    g = 255 * y / max(h - 1, 1)
    b = 127.5 + 120 * np.sin(x / 2.0 + y / 3.0)
    img = np.stack([r, g, b], axis=-1) + rs.normal(0, 20, (h, w, 3))
    img[h // 3 : h // 2, w // 4 : w // 2] = [250, 10, 30]
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def alpha_pattern(w, h, seed):
    rs = np.random.RandomState(seed)
    a = rs.randint(0, 256, (h, w)).astype(np.uint8)
    a[:, : w // 5] = 255
    a[: h // 4, :] = 0
    a[h // 2 : h // 2 + 3, :] = 1
    return a


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


# ---------------------------------------------------------------- hand-made PNGs


def png_chunk(typ, data):
    return struct.pack(">I", len(data)) + typ + data + struct.pack(">I", zlib.crc32(typ + data) & 0xFFFFFFFF)


def png_bytes(w, h, depth, ctype, rows, extra=b""):
    """rows: list of raw (unfiltered) scanline bytes."""
    ihdr = struct.pack(">IIBBBBB", w, h, depth, ctype, 0, 0, 0)
    raw = b"".join(b"\x00" + r for r in rows)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + extra
        + png_chunk(b"IDAT", zlib.compress(raw, 9))
        + png_chunk(b"IEND", b"")
    )


def pack_bits(vals, depth):
    out = bytearray()
    per = 8 // depth
    for i in range(0, len(vals), per):
        byte = 0
        chunk = list(vals[i : i + per]) + [0] * (per - len(vals[i : i + per]))
        for v in chunk:
            byte = (byte << depth) | int(v)
        out.append(byte)
    return bytes(out)


def handmade(w, h):
    rs = np.random.RandomState(42)
    rgb = rgb_pattern(w, h, 5)
    gray = np.asarray(Image.fromarray(rgb).convert("L"))
    files = {}
    for depth in (2, 4):
        vals = (gray.astype(np.int32) * ((1 << depth) - 1) + 127) // 255
        files["png_gray%d.png" % depth] = png_bytes(
            w, h, depth, 0, [pack_bits(vals[y], depth) for y in range(h)]
        )
    g16 = (gray.astype(np.uint32) * 3 + rs.randint(0, 3, gray.shape)).astype(">u2")  # 0..767: some > 255
    files["png_gray16.png"] = png_bytes(w, h, 16, 0, [g16[y].tobytes() for y in range(h)])
    c16 = (rgb.astype(np.uint32) * 257 + rs.randint(0, 200, rgb.shape)).clip(0, 65535).astype(">u2")
    files["png_rgb16.png"] = png_bytes(w, h, 16, 2, [c16[y].tobytes() for y in range(h)])
    a16 = (alpha_pattern(w, h, 9).astype(np.uint32) * 257).astype(">u2")
    rgba16 = np.concatenate([c16, a16[..., None]], axis=-1)
    files["png_rgba16.png"] = png_bytes(w, h, 16, 6, [rgba16[y].tobytes() for y in range(h)])
    la16 = np.stack([(gray.astype(np.uint32) * 257).astype(">u2"), a16], axis=-1)
    files["png_la16.png"] = png_bytes(w, h, 16, 4, [la16[y].tobytes() for y in range(h)])
    # RGB with a tRNS colour that actually occurs (the red block).
    trns = struct.pack(">HHH", 250, 10, 30)
    files["png_rgb_trns.png"] = png_bytes(
        w, h, 8, 2, [rgb[y].tobytes() for y in range(h)], png_chunk(b"tRNS", trns)
    )
    files["png_gray_trns.png"] = png_bytes(
        w, h, 8, 0, [gray[y].tobytes() for y in range(h)], png_chunk(b"tRNS", struct.pack(">H", int(gray[h // 2, w // 2])))
    )
    # 4-bit palette with 10 entries and a partial tRNS.
    pal = rs.randint(0, 256, (10, 3)).astype(np.uint8)
    idx = (gray.astype(np.int32) * 9 + 127) // 255
    files["png_p4.png"] = png_bytes(
        w,
        h,
        4,
        3,
        [pack_bits(idx[y], 4) for y in range(h)],
        png_chunk(b"PLTE", pal.tobytes()) + png_chunk(b"tRNS", bytes([0, 128, 255])),
    )
    # 8-bit palette whose pixels use indices past the 5-entry PLTE: Pillow's palette
    # defaults those entries to the gray ramp (i, i, i).
    pal5 = rs.randint(0, 256, (5, 3)).astype(np.uint8)
    idx8 = (gray.astype(np.int32) * 7 // 255) * 30  # 0, 30, ..., 210
    idx8[:, : w // 3] = idx8[:, : w // 3] % 5  # some valid indices too
    files["png_p_short_plte.png"] = png_bytes(
        w, h, 8, 3, [idx8[y].astype(np.uint8).tobytes() for y in range(h)], png_chunk(b"PLTE", pal5.tobytes())
    )
    return files


# ---------------------------------------------------------------- Pillow-made files


def pil_files(w, h):
    rgb = Image.fromarray(rgb_pattern(w, h, 3), "RGB")
    alpha = Image.fromarray(alpha_pattern(w, h, 4), "L")
    rgba = rgb.copy()
    rgba.putalpha(alpha)
    la = rgb.convert("L")
    la.putalpha(alpha)
    p = rgb.quantize(colors=64)
    p_trns = rgb.quantize(colors=32)
    # make palette entry of the transparent index a visible colour
    p_trns.info["transparency"] = int(np.asarray(p_trns)[h // 2, w // 2])
    bit = rgb.convert("L").point(lambda v: 255 if v > 120 else 0).convert("1")
    out = {}

    def save(name, im, fmt, **kw):
        buf = io.BytesIO()
        im.save(buf, fmt, **kw)
        out[name] = buf.getvalue()

    save("png_rgb.png", rgb, "PNG")
    save("png_rgba.png", rgba, "PNG")
    save("png_la.png", la, "PNG")
    save("png_l.png", rgb.convert("L"), "PNG")
    save("png_p.png", p, "PNG")
    save("png_p_trns.png", p_trns, "PNG", transparency=p_trns.info["transparency"])
    save("png_1bit.png", bit, "PNG")
    save("gif_p.gif", p_trns, "GIF", transparency=p_trns.info["transparency"])
    save("bmp_rgb.bmp", rgb, "BMP")
    save("bmp_p.bmp", p, "BMP")
    save("bmp_l.bmp", rgb.convert("L"), "BMP")
    save("webp_lossless_rgb.webp", rgb, "WEBP", lossless=True)
    save("webp_lossless_rgba.webp", rgba, "WEBP", lossless=True)
    save("webp_lossy_rgb.webp", rgb, "WEBP", quality=80)
    save("webp_lossy_rgba.webp", rgba, "WEBP", quality=80)
    return out


def modes_cases():
    os.makedirs(OUT, exist_ok=True)
    files = {}
    files.update(pil_files(37, 29))
    files.update(handmade(37, 29))
    # portrait variants of the modes whose resize path differs most
    for k, v in pil_files(29, 37).items():
        if k in ("png_rgba.png", "png_p.png", "png_la.png"):
            files[k.replace(".png", "_portrait.png")] = v
    cases = []
    for name in sorted(files):
        data = files[name]
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)
        im = Image.open(io.BytesIO(data))
        im.load()
        c = {
            "file": name,
            "mode": im.mode,
            "width": im.size[0],
            "height": im.size[1],
            "rgb": b64(np.asarray(im.convert("RGB"))),
            "clip": {},
            "clip_first": {},
        }
        for n in N_PXS:
            c["clip"][str(n)] = b64(clip_u8(im, n, False))
        c["clip_first"][str(N_PXS[0])] = b64(clip_u8(im, N_PXS[0], True))
        cases.append(c)
    with open(os.path.join(OUT, "modes.json"), "w") as f:
        json.dump({"cases": cases}, f, indent=1)
        f.write("\n")


# ---------------------------------------------------------------- resize cases


def rgb_unless_native(im):
    """convert("RGB") result, kept only where the conversion is more than a copy or a
    channel drop (P, I, CMYK); empty otherwise to keep the file small."""
    if im.mode not in ("P", "I", "CMYK"):
        return ""
    return b64(np.asarray(im.convert("RGB")))


def resize_cases():
    w, h = 37, 29
    rgb = Image.fromarray(rgb_pattern(w, h, 11), "RGB")
    alpha = Image.fromarray(alpha_pattern(w, h, 12), "L")
    rgba = rgb.copy()
    rgba.putalpha(alpha)
    la = rgb.convert("L")
    la.putalpha(alpha)
    rs = np.random.RandomState(13)
    i32 = Image.fromarray((np.asarray(rgb.convert("L")).astype(np.int32) * 200 + rs.randint(0, 150, (h, w))).astype(np.int32), "I")
    cmyk = Image.fromarray(np.concatenate([rgb_pattern(w, h, 14), np.asarray(alpha)[..., None] // 2], axis=-1), "CMYK")
    sources = {
        "RGB": rgb,
        "L": rgb.convert("L"),
        "RGBA": rgba,
        "LA": la,
        "I": i32,
        "CMYK": cmyk,
        "P": rgb.quantize(colors=40),
    }
    sizes = [(64, 48), (13, 11), (37, 10), (20, 29), (5, 3), (75, 59), (1, 1), (150, 5), (36, 28), (38, 30), (16, 16)]
    cases = []
    for mode, src in sources.items():
        entry = {"mode": mode, "width": w, "height": h, "source": b64(native(src)), "source_rgb": rgb_unless_native(src), "resized": [], "cropped": []}
        for sz in sizes:
            out = src.resize(sz, Image.BICUBIC)
            assert out.mode == src.mode
            entry["resized"].append({"width": sz[0], "height": sz[1], "native": b64(native(out)), "rgb": rgb_unless_native(out)})
        for box, sz in [((5, 3, 30, 25), (16, 16)), ((0, 0, 37, 29), (16, 16)), ((11, 2, 19, 27), (24, 24)), ((30, 20, 37, 29), (40, 40))]:
            out = src.crop(box).resize(sz, Image.BICUBIC)
            entry["cropped"].append(
                {"box": list(box), "width": sz[0], "height": sz[1], "native": b64(native(out)), "rgb": rgb_unless_native(out)}
            )
        cases.append(entry)
    with open(os.path.join(TD, "resize.json"), "w") as f:
        json.dump({"sources": cases}, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    modes_cases()
    resize_cases()
