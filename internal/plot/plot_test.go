package plot

import (
	"image"
	"image/color"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// near reports whether a pixel of colour c lies within r pixels of (x, y).
func near(img image.Image, x, y, r int, c color.RGBA) bool {
	for dy := -r; dy <= r; dy++ {
		for dx := -r; dx <= r; dx++ {
			if color.RGBAModel.Convert(img.At(x+dx, y+dy)) == c {
				return true
			}
		}
	}
	return false
}

func decode(t *testing.T, path string) image.Image {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	img, err := png.Decode(f)
	require.NoError(t, err)
	require.Equal(t, image.Rect(0, 0, Width, Height), img.Bounds())
	return img
}

func TestScatter(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "scatter.png")
	xs := []float64{0, 10, 5, 2, math.NaN()}
	ys := []float64{0, 10, 2, 8, 3}
	require.NoError(t, Scatter(path, xs, ys, "predicted vs MOS", "MOS", "predicted"))
	img := decode(t, path)

	// Axes by hand: x and y both [0, 10] (ticks every 2); x pixels 64..620,
	// y pixels 432 (value 0) .. 32 (value 10).
	px := func(x float64) int { return int(math.Round(64 + x/10*556)) }
	py := func(y float64) int { return int(math.Round(432 - y/10*400)) }
	for i := range 4 {
		assert.True(t, near(img, px(xs[i]), py(ys[i]), 1, PointBlue), "point %d", i)
	}
	// Least squares by hand: b = 41/56.75, a = 5 − 4.25·b.
	b := 41 / 56.75
	a := 5 - 4.25*b
	assert.True(t, near(img, px(1), py(a+b), 1, FitRed), "fit line at x=1")
	assert.True(t, near(img, px(0.5), py(0.5), 1, LineGrey), "identity at 0.5 (a dash)")
	// Empty plot area, off every line and grid line, stays white.
	assert.Equal(t, White, color.RGBAModel.Convert(img.At(px(9), py(1))))
	// Tick labels and the title are drawn in black.
	assert.True(t, hasColour(img, image.Rect(40, 434, 90, 470), Black), "x tick label 0")
	assert.True(t, hasColour(img, image.Rect(200, 5, 440, 30), Black), "title")
	assert.True(t, hasColour(img, image.Rect(0, 150, 20, 330), Black), "vertical y label")
}

func hasColour(img image.Image, r image.Rectangle, c color.RGBA) bool {
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			if color.RGBAModel.Convert(img.At(x, y)) == c {
				return true
			}
		}
	}
	return false
}

func TestLines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "curves.png")
	series := map[string][]float64{
		"srcc": {0.1, 0.5, 0.7, 0.8},
		"loss": {4, 3, 2, 1},
	}
	require.NoError(t, Lines(path, series, "training", "epoch", "value"))
	img := decode(t, path)
	// x: epochs 1..4 over pixels 64..620; y: [0, 4] over 432..32.
	px := func(x float64) int { return int(math.Round(64 + (x-1)/3*556)) }
	py := func(y float64) int { return int(math.Round(432 - y/4*400)) }
	// Series in name order: loss gets Palette[0], srcc Palette[1].
	assert.True(t, near(img, px(2), py(3), 1, Palette[0]), "loss at epoch 2")
	assert.True(t, near(img, px(2.5), py(2.5), 1, Palette[0]), "loss segment between epochs 2 and 3")
	assert.True(t, near(img, px(3), py(0.7), 1, Palette[1]), "srcc at epoch 3")
	assert.False(t, near(img, px(3), py(2.5), 2, Palette[0]), "nothing drawn off the lines")
}

func TestLinesGapsAndSingle(t *testing.T) {
	img, err := LinesImage(map[string][]float64{"a": {1, math.NaN(), 3}}, "", "", "")
	require.NoError(t, err)
	// x: 1..3, y: [1, 3] → step 0.5; a gap means no pixels at the midpoint of 1→2.
	px := func(x float64) int { return int(math.Round(64 + (x-1)/2*556)) }
	py := func(y float64) int { return int(math.Round(432 - (y-1)/2*400)) }
	assert.True(t, near(img, px(1), py(1), 1, Palette[0]))
	assert.False(t, near(img, px(1.5), py(1.5), 2, Palette[0]))
	_, err = LinesImage(map[string][]float64{"one": {0.5}}, "", "", "")
	assert.NoError(t, err)
}

func TestErrors(t *testing.T) {
	dir := t.TempDir()
	assert.Error(t, Scatter(filepath.Join(dir, "a.png"), []float64{1}, []float64{1, 2}, "", "", ""))
	assert.Error(t, Scatter(filepath.Join(dir, "b.png"), []float64{math.NaN()}, []float64{1}, "", "", ""))
	assert.Error(t, Lines(filepath.Join(dir, "c.png"), map[string][]float64{}, "", "", ""))
	assert.Error(t, Lines(filepath.Join(dir, "d.png"), map[string][]float64{"x": {math.NaN()}}, "", "", ""))
}

func TestNiceAxis(t *testing.T) {
	cases := []struct {
		lo, hi, wantLo, wantHi, wantStep float64
	}{
		{0, 10, 0, 10, 2},
		{0.1, 4, 0, 4, 1},
		{1.3, 4.7, 1, 5, 1},
		{0.62, 0.91, 0.6, 1.0, 0.1},
		{3, 3, 1, 5, 1},
	}
	for _, c := range cases {
		a := niceAxis(c.lo, c.hi, 0, 1)
		assert.InDelta(t, c.wantStep, a.step, 1e-12, "%v..%v", c.lo, c.hi)
		assert.InDelta(t, c.wantLo, a.lo, 1e-12, "%v..%v", c.lo, c.hi)
		assert.InDelta(t, c.wantHi, a.hi, 1e-12, "%v..%v", c.lo, c.hi)
	}
	assert.Equal(t, "0.5", tickLabel(0.5, 0.1))
	assert.Equal(t, "2", tickLabel(2, 1))
	assert.Equal(t, "0.0", tickLabel(-1e-17, 0.1)) // never "-0.0"
}
