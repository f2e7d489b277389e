package scorer

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"image"
	"image/jpeg"
	"image/png"
	"math"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/clipagiqa/clipagiqa/clipagiqa/imageprep"
	"github.com/clipagiqa/clipagiqa/internal/reffix"
	"github.com/clipagiqa/clipagiqa/torch"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The fixture README's tolerances: AGIQA scores atol 1e-6, CLIP-IQA 1e-5.
const (
	scoreAtol   = 1e-6
	clipIQAAtol = 1e-5
)

var tinyCLIP = reffix.Path("tiny_clip_vit_fp16.pt")

// withRunHook lets a test hold the batcher at the start of each batch.
func withRunHook(f func(n int)) Option { return func(c *scorerConfig) { c.runHook = f } }

func loadScorer(t *testing.T, opts ...Option) *Scorer {
	t.Helper()
	sc, err := loadDefault(tinyCLIP, reffix.Dir(), opts...)
	require.NoError(t, err)
	t.Cleanup(func() { sc.Close() })
	return sc
}

func fixtureImages(t *testing.T) [][]byte {
	t.Helper()
	out := make([][]byte, 8)
	for i := range out {
		b, err := os.ReadFile(reffix.Path(fmt.Sprintf("img_%d.png", i)))
		require.NoError(t, err)
		out[i] = b
	}
	return out
}

// pngWithHeader builds a PNG whose IHDR declares w×h 8-bit RGB and whose IDAT
// holds idat (not necessarily enough data): a decoder must refuse it from
// the header alone when w×h is above the limit.
func pngWithHeader(w, h uint32, idat []byte) []byte {
	var b bytes.Buffer
	b.WriteString("\x89PNG\r\n\x1a\n")
	chunk := func(typ string, data []byte) {
		binary.Write(&b, binary.BigEndian, uint32(len(data)))
		crc := crc32.NewIEEE()
		crc.Write([]byte(typ))
		crc.Write(data)
		b.WriteString(typ)
		b.Write(data)
		binary.Write(&b, binary.BigEndian, crc.Sum32())
	}
	ihdr := make([]byte, 13)
	binary.BigEndian.PutUint32(ihdr[0:], w)
	binary.BigEndian.PutUint32(ihdr[4:], h)
	ihdr[8], ihdr[9] = 8, 2 // 8-bit truecolour
	chunk("IHDR", ihdr)
	chunk("IDAT", idat)
	chunk("IEND", nil)
	return b.Bytes()
}

func TestScorerMatchesReference(t *testing.T) {
	exp, err := reffix.Load()
	require.NoError(t, err)
	imgs := fixtureImages(t)
	tests := []struct {
		method string
		want   []float64
		atol   float64
	}{
		{MethodAGIQA, exp.CLIPAGIQA.Scores, scoreAtol},
		{MethodCLIPIQA, exp.CLIPIQA.Scores, clipIQAAtol},
	}
	for _, tc := range tests {
		t.Run(tc.method, func(t *testing.T) {
			sc := loadScorer(t, WithMethod(tc.method))
			ctx := context.Background()
			for i, data := range imgs {
				got, err := sc.ScoreBytes(ctx, data)
				require.NoError(t, err)
				assert.InDelta(t, tc.want[i], got, tc.atol, "ScoreBytes img_%d", i)
				img, err := png.Decode(bytes.NewReader(data))
				require.NoError(t, err)
				got2, err := sc.Score(ctx, img)
				require.NoError(t, err)
				assert.InDelta(t, tc.want[i], got2, tc.atol, "Score img_%d", i)
			}
			scores, errs := sc.ScoreBatch(ctx, imgs)
			for i := range imgs {
				require.NoError(t, errs[i])
				assert.InDelta(t, tc.want[i], scores[i], tc.atol, "ScoreBatch img_%d", i)
			}
		})
	}
}

// Concurrent callers are batched together and must get the single-caller scores.
func TestScorerConcurrentMatchesSequential(t *testing.T) {
	imgs := fixtureImages(t)
	sc := loadScorer(t, WithMaxBatch(8), WithMaxWait(20*time.Millisecond))
	ctx := context.Background()
	seq := make([]float64, len(imgs))
	for i, d := range imgs {
		var err error
		seq[i], err = sc.ScoreBytes(ctx, d)
		require.NoError(t, err)
	}
	const workers, per = 8, 20
	before := sc.Stats()
	var wg sync.WaitGroup
	got := make([][]float64, workers)
	errs := make([][]error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range per {
				s, err := sc.ScoreBytes(ctx, imgs[(w+j)%len(imgs)])
				got[w] = append(got[w], s)
				errs[w] = append(errs[w], err)
			}
		}()
	}
	wg.Wait()
	worst := 0.0
	for w := range workers {
		for j := range per {
			require.NoError(t, errs[w][j])
			worst = math.Max(worst, math.Abs(got[w][j]-seq[(w+j)%len(imgs)]))
		}
	}
	t.Logf("max |concurrent - sequential| = %.3g", worst)
	assert.LessOrEqual(t, worst, 1e-6)
	after := sc.Stats()
	assert.Equal(t, uint64(workers*per), after.Images-before.Images)
	var sum, imgsBySize uint64
	for n, c := range after.BatchSizes {
		sum += c
		imgsBySize += uint64(n) * c
	}
	assert.Equal(t, after.Batches, sum, "batch size histogram counts every batch")
	assert.Equal(t, after.Images, imgsBySize)
	t.Logf("%d batches for %d images", after.Batches-before.Batches, workers*per)
}

// Requests arriving together fill one batch: with a long max wait, four
// concurrent requests and max batch 4 run as exactly one batch.
func TestScorerGroupsIntoOneBatch(t *testing.T) {
	imgs := fixtureImages(t)
	var mu sync.Mutex
	var sizes []int
	sc := loadScorer(t, WithMaxBatch(4), WithMaxWait(time.Minute), withRunHook(func(n int) {
		mu.Lock()
		sizes = append(sizes, n)
		mu.Unlock()
	}))
	_, errs := sc.ScoreBatch(context.Background(), imgs[:4])
	for _, err := range errs {
		require.NoError(t, err)
	}
	assert.Equal(t, []int{4}, sizes)
	assert.Equal(t, uint64(1), sc.Stats().BatchSizes[4])
}

// blockedScorer returns a scorer whose batcher stops at its first batch
// until release is closed.
func blockedScorer(t *testing.T, queue int) (sc *Scorer, started <-chan int, release chan struct{}) {
	st := make(chan int, 100)
	rel := make(chan struct{})
	sc = loadScorer(t, WithMaxBatch(1), WithMaxWait(0), WithQueueSize(queue), withRunHook(func(n int) {
		st <- n
		<-rel
	}))
	return sc, st, rel
}

func TestScorerOverloadAndCancel(t *testing.T) {
	imgs := fixtureImages(t)
	sc, started, release := blockedScorer(t, 2)
	ctx := context.Background()
	type res struct {
		s   float64
		err error
	}
	first := make(chan res, 1)
	go func() { s, err := sc.ScoreBytes(ctx, imgs[0]); first <- res{s, err} }()
	<-started // the batcher holds request 1; the queue (2) is empty

	// Request 2 is queued and then cancelled before it starts.
	cctx, cancel := context.WithCancel(ctx)
	second := make(chan error, 1)
	go func() { _, err := sc.ScoreBytes(cctx, imgs[1]); second <- err }()
	// Request 3 is queued with a deadline that passes while it waits.
	dctx, dcancel := context.WithTimeout(ctx, time.Second)
	defer dcancel()
	third := make(chan error, 1)
	go func() { _, err := sc.ScoreBytes(dctx, imgs[2]); third <- err }()
	require.Eventually(t, func() bool { return sc.QueueDepth() == 2 }, 10*time.Second, time.Millisecond)

	// The queue is full: the next caller is refused at once.
	_, err := sc.ScoreBytes(ctx, imgs[3])
	require.ErrorIs(t, err, ErrOverloaded)
	assert.Equal(t, uint64(1), sc.Stats().Overloaded)

	cancel()
	require.ErrorIs(t, <-second, context.Canceled)
	require.ErrorIs(t, <-third, context.DeadlineExceeded)

	close(release)
	r := <-first
	require.NoError(t, r.err)
	// Cancelled requests never reach the device.
	require.Eventually(t, func() bool { return sc.Stats().Dropped == 2 }, 10*time.Second, time.Millisecond)
	st := sc.Stats()
	assert.Equal(t, uint64(1), st.Images)
	assert.Equal(t, 0, st.QueueDepth)
	// The scorer still works afterwards.
	_, err = sc.ScoreBytes(ctx, imgs[3])
	require.NoError(t, err)
}

func TestScorerCloseFinishesInFlightAndFreesMemory(t *testing.T) {
	imgs := fixtureImages(t)
	live := torch.LiveTensors()
	st := make(chan int, 100)
	rel := make(chan struct{})
	sc, err := loadDefault(tinyCLIP, reffix.Dir(), WithMaxBatch(1), WithMaxWait(0), withRunHook(func(n int) {
		st <- n
		<-rel
	}))
	require.NoError(t, err)
	assert.Greater(t, torch.LiveTensors(), live)
	errs := make(chan error, 2)
	for i := range 2 {
		go func() { _, err := sc.ScoreBytes(context.Background(), imgs[i]); errs <- err }()
	}
	<-st
	require.Eventually(t, func() bool { return sc.QueueDepth() == 1 }, 10*time.Second, time.Millisecond)
	closed := make(chan struct{})
	go func() { sc.Close(); close(closed) }()
	// New requests are refused while Close waits for the queued ones.
	require.Eventually(t, sc.isClosed, 10*time.Second, time.Millisecond)
	_, err = sc.ScoreBytes(context.Background(), imgs[2])
	require.ErrorIs(t, err, ErrClosed)
	close(rel)
	<-closed
	for range 2 {
		require.NoError(t, <-errs, "in-flight and queued requests finish")
	}
	assert.Equal(t, live, torch.LiveTensors(), "Close frees every tensor")
	require.NoError(t, sc.Close(), "Close twice")
	_, err = sc.ScoreBytes(context.Background(), imgs[0])
	require.ErrorIs(t, err, ErrClosed)
}

func TestScorerBadInput(t *testing.T) {
	var jpg bytes.Buffer
	require.NoError(t, jpeg.Encode(&jpg, image.NewRGBA(image.Rect(0, 0, 64, 48)), nil))
	sc := loadScorer(t, WithMaxPixels(1<<20))
	tests := []struct {
		name string
		data []byte
		also error
	}{
		{"empty", nil, imageprep.ErrUnknownFormat},
		{"random bytes", []byte("definitely not an image, just text"), imageprep.ErrUnknownFormat},
		{"truncated JPEG", jpg.Bytes()[:jpg.Len()/2], nil},
		{"PNG declaring 30000x30000", pngWithHeader(30000, 30000, nil), imageprep.ErrTooManyPixels},
		{"PNG just over the limit", pngWithHeader(1025, 1024, nil), imageprep.ErrTooManyPixels},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := sc.ScoreBytes(context.Background(), tc.data)
			require.ErrorIs(t, err, ErrInvalidImage)
			if tc.also != nil {
				require.ErrorIs(t, err, tc.also)
			}
		})
	}
	_, err := sc.Score(context.Background(), image.NewRGBA(image.Rect(0, 0, 2000, 1000)))
	require.ErrorIs(t, err, imageprep.ErrTooManyPixels)
	_, err = sc.Score(context.Background(), nil)
	require.ErrorIs(t, err, ErrInvalidImage)
	assert.Equal(t, uint64(0), sc.Stats().Images, "bad inputs never reach the device")
}

func TestLoadScorerErrors(t *testing.T) {
	live := torch.LiveTensors()
	tests := []struct {
		name       string
		clip, ckpt string
		opts       []Option
		want       string
	}{
		{"zero max batch", tinyCLIP, reffix.Dir(), []Option{WithMaxBatch(0)}, "max batch"},
		{"unknown method", tinyCLIP, reffix.Dir(), []Option{WithMethod("nope")}, "method"},
		{"no checkpoint", tinyCLIP, "", nil, "needs a checkpoint"},
		{"missing checkpoint", tinyCLIP, t.TempDir(), nil, "checkpoint"},
		{"missing CLIP", "does-not-exist.pt", reffix.Dir(), nil, "does-not-exist.pt"},
		{"missing epoch", tinyCLIP, reffix.Dir(), []Option{WithEpoch(7)}, "model.pth.tar-7"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sc, err := loadDefault(tc.clip, tc.ckpt, tc.opts...)
			require.Error(t, err)
			assert.Nil(t, sc)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
	assert.Equal(t, live, torch.LiveTensors(), "failed loads free what they allocated")
}

func BenchmarkScorerScoreBytes(b *testing.B) {
	data, err := os.ReadFile(reffix.Path("img_1.png"))
	require.NoError(b, err)
	sc, err := loadDefault(tinyCLIP, reffix.Dir())
	require.NoError(b, err)
	defer sc.Close()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := sc.ScoreBytes(context.Background(), data); err != nil {
				b.Fatal(err)
			}
		}
	})
}
