// Package imageprep turns image files into CLIP input tensors that are bit-identical to
// what openai/CLIP's _transform(n_px) computes with Pillow 9.4 and torchvision 0.14 (PIL
// code path): Image.open, Resize(n_px, BICUBIC) of the shorter side, CenterCrop(n_px),
// convert("RGB"), ToTensor, Normalize. It also provides the training augmentation
// RandomResizedCrop(n_px, scale=(0.08, 1), ratio=(3/4, 4/3), BICUBIC) followed by a
// horizontal flip with probability 0.5, drawn from a caller-supplied *rand.Rand.
//
// Decoding matches Pillow's pixels: JPEG goes through libjpeg-turbo's TurboJPEG API (the
// library Pillow links, with the same default ISLOW DCT and fancy upsampling); PNG, GIF,
// BMP and lossless WebP use Go's decoders, whose output is exact; lossy WebP is decoded
// by golang.org/x/image/webp and converted from YCbCr with libwebp's fancy upsampler and
// fixed-point colour conversion. The file's pixel count is checked against a limit from
// its header, before any pixel memory is allocated.
//
// Pillow resizes an image in the mode it was opened in, and the mode changes the result:
// P and 1 images are resized with NEAREST, RGBA and LA premultiply alpha around the
// resize, 16-bit grayscale PNGs ("I") are resized in 32-bit integers and clipped to 0..255
// only by convert("RGB"), CMYK JPEGs are resized as CMYK. Image.Mode records the mode so
// the transforms do the same. Options.ConvertFirst instead converts to RGB right after
// decoding, as Dassl's read_image does.
//
// Known differences from Pillow (all outside the common RGB/gray JPEG and PNG cases):
//   - Only JPEG, PNG, GIF (first frame), BMP and still WebP are read; TIFF and the other
//     Pillow formats, animated WebP and the BMP variants x/image/bmp lacks are errors.
//   - Fully opaque RGBA/LA files are reported as RGB/L and 16-bit gray+alpha PNGs as LA
//     (Pillow: RGBA); the tensors are identical.
//   - A PNG whose IDAT CRC is wrong is an error (Pillow does not check it); a missing
//     IEND is accepted as in Pillow.
//   - GIF and BMP pixels whose palette index lies past the palette are errors (Pillow
//     shows them as gray (i, i, i), which this package does for PNG).
//   - A JPEG counts as truncated when no EOI marker follows its first scan, which is
//     when Pillow reports "image file is truncated"; libjpeg warnings about corrupt but
//     complete data are ignored, as in Pillow.
//
// Everything is pure Go except the JPEG decoder (cgo, -lturbojpeg).
package imageprep
