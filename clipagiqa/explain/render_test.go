package explain

import (
	"bytes"
	"image"
	"image/color"
	"image/png"
	"math"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/clipagiqa/clipagiqa/clipagiqa/imageprep"
	"github.com/clipagiqa/clipagiqa/internal/ipiqaref"
	"github.com/clipagiqa/clipagiqa/internal/plot"
	"github.com/clipagiqa/clipagiqa/torch"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Upsample is PyTorch's bilinear F.interpolate (align_corners=False), here
// through our libtorch binding, checked against PyTorch in torch/.
func TestUpsampleMatchesTorchBilinear(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, c := range []struct{ g, size int }{{7, 224}, {16, 512}, {3, 10}, {4, 4}, {14, 96}, {1, 5}} {
		grid := make([]float32, c.g*c.g)
		for i := range grid {
			grid[i] = rng.Float32()
		}
		got, err := Upsample(grid, c.g, c.size)
		require.NoError(t, err)
		s := torch.NewScope()
		up := s.Interpolate(s.FromFloat32(grid, 1, 1, int64(c.g), int64(c.g)), torch.Pair{int64(c.size), int64(c.size)}, torch.Bilinear, false)
		require.NoError(t, s.Err())
		want, err := up.Float32s()
		require.NoError(t, err)
		s.Close()
		worst := 0.0
		for i := range want {
			worst = math.Max(worst, math.Abs(float64(got[i]-want[i])))
		}
		t.Logf("%d→%d: max abs err %.3g (tolerance 1e-6)", c.g, c.size, worst)
		assert.LessOrEqual(t, worst, 1e-6, "%d→%d", c.g, c.size)
	}
	_, err := Upsample(make([]float32, 5), 2, 8)
	assert.ErrorContains(t, err, "5 values as a 2×2 grid")
}

// InputImage inverts the normalisation exactly: the fixture's uint8 model
// input comes back from its float tensor bit for bit.
func TestInputImageInvertsNormalisation(t *testing.T) {
	px, err := ipiqaref.Pixels(224)
	require.NoError(t, err)
	img, err := InputImage(px[:3*224*224], 224, imageprep.CLIPMean, imageprep.CLIPStd)
	require.NoError(t, err)
	f, err := os.Open(ipiqaref.Path("resized/img_0_224.png"))
	require.NoError(t, err)
	defer f.Close()
	want, err := png.Decode(f)
	require.NoError(t, err)
	for y := range 224 {
		for x := range 224 {
			r, g, b, _ := want.At(x, y).RGBA()
			c := img.RGBAAt(x, y)
			if c.R != uint8(r>>8) || c.G != uint8(g>>8) || c.B != uint8(b>>8) {
				t.Fatalf("pixel (%d, %d): got %v, want %d %d %d", x, y, c, r>>8, g>>8, b>>8)
			}
		}
	}
	_, err = InputImage(px[:10], 224, imageprep.CLIPMean, imageprep.CLIPStd)
	assert.ErrorContains(t, err, "10 pixel values")
}

func TestOverlayBlends(t *testing.T) {
	base := image.NewRGBA(image.Rect(0, 0, 2, 1))
	base.SetRGBA(0, 0, color.RGBA{200, 100, 0, 255})
	base.SetRGBA(1, 0, color.RGBA{0, 0, 0, 255})
	out, err := Overlay(base, []float32{0, 1}, plot.Jet, 0.25)
	require.NoError(t, err)
	// 0.75·base + 0.25·jet: jet(0) = (0, 0, 128), jet(1) = (128, 0, 0).
	assert.Equal(t, color.RGBA{150, 75, 32, 255}, out.RGBAAt(0, 0))
	assert.Equal(t, color.RGBA{32, 0, 0, 255}, out.RGBAAt(1, 0))
	_, err = Overlay(base, []float32{0}, plot.Jet, 0.5)
	assert.Error(t, err)
	_, err = Overlay(base, []float32{0, 1}, plot.Jet, 1.5)
	assert.ErrorContains(t, err, "alpha")
}

// testExplanation is a flat 64×64 input (the channel means) with a 4×4 grid map whose
// heads peak at known cells.
func testExplanation(heads int) *Explanation {
	const size, g = 64, 4
	px := make([]float32, 3*size*size) // 0 is each channel's mean
	e := &Explanation{Image: "dir/a b.png", Prompt: "a <b> & c", Scores: []Score{{"quality", 3.25}, {"alignment", 2.5}},
		Pixels: px, Size: size, Mean: imageprep.CLIPMean, Std: imageprep.CLIPStd}
	m := Map{Kind: KindCross, Title: "cross-modal attention (prompt query)", Token0: TokenMean, Grid: g}
	for h := range heads {
		w := make([]float32, 1+g*g)
		w[0] = 0.2
		for i := 1; i < len(w); i++ {
			w[i] = 0.6 / float32(g*g-1)
		}
		w[1+h%(g*g)] = 0.2 // the peak: cell h (row-major)
		m.Heads = append(m.Heads, w)
	}
	e.Maps = []Map{m}
	return e
}

func TestMeanPanelLayoutAndPeak(t *testing.T) {
	e := testExplanation(1)
	o, err := RenderOptions{}.withDefaults()
	require.NoError(t, err)
	img, err := MeanPanel(e, &e.Maps[0], o)
	require.NoError(t, err)
	s := e.Size
	top := pad + 4*lineHeight + pad/2 // name+scores, prompt, title, heads line
	assert.Equal(t, image.Rect(0, 0, 2*s+3*pad, top+s+pad+barHeight+lineHeight+pad), img.Bounds())

	// Left: the input, untouched (mid grey). Right: the overlay; the peak
	// cell (0, 0) is blended with jet's top colour, a far cell with its
	// bottom one.
	// Zero pixels are the channel means: round(255·mean) = (123, 117, 104).
	assert.Equal(t, color.RGBA{123, 117, 104, 255}, img.RGBAAt(pad+s/2, top+s/2))
	cell := s / 4
	peak := img.RGBAAt(2*pad+s+cell/2, top+cell/2)
	far := img.RGBAAt(2*pad+s+3*cell+cell/2, top+3*cell+cell/2)
	assert.Greater(t, int(peak.R), int(peak.B)+40, "peak is red: %v", peak)
	assert.Greater(t, int(far.B), int(far.R)+40, "far cell is blue: %v", far)

	// Text is drawn in the caption.
	assert.True(t, hasColour(img, image.Rect(0, 0, img.Bounds().Dx(), top), black))
	// The colour bar runs from jet(0) to jet(1).
	bar := top + s + pad + barHeight/2
	assert.Equal(t, plot.Jet(0), img.RGBAAt(2*pad+s, bar))
	assert.Equal(t, plot.Jet(1), img.RGBAAt(2*pad+2*s-1, bar))
}

func TestHeadsPanelGrid(t *testing.T) {
	e := testExplanation(5) // 3 columns, 2 rows
	o, err := RenderOptions{Colormap: plot.Viridis, ColormapName: "viridis", Alpha: 1}.withDefaults()
	require.NoError(t, err)
	img, err := HeadsPanel(e, &e.Maps[0], o)
	require.NoError(t, err)
	top := pad + 4*lineHeight + pad/2
	cell := lineHeight + e.Size + pad
	assert.Equal(t, image.Rect(0, 0, max(3*(e.Size+pad)+pad, 2*e.Size+3*pad), top+2*cell), img.Bounds())
	// With alpha 1 each tile is the colour map itself: head h peaks at grid
	// cell h, where its tile is brightest (viridis rises to yellow).
	c := e.Size / 4
	for h := range 5 {
		x := pad + (h%3)*(e.Size+pad)
		y := top + (h/3)*cell + lineHeight
		best, bx, by := -1, 0, 0
		for ty := range e.Size {
			for tx := range e.Size {
				p := img.RGBAAt(x+tx, y+ty)
				if v := int(p.R) + int(p.G); v > best {
					best, bx, by = v, tx, ty
				}
			}
		}
		assert.Equal(t, [2]int{h / 4, h % 4}, [2]int{by / c, bx / c}, "head %d: brightest pixel (%d, %d)", h, bx, by)
	}
	// The sixth slot is empty (white).
	assert.Equal(t, white, img.RGBAAt(pad+2*(e.Size+pad)+e.Size/2, top+cell+lineHeight+e.Size/2))
}

// Large head counts shrink the tiles to keep the grid within maxGridW.
func TestHeadsPanelShrinksTiles(t *testing.T) {
	e := testExplanation(32)
	e.Size = 512
	e.Pixels = make([]float32, 3*512*512)
	o, _ := RenderOptions{}.withDefaults()
	img, err := HeadsPanel(e, &e.Maps[0], o)
	require.NoError(t, err)
	assert.LessOrEqual(t, img.Bounds().Dx(), maxGridW)
	assert.Equal(t, 6*((maxGridW-pad)/6)+pad, img.Bounds().Dx())
}

func TestPanelsAreDeterministic(t *testing.T) {
	enc := func() []byte {
		e := testExplanation(3)
		o, _ := RenderOptions{}.withDefaults()
		img, err := HeadsPanel(e, &e.Maps[0], o)
		require.NoError(t, err)
		var b bytes.Buffer
		require.NoError(t, png.Encode(&b, img))
		return b.Bytes()
	}
	assert.Equal(t, enc(), enc())
}

func hasColour(img *image.RGBA, r image.Rectangle, c color.RGBA) bool {
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			if img.RGBAAt(x, y) == c {
				return true
			}
		}
	}
	return false
}

func TestFormatWeight(t *testing.T) {
	for _, c := range []struct {
		v    float64
		want string
	}{{0.5, "50.0%"}, {0.0123, "1.23%"}, {0.00001234, "0.00123%"}, {math.Inf(1), "n/a"}} {
		assert.Equal(t, c.want, formatWeight(c.v))
	}
}
