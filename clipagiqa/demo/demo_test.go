package demo

import (
	"bytes"
	"image"
	"image/jpeg"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/clipagiqa/clipagiqa/data"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func small(seed uint64) Options {
	return Options{Seed: seed, Bases: 4, Size: 48, Levels: 5, TestFraction: 0.25}
}

func readAll(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		rel, _ := filepath.Rel(dir, p)
		out[rel] = b
		return err
	})
	require.NoError(t, err)
	return out
}

func TestGenerateDeterministic(t *testing.T) {
	a, b, c := t.TempDir(), t.TempDir(), t.TempDir()
	_, _, err := Generate(a, small(7))
	require.NoError(t, err)
	_, _, err = Generate(b, small(7))
	require.NoError(t, err)
	_, _, err = Generate(c, small(8))
	require.NoError(t, err)
	fa, fb, fc := readAll(t, a), readAll(t, b), readAll(t, c)
	// 4 bases × (1 + 4 distortions × 4 severities) images + 2 CSVs.
	require.Len(t, fa, 4*17+2)
	require.Equal(t, len(fa), len(fb))
	for name, data := range fa {
		assert.True(t, bytes.Equal(data, fb[name]), "%s differs between two runs with the same seed", name)
	}
	assert.False(t, bytes.Equal(fa["images/b000_ref.png"], fc["images/b000_ref.png"]), "another seed must draw another image")
}

func TestMOSValues(t *testing.T) {
	// Hand-computed from 1 + 4(1 − s/4)^γ.
	cases := []struct {
		d    Distortion
		s    int
		want float64
	}{
		{None, 0, 5}, {Blur, 0, 5}, {Blur, 1, 4}, {Blur, 2, 3}, {Blur, 4, 1},
		{Noise, 2, 1 + 4*0.42044820762685725}, // 0.5^1.25
		{JPEG, 2, 1 + 4*0.5743491774985175},   // 0.5^0.8
		{Colour, 2, 1 + 4*0.6597539553864471}, // 0.5^0.6
	}
	for _, c := range cases {
		assert.InDelta(t, c.want, MOS(c.d, c.s, 5), 1e-12, "%s s=%d", c.d, c.s)
	}
}

func TestMOSMonotoneInSeverity(t *testing.T) {
	for _, levels := range []int{2, 3, 5, 8} {
		for _, d := range Distortions {
			prev := MOS(d, 0, levels)
			assert.Equal(t, 5.0, prev)
			for s := 1; s < levels; s++ {
				m := MOS(d, s, levels)
				assert.Less(t, m, prev, "%s levels=%d s=%d", d, levels, s)
				prev = m
			}
			assert.InDelta(t, 1.0, prev, 1e-12)
		}
	}
}

func TestSplitDisjointAndReadable(t *testing.T) {
	dir := t.TempDir()
	opts := small(3)
	opts.Bases = 8
	trainCSV, testCSV, err := Generate(dir, opts)
	require.NoError(t, err)
	train, test, err := data.LoadTrainTestCSV(dir, trainCSV, testCSV)
	require.NoError(t, err)
	require.NoError(t, train.CheckFiles())
	require.NoError(t, test.CheckFiles())
	groups := func(ds *data.Dataset) map[string]int {
		g := map[string]int{}
		for _, s := range ds.Samples {
			g[s.Group]++
		}
		return g
	}
	gTrain, gTest := groups(train), groups(test)
	assert.Len(t, gTest, 2) // round(0.25 × 8)
	assert.Len(t, gTrain, 6)
	for g, n := range gTest {
		assert.NotContains(t, gTrain, g, "base %s on both sides", g)
		assert.Equal(t, 17, n)
	}
	// MOS in the file is the documented function, and monotone per group.
	items, err := Plan(opts)
	require.NoError(t, err)
	byName := map[string]Item{}
	for _, it := range items {
		byName[it.Name] = it
	}
	for _, s := range append(train.Samples, test.Samples...) {
		it := byName[s.Name]
		assert.InDelta(t, MOS(it.Distortion, it.Severity, 5), s.MOS, 1e-4, s.Name)
	}
}

func TestOptionErrors(t *testing.T) {
	for _, o := range []Options{{Bases: 1}, {Size: 8}, {Levels: 1}, {TestFraction: 1.5}, {Format: "gif"}} {
		_, _, err := Generate(t.TempDir(), o)
		assert.Error(t, err, "%+v", o)
	}
}

func TestGaussianKernel(t *testing.T) {
	// σ = 1: r = 3, weights e^{-i²/2} normalised; Σ = 1 + 2(e^-0.5 + e^-2 + e^-4.5).
	sum := 1 + 2*(math.Exp(-0.5)+math.Exp(-2)+math.Exp(-4.5))
	want := []float64{math.Exp(-4.5), math.Exp(-2), math.Exp(-0.5), 1, math.Exp(-0.5), math.Exp(-2), math.Exp(-4.5)}
	k := GaussianKernel(1)
	require.Len(t, k, 7)
	for i := range want {
		assert.InDelta(t, want[i]/sum, k[i], 1e-15)
	}
}

func grey(size int, v uint8) *image.RGBA {
	img := image.NewRGBA(image.Rect(0, 0, size, size))
	for i := range img.Pix {
		img.Pix[i] = v
	}
	return img
}

func TestDistortions(t *testing.T) {
	base := BaseImage(1, 0, 64)

	t.Run("blur of an impulse is the kernel product", func(t *testing.T) {
		img := grey(21, 0)
		img.Pix[img.PixOffset(10, 10)] = 255
		out, err := Distort(img, Blur, 2, 5, 0) // σ = 1.5
		require.NoError(t, err)
		k := GaussianKernel(1.5)
		r := len(k) / 2
		for _, d := range [][2]int{{0, 0}, {1, 0}, {2, 1}, {0, 3}} {
			want := math.Round(255 * k[r+d[0]] * k[r+d[1]])
			assert.InDelta(t, want, float64(out.Pix[out.PixOffset(10+d[0], 10+d[1])]), 1, "offset %v", d)
		}
	})

	t.Run("blur removes detail monotonically", func(t *testing.T) {
		prev := math.Inf(1)
		for s := range 5 {
			out, err := Distort(base, Blur, s, 5, 0)
			require.NoError(t, err)
			e := gradientEnergy(out)
			assert.Less(t, e, prev, "severity %d", s)
			prev = e
		}
	})

	t.Run("noise has the documented sigma", func(t *testing.T) {
		img := grey(128, 128)
		for s := 1; s < 5; s++ {
			out, err := Distort(img, Noise, s, 5, 99)
			require.NoError(t, err)
			var sum, sq float64
			n := 0
			for i := 0; i < len(out.Pix); i += 4 {
				d := float64(out.Pix[i]) - 128
				sum += d
				sq += d * d
				n++
			}
			std := math.Sqrt(sq/float64(n) - (sum/float64(n))*(sum/float64(n)))
			want := 70 * float64(s) / 4
			if s == 4 {
				// σ = 70 around 128 clips ~7% of the draws, which shrinks the spread.
				assert.True(t, std > 60 && std < 70, "severity 4: std %v", std)
				continue
			}
			assert.InDelta(t, want, std, 0.05*want+0.3, "severity %d", s) // rounding adds ≈0.29
		}
	})

	t.Run("jpeg is an image/jpeg round trip", func(t *testing.T) {
		out, err := Distort(base, JPEG, 3, 5, 0)
		require.NoError(t, err)
		var buf bytes.Buffer
		require.NoError(t, jpeg.Encode(&buf, base, &jpeg.Options{Quality: 7})) // round(24·0.25)+1
		dec, err := jpeg.Decode(&buf)
		require.NoError(t, err)
		for _, p := range [][2]int{{0, 0}, {13, 40}, {63, 63}} {
			r, g, b, _ := dec.At(p[0], p[1]).RGBA()
			o := out.PixOffset(p[0], p[1])
			assert.Equal(t, []uint8{uint8(r >> 8), uint8(g >> 8), uint8(b >> 8)}, out.Pix[o:o+3])
		}
		assert.Equal(t, 7, JPEGQuality(3, 5))
		assert.Equal(t, 1, JPEGQuality(4, 5))
		assert.Equal(t, 19, JPEGQuality(1, 5))
	})

	t.Run("colour shift", func(t *testing.T) {
		out, err := Distort(grey(8, 100), Colour, 2, 5, 0)
		require.NoError(t, err)
		assert.Equal(t, []uint8{120, 96, 80, 100}, out.Pix[:4]) // +20, −4, −20; alpha untouched
	})

	t.Run("severity zero is a copy", func(t *testing.T) {
		for _, d := range Distortions {
			out, err := Distort(base, d, 0, 5, 0)
			require.NoError(t, err)
			assert.Equal(t, base.Pix, out.Pix)
		}
		_, err := Distort(base, Blur, 5, 5, 0)
		assert.Error(t, err)
	})
}

// gradientEnergy is the mean squared horizontal difference of the red channel.
func gradientEnergy(img *image.RGBA) float64 {
	var e float64
	b := img.Bounds()
	for y := range b.Dy() {
		for x := 1; x < b.Dx(); x++ {
			d := float64(img.Pix[img.PixOffset(x, y)]) - float64(img.Pix[img.PixOffset(x-1, y)])
			e += d * d
		}
	}
	return e / float64(b.Dx()*b.Dy())
}

// Captions name a quality word that follows the MOS and the distortion's
// strength.
func TestCaption(t *testing.T) {
	for _, c := range []struct {
		d    Distortion
		s    int
		want string
	}{
		{None, 0, "a perfect photo, sharp and clean"},
		{Blur, 1, "a good photo, slightly blurry"},
		{Noise, 2, "a poor photo, moderately noisy"},
		{JPEG, 3, "a poor photo, very blocky from jpeg compression"}, // MOS 2.32
		{Blur, 3, "a bad photo, very blurry"},
		{Colour, 4, "a terrible photo, extremely colour shifted to red"},
	} {
		if got := Caption(c.d, c.s, 5); got != c.want {
			t.Errorf("Caption(%s, %d) = %q, want %q (MOS %.2f)", c.d, c.s, got, c.want, MOS(c.d, c.s, 5))
		}
	}
}
