package loader

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/clipagiqa/clipagiqa/clipagiqa/imageprep"
	"github.com/clipagiqa/clipagiqa/data"
	"github.com/clipagiqa/clipagiqa/internal/synthdata"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// trLoadAll collects every batch of LoadBatches.
func trLoadAll(t *testing.T, samples []data.Sample, order []int, opts Options) []*Batch {
	t.Helper()
	var out []*Batch
	for b, err := range LoadBatches(context.Background(), samples, order, opts) {
		require.NoError(t, err)
		out = append(out, b)
	}
	return out
}

func TestLoadBatches(t *testing.T) {
	dir := t.TempDir()
	ds := synthdata.Dataset(t, dir, "img", 10, 4)
	require.NoError(t, os.WriteFile(ds.Samples[3].Path, []byte("\x89PNG\r\n\x1a\nbroken"), 0o644))
	require.NoError(t, os.Remove(ds.Samples[7].Path))
	prep := imageprep.DefaultOptions(32)
	per := prep.TensorLen()
	order := []int{9, 8, 7, 6, 5, 4, 3, 2, 1, 0}

	for _, aug := range []bool{false, true} {
		base := Options{Prep: prep, BatchSize: 3, Augment: aug, Seed: 11, Stream: 2}
		one, many := base, base
		one.Workers, many.Workers, many.Prefetch = 1, 5, 1
		a := trLoadAll(t, ds.Samples, order, one)
		b := trLoadAll(t, ds.Samples, order, many)
		require.Equal(t, a, b, "augment=%v: result depends on the worker count", aug)
		require.Len(t, a, 4)

		var got []int
		var failed []int
		for k, bt := range a {
			assert.Equal(t, 3*k, bt.Start)
			require.Len(t, bt.Pixels, bt.Len()*per)
			for j, i := range bt.Indices {
				got = append(got, i)
				assert.Equal(t, ds.Samples[i].Name, bt.Names[j])
				assert.Equal(t, float32(ds.Samples[i].MOS), bt.MOS[j])
				// Independent reference: imageprep on the file.
				img, err := imageprep.DecodeFile(ds.Samples[i].Path, 0)
				require.NoError(t, err)
				var want []float32
				if aug {
					want, err = imageprep.RandomTransform(img, prep, SampleRNG(11, 2, i))
				} else {
					want, err = imageprep.LoadFile(ds.Samples[i].Path, prep)
				}
				require.NoError(t, err)
				assert.Equal(t, want, bt.Pixels[j*per:(j+1)*per], "image %d", i)
			}
			for _, f := range bt.Failed {
				failed = append(failed, f.Index)
				assert.Equal(t, ds.Samples[f.Index].Name, f.Name)
				assert.Error(t, f.Err)
			}
		}
		assert.Equal(t, []int{9, 8, 6, 5, 4, 2, 1, 0}, got)
		assert.Equal(t, []int{7, 3}, failed)
	}

	// Another stream (epoch) draws other crops.
	x := trLoadAll(t, ds.Samples, []int{0}, Options{Prep: prep, Augment: true, Seed: 11, Stream: 2})
	y := trLoadAll(t, ds.Samples, []int{0}, Options{Prep: prep, Augment: true, Seed: 11, Stream: 3})
	assert.NotEqual(t, x[0].Pixels, y[0].Pixels)
}

func TestLoadBatchesStops(t *testing.T) {
	dir := t.TempDir()
	ds := synthdata.Dataset(t, dir, "img", 12, 5)
	opts := Options{Prep: imageprep.DefaultOptions(32), BatchSize: 2, Workers: 3}
	before := runtime.NumGoroutine()

	n := 0
	for _, err := range LoadBatches(context.Background(), ds.Samples, nil, opts) {
		require.NoError(t, err)
		n++
		if n == 2 {
			break
		}
	}
	assert.Equal(t, 2, n)

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var last error
	for _, err := range LoadBatches(ctx, ds.Samples, nil, opts) {
		last = err
	}
	require.ErrorIs(t, last, context.Canceled)

	for _, err := range LoadBatches(context.Background(), ds.Samples, []int{0, 12}, opts) {
		require.ErrorContains(t, err, "out of range")
	}
	// The workers are gone once the loop is left (Done may still be returning).
	for i := 0; i < 100 && runtime.NumGoroutine() > before; i++ {
		time.Sleep(10 * time.Millisecond)
	}
	assert.LessOrEqual(t, runtime.NumGoroutine(), before)
}

func TestImageErrorsMessage(t *testing.T) {
	var e ImageErrors
	for i := range 25 {
		e = append(e, ImageError{Index: i, Name: filepath.Join("d", string(rune('a'+i))+".png"), Err: os.ErrNotExist})
	}
	msg := e.Error()
	assert.Contains(t, msg, "25 image(s) could not be read")
	assert.Contains(t, msg, "d/a.png: file does not exist")
	assert.Contains(t, msg, "and 5 more")
	assert.ErrorIs(t, e, os.ErrNotExist)
}
