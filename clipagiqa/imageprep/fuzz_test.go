package imageprep

import (
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// FuzzDecodeTransform feeds arbitrary bytes to Decode and, when they decode, through
// CenterTransform and RandomTransform. It asserts no panic, a consistent Image and an
// output of 3*n*n finite values. The pixel limit keeps hostile headers from allocating
// much. Seed corpus: testdata/fuzz/FuzzDecodeTransform plus the small fixture files.
func FuzzDecodeTransform(f *testing.F) {
	for _, dir := range []string{"jpeg", "modes"} {
		files, _ := filepath.Glob(filepath.Join("testdata", dir, "*"))
		for _, p := range files {
			if filepath.Ext(p) == ".json" {
				continue
			}
			if data, err := os.ReadFile(p); err == nil && len(data) < 4096 {
				f.Add(data)
			}
		}
	}
	opts := DefaultOptions(7)
	f.Fuzz(func(t *testing.T, data []byte) {
		img, err := Decode(data, 1<<16)
		if err != nil {
			if img != nil {
				t.Fatalf("error %v with an image", err)
			}
			return
		}
		if err := img.Validate(); err != nil {
			t.Fatalf("decoded image invalid: %v", err)
		}
		out, err := CenterTransform(img, opts)
		if err != nil {
			t.Fatalf("transform: %v", err)
		}
		check := func(out []float32) {
			if len(out) != 3*7*7 {
				t.Fatalf("output length %d", len(out))
			}
			for _, v := range out {
				if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) || v < -3 || v > 3 {
					t.Fatalf("output value %v", v)
				}
			}
		}
		check(out)
		out, err = RandomTransform(img, opts, rand.New(rand.NewPCG(1, uint64(len(data)))))
		if err != nil {
			t.Fatalf("random transform: %v", err)
		}
		check(out)
	})
}
