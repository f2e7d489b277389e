package scorer

import (
	"context"
	"image"
	"image/color"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// slowImage takes delay to read its first pixel: a stand-in for a slow decode.
type slowImage struct {
	image.Image
	delay time.Duration
}

func (s slowImage) At(x, y int) color.Color {
	if x == s.Bounds().Min.X && y == s.Bounds().Min.Y {
		time.Sleep(s.delay)
	}
	return s.Image.At(x, y)
}

// Images still being decoded when a batch starts join it instead of waiting
// for the next one: four callers, one decode slot (so decodes take turns,
// 20ms each, far past max wait 1ms), max batch 4 → one batch of 4.
func TestScorerBatchWaitsForImagesBeingDecoded(t *testing.T) {
	var mu sync.Mutex
	var sizes []int
	sc := loadScorer(t, WithMaxBatch(4), WithMaxWait(time.Millisecond), WithPreprocessWorkers(1),
		withRunHook(func(n int) {
			mu.Lock()
			sizes = append(sizes, n)
			mu.Unlock()
		}))
	// As after a slow batch: the join wait is its cap (maxJoinWait).
	sc.batchEWMA.Store(int64(time.Minute))
	base := image.NewRGBA(image.Rect(0, 0, 32, 32))
	for i := range base.Pix {
		base.Pix[i] = uint8(i)
	}
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = sc.Score(context.Background(), slowImage{base, 20 * time.Millisecond})
		}()
	}
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
	assert.Equal(t, []int{4}, sizes)
	assert.Zero(t, sc.pending.Load(), "nothing left pending")

	// With max wait 0 (take only what is queued) there is no joining.
	sizes = nil
	sc0 := loadScorer(t, WithMaxBatch(4), WithMaxWait(0), WithPreprocessWorkers(1), withRunHook(func(n int) {
		mu.Lock()
		sizes = append(sizes, n)
		mu.Unlock()
	}))
	sc0.batchEWMA.Store(int64(time.Minute))
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = sc0.Score(context.Background(), slowImage{base, 20 * time.Millisecond})
		}()
	}
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
	mu.Lock()
	assert.Greater(t, len(sizes), 1, "decodes 20ms apart run as separate batches: %v", sizes)
	mu.Unlock()
	assert.Zero(t, sc0.pending.Load())
}

// Failed decodes and refused requests do not stay pending (which would make
// every later batch wait the full join time).
func TestScorerPendingReturnsToZero(t *testing.T) {
	sc := loadScorer(t, WithMaxBatch(2))
	ctx := context.Background()
	_, err := sc.ScoreBytes(ctx, []byte("not an image"))
	require.Error(t, err)
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	_, err = sc.ScoreBytes(cancelled, fixtureImages(t)[0])
	require.Error(t, err)
	_, err = sc.ScoreBytes(ctx, fixtureImages(t)[0])
	require.NoError(t, err)
	assert.Zero(t, sc.pending.Load())
}
