package plot

import (
	"image/color"
	"math"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Values by hand from matplotlib's jet segment data and viridis samples.
func TestColormaps(t *testing.T) {
	for _, c := range []struct {
		name string
		m    Colormap
		v    float64
		want color.RGBA
	}{
		{"jet 0", Jet, 0, color.RGBA{0, 0, 128, 255}},
		{"jet 1", Jet, 1, color.RGBA{128, 0, 0, 255}},
		// r = (0.5−0.35)/0.31, g = 1, b = 1 − (0.5−0.34)/0.31.
		{"jet 0.5", Jet, 0.5, color.RGBA{123, 255, 123, 255}},
		{"jet 0.25", Jet, 0.25, color.RGBA{0, 128, 255, 255}},
		{"jet clamps", Jet, -3, color.RGBA{0, 0, 128, 255}},
		{"jet NaN", Jet, math.NaN(), color.RGBA{0, 0, 128, 255}},
		{"viridis 0", Viridis, 0, color.RGBA{0x44, 0x01, 0x54, 255}},
		{"viridis 1", Viridis, 1, color.RGBA{0xfd, 0xe7, 0x25, 255}},
		{"viridis 5/9", Viridis, 5.0 / 9, color.RGBA{0x1f, 0x9e, 0x89, 255}},
		// Halfway between samples 0 and 1: the mean of #440154 and #482878.
		{"viridis 1/18", Viridis, 1.0 / 18, color.RGBA{70, 21, 102, 255}},
		{"gray", Gray, 0.5, color.RGBA{128, 128, 128, 255}},
	} {
		assert.Equal(t, c.want, c.m(c.v), c.name)
	}
}

// ColormapByName knows the maps by name, in any case.
// the ends: the low end is darker than the high end for viridis and gray.
func TestColormapByName(t *testing.T) {
	for _, n := range []string{"jet", "Viridis", "gray"} {
		m, err := ColormapByName(n)
		require.NoError(t, err)
		assert.NotEqual(t, m(0), m(1), n)
	}
	_, err := ColormapByName("rainbow")
	assert.ErrorContains(t, err, "gray, jet, viridis")
}

func TestFitText(t *testing.T) {
	assert.Equal(t, "short", FitText("short", 100))
	got := FitText("a rather long caption that does not fit", 70) // 7 px per glyph: 10 glyphs
	assert.Equal(t, "a rathe...", got)
	assert.LessOrEqual(t, TextWidth(got), 70)
	assert.Equal(t, "", FitText("abc", 5))
}
