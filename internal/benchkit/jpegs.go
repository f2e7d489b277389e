package benchkit

import (
	"bytes"
	"encoding/json"
	"fmt"
	"image"
	"image/jpeg"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"sync"
)

// JPEGSet describes a generated image set; its manifest.json lets a later
// run reuse the files.
type JPEGSet struct {
	Dir     string    `json:"-"`
	Count   int       `json:"count"`
	Size    int       `json:"size"`
	Seed    uint64    `json:"seed"`
	Quality int       `json:"quality"`
	Version int       `json:"version"`
	Bytes   int64     `json:"bytes"`
	Paths   []string  `json:"-"`
	MOS     []float64 `json:"-"`
}

const jpegSetVersion = 1

// SyntheticImage draws image i of a set: a smooth colour field, a few
// overlapping ellipses and mild noise, so JPEG files have realistic sizes and
// decoding costs. The same (seed, i, size) always gives the same pixels.
func SyntheticImage(seed uint64, i, size int) *image.RGBA {
	rng := rand.New(rand.NewPCG(seed, uint64(i)*0x9e3779b97f4a7c15+1))
	var corner [4][3]float64
	for c := range corner {
		for k := range corner[c] {
			corner[c][k] = 40 + 180*rng.Float64()
		}
	}
	type ellipse struct{ cx, cy, rx, ry, r, g, b float64 }
	es := make([]ellipse, 3+rng.IntN(5))
	for k := range es {
		es[k] = ellipse{rng.Float64() * float64(size), rng.Float64() * float64(size),
			(0.05 + 0.3*rng.Float64()) * float64(size), (0.05 + 0.3*rng.Float64()) * float64(size),
			255 * rng.Float64(), 255 * rng.Float64(), 255 * rng.Float64()}
	}
	img := image.NewRGBA(image.Rect(0, 0, size, size))
	inv := 1 / float64(max(size-1, 1))
	for y := 0; y < size; y++ {
		fy := float64(y) * inv
		for x := 0; x < size; x++ {
			fx := float64(x) * inv
			var px [3]float64
			for k := 0; k < 3; k++ {
				top := corner[0][k]*(1-fx) + corner[1][k]*fx
				bot := corner[2][k]*(1-fx) + corner[3][k]*fx
				px[k] = top*(1-fy) + bot*fy
			}
			for _, e := range es {
				dx, dy := (float64(x)-e.cx)/e.rx, (float64(y)-e.cy)/e.ry
				if dx*dx+dy*dy <= 1 {
					px[0], px[1], px[2] = 0.3*px[0]+0.7*e.r, 0.3*px[1]+0.7*e.g, 0.3*px[2]+0.7*e.b
				}
			}
			n := 12 * (rng.Float64() - 0.5)
			o := img.PixOffset(x, y)
			for k := 0; k < 3; k++ {
				img.Pix[o+k] = uint8(math.Max(0, math.Min(255, math.Round(px[k]+n))))
			}
			img.Pix[o+3] = 255
		}
	}
	return img
}

// syntheticMOS is image i's made-up opinion score in [1, 5).
func syntheticMOS(seed uint64, i int) float64 {
	return 1 + 4*rand.New(rand.NewPCG(seed^0x5bd1e995, uint64(i))).Float64()
}

// GenerateJPEGs writes count size×size JPEGs (quality 90) to dir, or reuses
// the files of an earlier run with the same parameters, and returns the set
// with paths and synthetic MOS values.
func GenerateJPEGs(dir string, count, size int, seed uint64) (*JPEGSet, error) {
	want := JPEGSet{Dir: dir, Count: count, Size: size, Seed: seed, Quality: 90, Version: jpegSetVersion}
	paths := make([]string, count)
	mos := make([]float64, count)
	for i := range paths {
		paths[i] = filepath.Join(dir, fmt.Sprintf("img_%05d.jpg", i))
		mos[i] = syntheticMOS(seed, i)
	}
	manifest := filepath.Join(dir, "manifest.json")
	if b, err := os.ReadFile(manifest); err == nil {
		var have JPEGSet
		if json.Unmarshal(b, &have) == nil && have.Count == count && have.Size == size && have.Seed == seed &&
			have.Quality == want.Quality && have.Version == want.Version && allExist(paths) {
			have.Dir, have.Paths, have.MOS = dir, paths, mos
			return &have, nil
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("jpeg set: %w", err)
	}
	_ = os.Remove(manifest) // a partial set must not look complete
	var (
		mu    sync.Mutex
		total int64
		first error
		wg    sync.WaitGroup
	)
	next := make(chan int)
	for w := 0; w < runtime.NumCPU(); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var buf bytes.Buffer
			for i := range next {
				buf.Reset()
				err := jpeg.Encode(&buf, SyntheticImage(seed, i, size), &jpeg.Options{Quality: want.Quality})
				if err == nil {
					err = os.WriteFile(paths[i], buf.Bytes(), 0o644)
				}
				mu.Lock()
				total += int64(buf.Len())
				if err != nil && first == nil {
					first = fmt.Errorf("jpeg set: image %d: %w", i, err)
				}
				mu.Unlock()
			}
		}()
	}
	for i := 0; i < count; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	if first != nil {
		return nil, first
	}
	want.Bytes = total
	b, err := json.MarshalIndent(want, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(manifest, b, 0o644); err != nil {
		return nil, fmt.Errorf("jpeg set: %w", err)
	}
	want.Paths, want.MOS = paths, mos
	return &want, nil
}

func allExist(paths []string) bool {
	for _, p := range paths {
		if st, err := os.Stat(p); err != nil || st.Size() == 0 {
			return false
		}
	}
	return true
}
