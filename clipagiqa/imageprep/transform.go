package imageprep

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
)

// CLIP's normalisation constants (openai/CLIP _transform).
var (
	CLIPMean = [3]float32{0.48145466, 0.4578275, 0.40821073}
	CLIPStd  = [3]float32{0.26862954, 0.26130258, 0.27577711}
)

// DefaultMaxPixels is Pillow's Image.MAX_IMAGE_PIXELS (above it Pillow warns of a
// decompression bomb; it refuses at twice that). Decoding refuses more pixels than this
// unless told otherwise.
const DefaultMaxPixels int64 = 89478485

// RandomResizedCrop defaults of torchvision (and Dassl's INPUT.RRCROP_SCALE).
var (
	DefaultCropScale = [2]float64{0.08, 1}
	DefaultCropRatio = [2]float64{3.0 / 4.0, 4.0 / 3.0}
)

// Options controls decoding limits and the tensor transforms.
type Options struct {
	// Size is CLIP's n_px: the output is 3×Size×Size.
	Size int
	// MaxPixels is the largest W*H a file may declare; <= 0 means DefaultMaxPixels.
	MaxPixels int64
	// Mean and Std normalise each channel: (x/255 - Mean) / Std in float32.
	Mean, Std [3]float32
	// ConvertFirst converts to RGB right after decoding, as Dassl's read_image
	// (Image.open(path).convert("RGB")) does, instead of after the crop as CLIP's
	// _transform does. It only matters for non-RGB images (L, P, RGBA, CMYK, ...).
	ConvertFirst bool
	// CropScale and CropRatio are RandomResizedCrop's scale and ratio ranges; zero
	// values mean DefaultCropScale and DefaultCropRatio.
	CropScale, CropRatio [2]float64
}

// DefaultOptions returns CLIP's preprocessing for n_px = size.
func DefaultOptions(size int) Options {
	return Options{Size: size, MaxPixels: DefaultMaxPixels, Mean: CLIPMean, Std: CLIPStd}
}

// ErrOptions reports unusable Options.
var ErrOptions = errors.New("imageprep: invalid options")

func (o *Options) check() error {
	if o.Size <= 0 || o.Size > 1<<14 {
		return fmt.Errorf("%w: size %d", ErrOptions, o.Size)
	}
	for c, s := range o.Std {
		if s == 0 || math.IsNaN(float64(s)) {
			return fmt.Errorf("%w: std[%d] = %v", ErrOptions, c, s)
		}
	}
	return nil
}

func (o *Options) maxPixels() int64 {
	if o.MaxPixels <= 0 {
		return DefaultMaxPixels
	}
	return o.MaxPixels
}

func (o *Options) cropRanges() (scale, ratio [2]float64) {
	scale, ratio = o.CropScale, o.CropRatio
	if scale == [2]float64{} {
		scale = DefaultCropScale
	}
	if ratio == [2]float64{} {
		ratio = DefaultCropRatio
	}
	return scale, ratio
}

// TensorLen is the number of float32 values one transformed image takes (3*Size*Size).
func (o Options) TensorLen() int { return 3 * o.Size * o.Size }

// lut maps a byte to its normalised value per channel: ToTensor's float32(v)/255 (a
// float32 division, not a multiplication by 1/255) then (x - mean) / std in float32.
func (o *Options) lut() *[3][256]float32 {
	var t [3][256]float32
	for c := 0; c < 3; c++ {
		for v := 0; v < 256; v++ {
			x := float32(v) / float32(255)
			t[c][v] = (x - o.Mean[c]) / o.Std[c]
		}
	}
	return &t
}

// ResizedSize is torchvision's Resize(n) output size for a w×h image: the shorter side
// becomes n, the longer int(n*long/short) (truncated).
func ResizedSize(w, h, n int) (int, int) {
	if w <= h {
		return n, int(float64(n) * float64(h) / float64(w))
	}
	return int(float64(n) * float64(w) / float64(h)), n
}

// CenterCropOffset is torchvision's CenterCrop offset int(round((size - n) / 2.0)), with
// Python's round-half-to-even.
func CenterCropOffset(size, n int) int {
	return int(math.RoundToEven(float64(size-n) / 2.0))
}

// Resize returns m resized to w×h like Pillow 9.4's m.resize((w, h), Image.BICUBIC):
// separable fixed-point antialiased bicubic for L/RGB/CMYK, premultiplied for RGBA/LA,
// NEAREST for P and 1, 32-bit for I. The mode is kept.
func Resize(m *Image, w, h int) (*Image, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	if w <= 0 || h <= 0 {
		return nil, fmt.Errorf("imageprep: resize to %dx%d", w, h)
	}
	s := scratchPool.Get().(*scratch)
	defer scratchPool.Put(s)
	pix, pixI := s.resize(m, window{sw: m.W, sh: m.H, dw: w, dh: h, ow: w, oh: h})
	out := &Image{W: w, H: h, Mode: m.Mode}
	if m.Mode == ModeI {
		out.PixI = append([]int32(nil), pixI...)
	} else {
		out.Pix = append([]uint8(nil), pix...)
	}
	return out, nil
}

// CenterTransform is CLIP's test-time _transform(opts.Size): resize the shorter side to
// Size (bicubic, in the image's own mode), center crop Size×Size, convert("RGB"),
// ToTensor, Normalize. The result is CHW float32.
func CenterTransform(m *Image, opts Options) ([]float32, error) {
	if err := opts.check(); err != nil {
		return nil, err
	}
	dst := make([]float32, opts.TensorLen())
	if err := CenterTransformInto(dst, m, opts); err != nil {
		return nil, err
	}
	return dst, nil
}

// CenterTransformInto is CenterTransform writing into dst (length 3*Size*Size).
func CenterTransformInto(dst []float32, m *Image, opts Options) error {
	m, err := prepare(dst, m, &opts)
	if err != nil {
		return err
	}
	n := opts.Size
	rw, rh := ResizedSize(m.W, m.H, n)
	w := window{sw: m.W, sh: m.H, dw: rw, dh: rh, ox: CenterCropOffset(rw, n), oy: CenterCropOffset(rh, n), ow: n, oh: n}
	s := scratchPool.Get().(*scratch)
	defer scratchPool.Put(s)
	pix, pixI := s.resize(m, w)
	writeTensor(dst, pix, pixI, m.Mode, n, false, opts.lut())
	return nil
}

// prepare checks the arguments and applies ConvertFirst.
func prepare(dst []float32, m *Image, opts *Options) (*Image, error) {
	if err := opts.check(); err != nil {
		return nil, err
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	if len(dst) != opts.TensorLen() {
		return nil, fmt.Errorf("imageprep: output has %d values, want %d", len(dst), opts.TensorLen())
	}
	if opts.ConvertFirst && m.Mode != ModeRGB {
		return m.ToRGB()
	}
	return m, nil
}

// RandomResizedCropBox draws torchvision 0.14's RandomResizedCrop.get_params for a w×h
// image: up to 10 tries of an area fraction uniform in scale and a log-uniform aspect
// ratio in ratio, rounding half to even like Python; then the fallback, a centred crop of
// the whole image clamped to the ratio range. It returns the box's left, top, width and
// height.
func RandomResizedCropBox(w, h int, scale, ratio [2]float64, rng *rand.Rand) (left, top, cw, ch int) {
	area := float64(w) * float64(h)
	lr0, lr1 := math.Log(ratio[0]), math.Log(ratio[1])
	for range 10 {
		target := area * (scale[0] + (scale[1]-scale[0])*rng.Float64())
		aspect := math.Exp(lr0 + (lr1-lr0)*rng.Float64())
		cw = int(math.RoundToEven(math.Sqrt(target * aspect)))
		ch = int(math.RoundToEven(math.Sqrt(target / aspect)))
		if cw > 0 && cw <= w && ch > 0 && ch <= h {
			top = rng.IntN(h - ch + 1)
			left = rng.IntN(w - cw + 1)
			return left, top, cw, ch
		}
	}
	inRatio := float64(w) / float64(h)
	switch {
	case inRatio < min(ratio[0], ratio[1]):
		cw = w
		ch = int(math.RoundToEven(float64(cw) / min(ratio[0], ratio[1])))
	case inRatio > max(ratio[0], ratio[1]):
		ch = h
		cw = int(math.RoundToEven(float64(ch) * max(ratio[0], ratio[1])))
	default:
		cw, ch = w, h
	}
	return (w - cw) / 2, (h - ch) / 2, cw, ch
}

// RandomTransform is the training augmentation: RandomResizedCrop(Size, CropScale,
// CropRatio, BICUBIC), RandomHorizontalFlip(0.5), ToTensor, Normalize, with all random
// draws from rng (deterministic for a seeded rng).
func RandomTransform(m *Image, opts Options, rng *rand.Rand) ([]float32, error) {
	if err := opts.check(); err != nil {
		return nil, err
	}
	dst := make([]float32, opts.TensorLen())
	if err := RandomTransformInto(dst, m, opts, rng); err != nil {
		return nil, err
	}
	return dst, nil
}

// RandomTransformInto is RandomTransform writing into dst (length 3*Size*Size).
func RandomTransformInto(dst []float32, m *Image, opts Options, rng *rand.Rand) error {
	if rng == nil {
		return fmt.Errorf("%w: nil random source", ErrOptions)
	}
	m, err := prepare(dst, m, &opts)
	if err != nil {
		return err
	}
	scale, ratio := opts.cropRanges()
	left, top, cw, ch := RandomResizedCropBox(m.W, m.H, scale, ratio, rng)
	flip := rng.Float64() < 0.5
	return resizedCropInto(dst, m, left, top, cw, ch, flip, &opts)
}

// ResizedCropInto crops the cw×ch box at (left, top), resizes it to Size×Size with
// Pillow's bicubic (torchvision's resized_crop), optionally mirrors it horizontally,
// and writes the normalised CHW tensor to dst. RandomTransformInto is this with a random
// box and flip.
func ResizedCropInto(dst []float32, m *Image, left, top, cw, ch int, flip bool, opts Options) error {
	m, err := prepare(dst, m, &opts)
	if err != nil {
		return err
	}
	return resizedCropInto(dst, m, left, top, cw, ch, flip, &opts)
}

func resizedCropInto(dst []float32, m *Image, left, top, cw, ch int, flip bool, opts *Options) error {
	if left < 0 || top < 0 || cw <= 0 || ch <= 0 || left+cw > m.W || top+ch > m.H {
		return fmt.Errorf("imageprep: crop box (%d,%d,%d,%d) outside %dx%d image", left, top, left+cw, top+ch, m.W, m.H)
	}
	n := opts.Size
	s := scratchPool.Get().(*scratch)
	defer scratchPool.Put(s)
	pix, pixI := s.resize(m, window{sx: left, sy: top, sw: cw, sh: ch, dw: n, dh: n, ow: n, oh: n})
	writeTensor(dst, pix, pixI, m.Mode, n, flip, opts.lut())
	return nil
}

// writeTensor converts an n×n window in mode to RGB (Pillow's convert) and writes the
// normalised CHW tensor, mirrored horizontally if flip.
func writeTensor(dst []float32, pix []uint8, pixI []int32, mode Mode, n int, flip bool, lut *[3][256]float32) {
	plane := n * n
	r, g, b := dst[:plane], dst[plane:2*plane], dst[2*plane:3*plane]
	c := mode.Channels()
	for y := 0; y < n; y++ {
		for x := 0; x < n; x++ {
			o := y*n + x
			if flip {
				o = y*n + n - 1 - x
			}
			i := y*n + x
			var vr, vg, vb uint8
			switch mode {
			case ModeRGB, ModeP, ModeRGBA:
				p := pix[i*c : i*c+3]
				vr, vg, vb = p[0], p[1], p[2]
			case ModeL, Mode1, ModeLA:
				v := pix[i*c]
				vr, vg, vb = v, v, v
			case ModeCMYK:
				p := pix[4*i : 4*i+4]
				vr, vg, vb = cmykToRGB(p[0], p[1], p[2], p[3])
			case ModeI:
				v := clip8(pixI[i])
				vr, vg, vb = v, v, v
			}
			r[o] = lut[0][vr]
			g[o] = lut[1][vg]
			b[o] = lut[2][vb]
		}
	}
}

// Batch runs CenterTransform on every image and returns one N×3×Size×Size (NCHW)
// tensor, using up to GOMAXPROCS goroutines.
func Batch(imgs []*Image, opts Options) ([]float32, error) {
	if err := opts.check(); err != nil {
		return nil, err
	}
	per := opts.TensorLen()
	out := make([]float32, len(imgs)*per)
	err := parallel(len(imgs), func(i int) error {
		if err := CenterTransformInto(out[i*per:(i+1)*per], imgs[i], opts); err != nil {
			return fmt.Errorf("imageprep: batch image %d: %w", i, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// parallel calls f(0..n-1) on up to GOMAXPROCS goroutines and returns the error of the
// lowest index that failed.
func parallel(n int, f func(int) error) error {
	workers := min(runtime.GOMAXPROCS(0), n)
	errs := make([]error, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				errs[i] = f(i)
			}
		}()
	}
	wg.Wait()
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}
