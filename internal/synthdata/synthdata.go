// Package synthdata makes small synthetic quality datasets for tests:
// scenes of rectangles whose MOS follows from their brightness and blur, so
// a model that learns has something to find.
package synthdata

import (
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/clipagiqa/clipagiqa/data"
	"github.com/stretchr/testify/require"
)

// Image draws a small scene (background and rectangles) scaled by
// brightness b and box-blurred with radius r.
func Image(rng *rand.Rand, b float64, r int) *image.RGBA {
	w, h := 40+rng.IntN(33), 40+rng.IntN(33)
	px := make([][3]float64, w*h)
	bg := [3]float64{rng.Float64() * 255, rng.Float64() * 255, rng.Float64() * 255}
	for i := range px {
		px[i] = bg
	}
	for range 4 {
		c := [3]float64{rng.Float64() * 255, rng.Float64() * 255, rng.Float64() * 255}
		x0, y0 := rng.IntN(w), rng.IntN(h)
		x1, y1 := x0+4+rng.IntN(w/2), y0+4+rng.IntN(h/2)
		for y := y0; y < min(y1, h); y++ {
			for x := x0; x < min(x1, w); x++ {
				px[y*w+x] = c
			}
		}
	}
	out := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			var s [3]float64
			n := 0.0
			for dy := -r; dy <= r; dy++ {
				for dx := -r; dx <= r; dx++ {
					xx, yy := min(max(x+dx, 0), w-1), min(max(y+dy, 0), h-1)
					for c := range 3 {
						s[c] += px[yy*w+xx][c]
					}
					n++
				}
			}
			out.Set(x, y, color.RGBA{uint8(s[0] / n * b), uint8(s[1] / n * b), uint8(s[2] / n * b), 255})
		}
	}
	return out
}

// Dataset writes n PNGs to dir; MOS = 1 + 4·brightness − 0.5·blur radius.
func Dataset(t testing.TB, dir, name string, n int, seed uint64) *data.Dataset {
	t.Helper()
	require.NoError(t, os.MkdirAll(dir, 0o755))
	ds := &data.Dataset{Name: name, Root: dir}
	rng := rand.New(rand.NewPCG(seed, 77))
	for i := range n {
		b := 0.15 + 0.85*rng.Float64()
		r := rng.IntN(4)
		img := Image(rng, b, r)
		file := fmt.Sprintf("%s_%03d.png", name, i)
		f, err := os.Create(filepath.Join(dir, file))
		require.NoError(t, err)
		require.NoError(t, png.Encode(f, img))
		require.NoError(t, f.Close())
		ds.Samples = append(ds.Samples, data.Sample{Name: file, Path: filepath.Join(dir, file), MOS: 1 + 4*b - 0.5*float64(r)})
	}
	return ds
}
