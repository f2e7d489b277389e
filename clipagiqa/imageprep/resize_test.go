package imageprep

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type resizeResult struct {
	Box    []int  `json:"box"`
	Width  int    `json:"width"`
	Height int    `json:"height"`
	Native []byte `json:"native"`
	RGB    []byte `json:"rgb"`
}

type resizeFixture struct {
	Sources []struct {
		Mode      string         `json:"mode"`
		Width     int            `json:"width"`
		Height    int            `json:"height"`
		Source    []byte         `json:"source"`
		SourceRGB []byte         `json:"source_rgb"`
		Resized   []resizeResult `json:"resized"`
		Cropped   []resizeResult `json:"cropped"`
	} `json:"sources"`
}

// imageFromFixture builds an Image from a fixture's raw bytes: mode I is int32 LE, mode
// P is given by its RGB expansion (which is how Image stores P).
func imageFromFixture(t testing.TB, mode Mode, w, h int, native, rgb []byte) *Image {
	t.Helper()
	m := &Image{W: w, H: h, Mode: mode}
	switch mode {
	case ModeI:
		m.PixI = make([]int32, w*h)
		for i := range m.PixI {
			m.PixI[i] = int32(binary.LittleEndian.Uint32(native[4*i:]))
		}
	case ModeP:
		m.Pix = rgb
	default:
		m.Pix = native
	}
	require.NoError(t, m.Validate())
	return m
}

// checkResult compares an Image with a Pillow result: native bytes (mode I as int32)
// where recorded, convert("RGB") where recorded. Tolerance 0.
func checkResult(t *testing.T, got *Image, want resizeResult, what string) {
	t.Helper()
	require.Equal(t, [2]int{want.Width, want.Height}, [2]int{got.W, got.H}, what)
	switch {
	case got.Mode == ModeI:
		ref := imageFromFixture(t, ModeI, want.Width, want.Height, want.Native, nil)
		require.Equal(t, ref.PixI, got.PixI, what)
	case got.Mode != ModeP:
		d, n := maxAbsDiffU8(got.Pix, want.Native)
		require.Equal(t, want.Native, got.Pix, "%s: max diff %d in %d bytes", what, d, n)
	}
	if len(want.RGB) > 0 {
		rgb, err := got.ToRGB()
		require.NoError(t, err)
		require.Equal(t, want.RGB, rgb.Pix, what+" RGB")
	}
}

// TestResizeParity compares Resize with Pillow 9.4's Image.resize(size, BICUBIC) for
// modes RGB, L, RGBA, LA, I, CMYK and P on a 37×29 source, up and down by odd factors,
// one axis only, to 1×1 and to extreme aspect ratios (testdata/gen/make_modes.py), and
// the crop+resize that torchvision's resized_crop performs (also through ResizedCropInto,
// mirrored and not). Tolerance 0.
func TestResizeParity(t *testing.T) {
	var fx resizeFixture
	readJSON(t, "resize.json", &fx)
	require.Len(t, fx.Sources, 7)
	for _, src := range fx.Sources {
		mode := pillowMode(t, src.Mode)
		img := imageFromFixture(t, mode, src.Width, src.Height, src.Source, src.SourceRGB)
		for _, r := range src.Resized {
			name := fmt.Sprintf("%s/%dx%d", src.Mode, r.Width, r.Height)
			t.Run(name, func(t *testing.T) {
				got, err := Resize(img, r.Width, r.Height)
				require.NoError(t, err)
				require.Equal(t, mode, got.Mode)
				checkResult(t, got, r, name)
			})
		}
		for _, r := range src.Cropped {
			name := fmt.Sprintf("%s/crop%v-%dx%d", src.Mode, r.Box, r.Width, r.Height)
			t.Run(name, func(t *testing.T) {
				x0, y0, x1, y1 := r.Box[0], r.Box[1], r.Box[2], r.Box[3]
				c, err := Crop(img, x0, y0, x1-x0, y1-y0)
				require.NoError(t, err)
				got, err := Resize(c, r.Width, r.Height)
				require.NoError(t, err)
				checkResult(t, got, r, name)
				if r.Width != r.Height {
					return
				}
				// The tensor path: no intermediate crop, optional mirror.
				opts := DefaultOptions(r.Width)
				rgb, err := got.ToRGB()
				require.NoError(t, err)
				lut := opts.lut()
				n := r.Width
				for _, flip := range []bool{false, true} {
					dst := make([]float32, opts.TensorLen())
					require.NoError(t, ResizedCropInto(dst, img, x0, y0, x1-x0, y1-y0, flip, opts))
					for y := 0; y < n; y++ {
						for x := 0; x < n; x++ {
							sx := x
							if flip {
								sx = n - 1 - x
							}
							for ch := 0; ch < 3; ch++ {
								want := lut[ch][rgb.Pix[3*(y*n+sx)+ch]]
								require.Equal(t, want, dst[ch*n*n+y*n+x], "flip=%v (%d,%d,%d)", flip, x, y, ch)
							}
						}
					}
				}
			})
		}
	}
}

// TestBicubicFilter checks the kernel against hand-computed values of Keys' cubic with
// a = -0.5: W(0)=1, W(0.5)=0.5625, W(1)=0, W(1.5)=-0.0625, W(2)=0, symmetric.
func TestBicubicFilter(t *testing.T) {
	for _, tc := range []struct{ x, want float64 }{
		{0, 1}, {0.5, 0.5625}, {-0.5, 0.5625}, {1, 0}, {1.5, -0.0625}, {-1.5, -0.0625}, {2, 0}, {3, 0},
	} {
		assert.Equal(t, tc.want, bicubicFilter(tc.x), "x=%v", tc.x)
	}
}

// TestResizedSizeAndCrop checks torchvision's size rule and half-to-even crop offsets on
// the fixture README's table (img_0..7) and edge cases.
func TestResizedSizeAndCrop(t *testing.T) {
	for _, tc := range []struct {
		w, h, n        int
		rw, rh, cx, cy int
	}{
		{96, 80, 224, 268, 224, 22, 0},
		{320, 240, 224, 298, 224, 37, 0},
		{240, 320, 224, 224, 298, 0, 37},
		{224, 224, 224, 224, 224, 0, 0},
		{241, 200, 224, 269, 224, 22, 0}, // round(22.5) = 22
		{200, 242, 224, 224, 271, 0, 24}, // round(23.5) = 24
		{150, 150, 224, 224, 224, 0, 0},
		{720, 405, 224, 398, 224, 87, 0},
		{1, 1000, 224, 224, 224000, 0, 111888},
	} {
		rw, rh := ResizedSize(tc.w, tc.h, tc.n)
		assert.Equal(t, [2]int{tc.rw, tc.rh}, [2]int{rw, rh}, "%dx%d", tc.w, tc.h)
		assert.Equal(t, [2]int{tc.cx, tc.cy}, [2]int{CenterCropOffset(rw, tc.n), CenterCropOffset(rh, tc.n)}, "%dx%d", tc.w, tc.h)
	}
}

// TestRandomResizedCropBox checks torchvision's get_params semantics: boxes inside the
// image, area fraction within scale and aspect within ratio (up to the rounding to whole
// pixels), the same boxes for the same seed, and the fallback for extreme shapes, whose
// expected boxes are computed by hand from torchvision's code.
func TestRandomResizedCropBox(t *testing.T) {
	scale, ratio := DefaultCropScale, DefaultCropRatio
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 2000; i++ {
		w, h := 50+rng.IntN(500), 50+rng.IntN(500)
		x, y, cw, ch := RandomResizedCropBox(w, h, scale, ratio, rng)
		require.True(t, x >= 0 && y >= 0 && cw > 0 && ch > 0 && x+cw <= w && y+ch <= h, "box %d,%d,%d,%d in %dx%d", x, y, cw, ch, w, h)
		area := float64(cw*ch) / float64(w*h)
		if cw == w && ch == h {
			continue // may be the fallback
		}
		// Rounding each side to an integer moves the area by at most about one row and
		// one column, and the aspect by at most 1/side on each side.
		slack := float64(cw+ch+1) / float64(w*h)
		assert.True(t, area >= scale[0]-slack && area <= scale[1]+slack, "area %v", area)
		ar := float64(cw) / float64(ch)
		assert.True(t, ar >= ratio[0]*(1-1/float64(cw))/(1+1/float64(ch)) && ar <= ratio[1]*(1+1/float64(cw))/(1-1/float64(ch)), "aspect %v", ar)
	}
	a := rand.New(rand.NewPCG(7, 7))
	b := rand.New(rand.NewPCG(7, 7))
	for i := 0; i < 50; i++ {
		x1, y1, w1, h1 := RandomResizedCropBox(640, 480, scale, ratio, a)
		x2, y2, w2, h2 := RandomResizedCropBox(640, 480, scale, ratio, b)
		require.Equal(t, [4]int{x1, y1, w1, h1}, [4]int{x2, y2, w2, h2})
	}
	// A 1000×10 strip can never fit a crop with aspect <= 4/3 and area >= 8%: the
	// fallback keeps the height and takes w = round(10 * 4/3) = 13, centred: x = 493.
	x, y, cw, ch := RandomResizedCropBox(1000, 10, scale, ratio, rng)
	assert.Equal(t, [4]int{493, 0, 13, 10}, [4]int{x, y, cw, ch})
	// A 10×1000 strip: w = 10, h = round(10 / (3/4)) = 13, y = (1000-13)//2 = 493.
	x, y, cw, ch = RandomResizedCropBox(10, 1000, scale, ratio, rng)
	assert.Equal(t, [4]int{0, 493, 10, 13}, [4]int{x, y, cw, ch})
	// A scale range above 1 forces the fallback; a square image is then kept whole.
	x, y, cw, ch = RandomResizedCropBox(30, 30, [2]float64{2, 3}, ratio, rng)
	assert.Equal(t, [4]int{0, 0, 30, 30}, [4]int{x, y, cw, ch})
}

// TestRandomTransform checks that the augmentation is deterministic under a seed, that
// its output equals ResizedCropInto with the box and flip drawn from the same stream, and
// that the flip rate is about one half (1000 draws: within 4.4 standard deviations).
func TestRandomTransform(t *testing.T) {
	img := imageFromRandom(37, 29, 3)
	opts := DefaultOptions(16)
	a, err := RandomTransform(img, opts, rand.New(rand.NewPCG(3, 4)))
	require.NoError(t, err)
	b, err := RandomTransform(img, opts, rand.New(rand.NewPCG(3, 4)))
	require.NoError(t, err)
	require.Equal(t, a, b)

	rng := rand.New(rand.NewPCG(3, 4))
	x, y, cw, ch := RandomResizedCropBox(img.W, img.H, DefaultCropScale, DefaultCropRatio, rng)
	flip := rng.Float64() < 0.5
	want := make([]float32, opts.TensorLen())
	require.NoError(t, ResizedCropInto(want, img, x, y, cw, ch, flip, opts))
	require.Equal(t, want, a)

	flips := 0
	rng = rand.New(rand.NewPCG(5, 6))
	for i := 0; i < 1000; i++ {
		RandomResizedCropBox(img.W, img.H, DefaultCropScale, DefaultCropRatio, rng)
		if rng.Float64() < 0.5 {
			flips++
		}
	}
	assert.InDelta(t, 500, flips, 70)

	_, err = RandomTransform(img, opts, nil)
	require.ErrorIs(t, err, ErrOptions)
}

// imageFromRandom makes a deterministic noise image.
func imageFromRandom(w, h int, seed uint64) *Image {
	rng := rand.New(rand.NewPCG(seed, seed))
	m := newImage(ModeRGB, w, h)
	for i := range m.Pix {
		m.Pix[i] = uint8(rng.IntN(256))
	}
	return m
}

// TestConvertFirstOnlyAffectsNonRGB: for an RGB image ConvertFirst changes nothing; for
// an RGBA image with transparent pixels the two orders differ (premultiplied resize vs
// plain), as they do in Pillow.
func TestConvertFirstOnlyAffectsNonRGB(t *testing.T) {
	img := imageFromRandom(37, 29, 9)
	opts := DefaultOptions(16)
	first := opts
	first.ConvertFirst = true
	a, err := CenterTransform(img, opts)
	require.NoError(t, err)
	b, err := CenterTransform(img, first)
	require.NoError(t, err)
	require.Equal(t, a, b)

	rgba := newImage(ModeRGBA, 37, 29)
	for i := 0; i < 37*29; i++ {
		copy(rgba.Pix[4*i:], img.Pix[3*i:3*i+3])
		rgba.Pix[4*i+3] = uint8(i * 7)
	}
	a, err = CenterTransform(rgba, opts)
	require.NoError(t, err)
	b, err = CenterTransform(rgba, first)
	require.NoError(t, err)
	require.NotEqual(t, a, b)
}

// TestOptionErrors checks argument validation.
func TestOptionErrors(t *testing.T) {
	img := imageFromRandom(8, 8, 1)
	_, err := CenterTransform(img, Options{Size: 0, Std: CLIPStd})
	require.ErrorIs(t, err, ErrOptions)
	_, err = CenterTransform(img, Options{Size: 4})
	require.ErrorIs(t, err, ErrOptions, "zero std")
	err = CenterTransformInto(make([]float32, 5), img, DefaultOptions(4))
	require.Error(t, err)
	_, err = CenterTransform(&Image{W: 2, H: 2, Mode: ModeRGB, Pix: make([]uint8, 5)}, DefaultOptions(4))
	require.ErrorIs(t, err, ErrBadImage)
	_, err = CenterTransform(nil, DefaultOptions(4))
	require.ErrorIs(t, err, ErrBadImage)
	_, err = Resize(img, 0, 3)
	require.Error(t, err)
	_, err = Crop(img, 5, 5, 4, 4)
	require.Error(t, err)
	err = ResizedCropInto(make([]float32, 3*16), img, 0, 0, 9, 8, false, DefaultOptions(4))
	require.Error(t, err)
}
