package agiqa

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/clipagiqa/clipagiqa/clipagiqa/clip"
	"github.com/clipagiqa/clipagiqa/clipagiqa/loader"
	"github.com/clipagiqa/clipagiqa/clipagiqa/method"
	"github.com/clipagiqa/clipagiqa/clipagiqa/tokenizer"
	"github.com/clipagiqa/clipagiqa/data"
	"github.com/clipagiqa/clipagiqa/internal/reffix"
	"github.com/clipagiqa/clipagiqa/internal/synthdata"
	"github.com/clipagiqa/clipagiqa/torch"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// trImage and trDataset make the synthetic datasets (internal/synthdata).
var (
	trImage   = synthdata.Image
	trDataset = synthdata.Dataset
)

func trCLIP(t testing.TB) (*clip.Model, *tokenizer.Tokenizer) {
	t.Helper()
	c, err := clip.Load(reffix.Path("tiny_clip_vit_fp16.pt"), clip.Options{})
	require.NoError(t, err)
	t.Cleanup(c.Close)
	tok, err := tokenizer.Default()
	require.NoError(t, err)
	return c, tok
}

func trModel(t testing.TB, c *clip.Model, tok *tokenizer.Tokenizer, seed uint64) *Model {
	t.Helper()
	require.NoError(t, torch.ManualSeed(seed))
	m, err := New(c, tok, DefaultConfig())
	require.NoError(t, err)
	t.Cleanup(m.Close)
	return m
}

// trParams returns m's trainable parameters as flat float32 slices.
func trParams(t *testing.T, m *Model) [][]float32 {
	t.Helper()
	var out [][]float32
	for _, p := range m.Params() {
		v, err := p.Float32s()
		require.NoError(t, err)
		out = append(out, v)
	}
	return out
}

// trMaxDiff is the largest absolute difference between two parameter sets.
func trMaxDiff(a, b [][]float32) float64 {
	worst := 0.0
	for i := range a {
		for j := range a[i] {
			worst = math.Max(worst, math.Abs(float64(a[i][j])-float64(b[i][j])))
		}
	}
	return worst
}

// trConfig is a short, fast run with a learning rate above the paper's
// (the tiny random CLIP's normalised features differ little).
func trConfig(mode string) TrainConfig {
	cfg := DefaultTrainConfig()
	cfg.Epochs, cfg.BatchSize, cfg.LR, cfg.WarmupEpochs = 4, 8, 0.05, 1
	cfg.WarmupLR = 1e-3
	cfg.Seed = 7
	cfg.FeatureCache = mode
	cfg.Workers = 2
	return cfg
}

func TestTrainConfigDefaults(t *testing.T) {
	cfg := DefaultTrainConfig()
	assert.Equal(t, 100, cfg.Epochs)
	assert.Equal(t, 32, cfg.BatchSize)
	assert.Equal(t, 0.002, cfg.LR)
	assert.Equal(t, 1e-5, cfg.WarmupLR)
	assert.Equal(t, 1, cfg.WarmupEpochs)
	assert.Equal(t, 0.9, cfg.Momentum)
	assert.Equal(t, 5e-4, cfg.WeightDecay)
	assert.Equal(t, "center", cfg.FeatureCache)
}

// The encoder is frozen, so training on cached centre features must give
// the weights of training with the encoder in the loop on the same views.
func TestTrainCenterCachedMatchesEncoderInLoop(t *testing.T) {
	dir := t.TempDir()
	train := trDataset(t, filepath.Join(dir, "img"), "train", 24, 1)
	c, tok := trCLIP(t)
	cfg := trConfig(CacheCenter)
	cfg.Epochs, cfg.LR = 3, 0.01
	cfg.CacheDir = filepath.Join(dir, "cache")

	cached := trModel(t, c, tok, 3)
	live := torch.LiveTensors()
	res, err := Train(context.Background(), cached, Datasets{Train: train}, cfg, Callbacks{})
	require.NoError(t, err)
	assert.Equal(t, live, torch.LiveTensors(), "Train leaked tensors")
	require.NotNil(t, res.Cache)
	assert.Equal(t, 24, res.Cache.Misses)

	loop := trModel(t, c, tok, 3)
	cfg.CacheDir = ""
	cfg.FeatureCache = CacheOff
	cfg.inLoopCenter = true
	res2, err := Train(context.Background(), loop, Datasets{Train: train}, cfg, Callbacks{})
	require.NoError(t, err)
	assert.Nil(t, res2.Cache)

	d := trMaxDiff(trParams(t, cached), trParams(t, loop))
	t.Logf("cached vs encoder-in-loop: max |Δw| = %.3g", d)
	assert.LessOrEqual(t, d, 1e-6)
	for i := range res.History {
		assert.InDelta(t, res.History[i].TrainLoss, res2.History[i].TrainLoss, 1e-5)
	}
	// And training moved the weights at all.
	moved := trMaxDiff(trParams(t, cached), trParams(t, trModel(t, c, tok, 3)))
	t.Logf("training moved the weights by up to %.3g", moved)
	assert.Greater(t, moved, 1e-3)
}

func TestTrainLearns(t *testing.T) {
	dir := t.TempDir()
	train := trDataset(t, filepath.Join(dir, "img"), "train", 64, 1)
	val := trDataset(t, filepath.Join(dir, "img"), "val", 24, 2)
	test := trDataset(t, filepath.Join(dir, "img"), "test", 32, 3)
	c, tok := trCLIP(t)
	m := trModel(t, c, tok, 1)
	ctx := context.Background()
	before, _, err := Evaluate(ctx, m, test, method.EvalOptions{})
	require.NoError(t, err)

	cfg := trConfig(CacheCenter)
	cfg.Epochs = 8
	cfg.OutDir = filepath.Join(dir, "out")
	var steps, epochs int
	live := torch.LiveTensors()
	res, err := Train(ctx, m, Datasets{Train: train, Val: val, Test: test}, cfg, Callbacks{
		OnStep:  func(StepInfo) { steps++ },
		OnEpoch: func(EpochReport) { epochs++ },
	})
	require.NoError(t, err)
	assert.Equal(t, live, torch.LiveTensors(), "Train leaked tensors")
	assert.Equal(t, 8*64/8, steps)
	assert.Equal(t, 8, epochs)
	require.Len(t, res.History, 8)
	last := res.History[7]
	require.NotNil(t, last.Test)
	require.NotNil(t, last.Val)
	t.Logf("test SRCC untrained %.3f, trained %.3f (PLCC %.3f); epoch %.3fs for 64 images",
		before.SRCC, last.Test.SRCC, last.Test.PLCC, last.Seconds)
	assert.Greater(t, last.Test.SRCC, 0.6)
	assert.Greater(t, last.Test.SRCC, before.SRCC+0.3)

	// The per-epoch report equals a fresh Evaluate of the final weights.
	after, preds, err := Evaluate(ctx, m, test, method.EvalOptions{BatchSize: 5})
	require.NoError(t, err)
	assert.InDelta(t, last.Test.SRCC, after.SRCC, 1e-9)
	assert.InDelta(t, last.Test.RMSE, after.RMSE, 1e-5)
	assert.Len(t, preds, 32)

	// The best checkpoint is the epoch with the highest validation SRCC.
	bestEpoch, best := 0, math.Inf(-1)
	for _, h := range res.History {
		if h.Val.SRCC > best {
			bestEpoch, best = h.Epoch, h.Val.SRCC
		}
	}
	assert.Equal(t, bestEpoch, res.BestEpoch)
	assert.Equal(t, "val_srcc", res.BestBy)
	ck, err := ReadCheckpoint(filepath.Join(cfg.OutDir, BestDir), 0)
	require.NoError(t, err)
	assert.Equal(t, bestEpoch, ck.Epoch)
	ck, err = ReadCheckpoint(filepath.Join(cfg.OutDir, LastDir), 0)
	require.NoError(t, err)
	assert.Equal(t, 8, ck.Epoch)
	assert.Len(t, ck.Momentum, 5)

	hist, err := ReadMetrics(filepath.Join(cfg.OutDir, MetricsJSON))
	require.NoError(t, err)
	assert.Equal(t, res.History, hist)
	csv, err := os.ReadFile(filepath.Join(cfg.OutDir, MetricsCSV))
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSpace(string(csv)), "\n")
	require.Len(t, lines, 9)
	assert.Equal(t, csvHeader, lines[0])
	assert.True(t, strings.HasPrefix(lines[8], "8,"), lines[8])
}

// An interrupted run resumed from OutDir/last ends with the weights of an
// uninterrupted run, whether it stopped between epochs or mid-epoch (which
// loses that epoch), in the "off" regime (fresh augmentation every epoch)
// and with views=K.
func TestTrainResumeEqualsUninterrupted(t *testing.T) {
	dir := t.TempDir()
	train := trDataset(t, filepath.Join(dir, "img"), "train", 24, 1)
	val := trDataset(t, filepath.Join(dir, "img"), "val", 8, 2)
	c, tok := trCLIP(t)
	ds := Datasets{Train: train, Val: val}
	ctx := context.Background()

	for _, tc := range []struct {
		mode      string
		stopEpoch int // cancel in OnEpoch of this epoch
		stopStep  int // or in OnStep of this step of epoch 3
		saved     int // epochs saved when stopped
	}{
		{CacheOff, 2, 0, 2},
		{CacheOff, 0, 2, 2},
		{"views=3", 0, 1, 2},
	} {
		t.Run(fmt.Sprintf("%s/epoch%d/step%d", tc.mode, tc.stopEpoch, tc.stopStep), func(t *testing.T) {
			out := t.TempDir()
			full := trModel(t, c, tok, 5)
			cfg := trConfig(tc.mode)
			cfg.CacheDir = filepath.Join(dir, "cache")
			cfg.OutDir = filepath.Join(out, "full")
			resFull, err := Train(ctx, full, ds, cfg, Callbacks{})
			require.NoError(t, err)

			cfg.OutDir = filepath.Join(out, "interrupted")
			first := trModel(t, c, tok, 5)
			cctx, cancel := context.WithCancel(ctx)
			defer cancel()
			live := torch.LiveTensors()
			res, err := Train(cctx, first, ds, cfg, Callbacks{
				OnEpoch: func(r EpochReport) {
					if r.Epoch == tc.stopEpoch {
						cancel()
					}
				},
				OnStep: func(s StepInfo) {
					if s.Epoch == 3 && s.Step == tc.stopStep {
						cancel()
					}
				},
			})
			require.ErrorIs(t, err, context.Canceled)
			assert.Equal(t, live, torch.LiveTensors(), "interrupted Train leaked tensors")
			assert.True(t, res.Interrupted)
			require.Len(t, res.History, tc.saved)
			ck, err := ReadCheckpoint(filepath.Join(cfg.OutDir, LastDir), 0)
			require.NoError(t, err)
			assert.Equal(t, tc.saved, ck.Epoch)

			// A differently initialised model: everything must come from the checkpoint.
			resumed := trModel(t, c, tok, 99)
			cfg.Resume = true
			res, err = Train(ctx, resumed, ds, cfg, Callbacks{})
			require.NoError(t, err)
			assert.True(t, res.Resumed)
			assert.Equal(t, tc.saved, res.StartEpoch)
			require.Len(t, res.History, 4)

			d := trMaxDiff(trParams(t, full), trParams(t, resumed))
			t.Logf("resumed vs uninterrupted: max |Δw| = %.3g", d)
			assert.LessOrEqual(t, d, 1e-6)
			for i := range res.History {
				assert.InDelta(t, resFull.History[i].TrainLoss, res.History[i].TrainLoss, 1e-6, "epoch %d", i+1)
			}
			assert.Equal(t, resFull.BestEpoch, res.BestEpoch)
			hist, err := ReadMetrics(filepath.Join(cfg.OutDir, MetricsJSON))
			require.NoError(t, err)
			require.Len(t, hist, 4)
			for i, h := range hist {
				assert.Equal(t, i+1, h.Epoch)
			}

			// Resuming a finished run does nothing; another seed is refused.
			res, err = Train(ctx, resumed, ds, cfg, Callbacks{})
			require.NoError(t, err)
			assert.Equal(t, 4, res.StartEpoch)
			cfg.Seed++
			_, err = Train(ctx, resumed, ds, cfg, Callbacks{})
			require.ErrorContains(t, err, "seed")
		})
	}
}

func TestTrainBadInputs(t *testing.T) {
	dir := t.TempDir()
	train := trDataset(t, filepath.Join(dir, "img"), "train", 10, 1)
	c, tok := trCLIP(t)
	m := trModel(t, c, tok, 1)
	ctx := context.Background()

	for _, tc := range []struct {
		name string
		edit func(*TrainConfig)
		want string
	}{
		{"epochs", func(c *TrainConfig) { c.Epochs = 0 }, "epochs"},
		{"batch", func(c *TrainConfig) { c.BatchSize = -1 }, "batch size"},
		{"lr", func(c *TrainConfig) { c.LR = 0 }, "learning rate"},
		{"cache mode", func(c *TrainConfig) { c.FeatureCache = "views=0" }, "views=K"},
		{"resume without out", func(c *TrainConfig) { c.Resume = true }, "output directory"},
		{"device", func(c *TrainConfig) { c.Device = "cuda" }, "device"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := trConfig(CacheCenter)
			tc.edit(&cfg)
			_, err := Train(ctx, m, Datasets{Train: train}, cfg, Callbacks{})
			require.ErrorContains(t, err, tc.want)
		})
	}

	// Missing files of every part are reported together, before any work.
	miss := &data.Dataset{Name: "val", Root: dir, Samples: []data.Sample{{Name: "gone1.png", Path: filepath.Join(dir, "gone1.png")}}}
	miss2 := &data.Dataset{Name: "test", Root: dir, Samples: []data.Sample{{Name: "gone2.png", Path: filepath.Join(dir, "gone2.png")}}}
	_, err := Train(ctx, m, Datasets{Train: train, Val: miss, Test: miss2}, trConfig(CacheCenter), Callbacks{})
	require.ErrorContains(t, err, "gone1.png")
	require.ErrorContains(t, err, "gone2.png")

	// Unreadable training images fail the run with all of them listed,
	// unless SkipBadImages.
	bad := &data.Dataset{Name: "train", Root: train.Root, Samples: append([]data.Sample(nil), train.Samples...)}
	for _, i := range []int{2, 6} {
		require.NoError(t, os.WriteFile(bad.Samples[i].Path, []byte("not an image"), 0o644))
	}
	for _, mode := range []string{CacheCenter, CacheOff} {
		cfg := trConfig(mode)
		cfg.Epochs = 1
		live := torch.LiveTensors()
		res, err := Train(ctx, m, Datasets{Train: bad}, cfg, Callbacks{})
		require.Error(t, err, mode)
		var ie loader.ImageErrors
		require.ErrorAs(t, err, &ie, mode)
		require.Len(t, ie, 2, mode)
		assert.Equal(t, []int{2, 6}, []int{ie[0].Index, ie[1].Index})
		assert.Contains(t, err.Error(), "train_002.png")
		assert.Equal(t, live, torch.LiveTensors())

		cfg.SkipBadImages = true
		res, err = Train(ctx, m, Datasets{Train: bad}, cfg, Callbacks{})
		require.NoError(t, err, mode)
		assert.Len(t, res.TrainFailed, 2)
		assert.Equal(t, 8, res.History[0].TrainImages, mode)
		assert.Equal(t, live, torch.LiveTensors())
	}
}

func TestEpochRandomness(t *testing.T) {
	idx := []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}
	a, b := epochOrder(1, 3, idx), epochOrder(1, 3, idx)
	assert.Equal(t, a, b, "same seed and epoch")
	assert.NotEqual(t, a, epochOrder(1, 4, idx), "another epoch")
	assert.NotEqual(t, a, epochOrder(2, 3, idx), "another seed")
	assert.ElementsMatch(t, idx, a)
	// views=K draws every view, deterministically.
	seen := map[int]bool{}
	for e := range 20 {
		v := epochView(1, e, 3, 4)
		assert.Equal(t, v, epochView(1, e, 3, 4))
		seen[v] = true
	}
	assert.Len(t, seen, 4)
	assert.Equal(t, 0, epochView(1, 5, 3, 1))
}

// BenchmarkTrainEpoch reports seconds per training epoch (after the first)
// of the tiny CLIP on 64 generated images, batch 8, per feature-cache mode,
// and the time spent encoding the cached features.
func BenchmarkTrainEpoch(b *testing.B) {
	dir := b.TempDir()
	train := trDataset(b, filepath.Join(dir, "img"), "train", 64, 1)
	c, tok := trCLIP(b)
	for _, mode := range []string{CacheOff, CacheCenter, "views=4"} {
		b.Run(mode, func(b *testing.B) {
			cfg := trConfig(mode)
			cfg.Epochs = 3
			var epoch, encode float64
			for range b.N {
				cfg.CacheDir = b.TempDir() // every run encodes afresh
				m := trModel(b, c, tok, 1)
				res, err := Train(context.Background(), m, Datasets{Train: train}, cfg, Callbacks{})
				require.NoError(b, err)
				for _, h := range res.History[1:] {
					epoch += h.Seconds / 2
				}
				encode += res.EncodeSeconds
				m.Close()
			}
			b.ReportMetric(epoch/float64(b.N), "s/epoch")
			b.ReportMetric(encode/float64(b.N), "s-encode")
		})
	}
}
