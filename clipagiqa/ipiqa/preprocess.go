package ipiqa

import (
	"fmt"

	"github.com/clipagiqa/clipagiqa/clipagiqa/imageprep"
)

// PreprocessOptions are the official image_eval_processor's settings for
// side size: convert("RGB") first, CLIP's mean and std.
func PreprocessOptions(size int) imageprep.Options {
	o := imageprep.DefaultOptions(size)
	o.ConvertFirst = true
	return o
}

// Preprocess is the official data path for one image: convert("RGB"),
// transforms.Resize((S, S), BICUBIC) — the whole image squashed to a
// square (no aspect ratio, no crop), as Pillow's resize — then ToTensor and
// Normalize. The result is CHW float32, S = opts.Size.
func Preprocess(img *imageprep.Image, opts imageprep.Options) ([]float32, error) {
	if img == nil {
		return nil, fmt.Errorf("ipiqa: preprocess: no image")
	}
	dst := make([]float32, opts.TensorLen())
	if err := imageprep.ResizedCropInto(dst, img, 0, 0, img.W, img.H, false, opts); err != nil {
		return nil, fmt.Errorf("ipiqa: preprocess: %w", err)
	}
	return dst, nil
}

// PreprocessFile decodes path and runs Preprocess.
func PreprocessFile(path string, opts imageprep.Options) ([]float32, error) {
	img, err := imageprep.DecodeFile(path, opts.MaxPixels)
	if err != nil {
		return nil, fmt.Errorf("ipiqa: %w", err)
	}
	out, err := Preprocess(img, opts)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return out, nil
}
