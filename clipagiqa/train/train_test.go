package train

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/clipagiqa/clipagiqa/torch"
	"github.com/clipagiqa/clipagiqa/torch/optim"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestLossDecreasesAndFilesAreWritten(t *testing.T) {
	m := newToy(t)
	out := t.TempDir()
	cfg := toyConfig(t, m, out)
	var steps []StepInfo
	res, err := Run(context.Background(), m, cfg, Callbacks{OnStep: func(s StepInfo) { steps = append(steps, s) }})
	require.NoError(t, err)
	t.Logf("%s", fmtHistory(res.History))
	require.Len(t, res.History, 6)
	first, last := res.History[0].TrainLoss, res.History[5].TrainLoss
	assert.Less(t, last, first/4, "training loss should fall well below its start")
	assert.Greater(t, res.Last.Parts["test"].Outputs["score"].SRCC, 0.9)
	// 64 samples at batch 10: 6 full batches, the partial one dropped.
	assert.Len(t, steps, 36)
	assert.Equal(t, 6, steps[0].Steps)
	assert.Equal(t, 60, res.History[0].TrainSamples)
	assert.InDelta(t, 0.005, steps[0].LR, 1e-12, "warm-up starts at 0.1·lr")
	assert.Equal(t, "val_srcc", res.BestBy)
	require.NotNil(t, res.Best)
	assert.Equal(t, res.BestEpoch, res.Best.Epoch)

	names := dirNames(t, out)
	assert.ElementsMatch(t, []string{CheckpointName(5), BestCheckpoint, MetricsJSON, MetricsCSV, LossPlot, MetricsPlot}, names,
		"only the newest epoch's checkpoint is kept, no temporaries")
	hist, err := ReadMetrics(filepath.Join(out, MetricsJSON))
	require.NoError(t, err)
	assert.Equal(t, stripTimes(res.History), stripTimes(hist))
	csv, err := os.ReadFile(filepath.Join(out, MetricsCSV))
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSpace(string(csv)), "\n")
	require.Len(t, lines, 7)
	assert.True(t, strings.HasPrefix(lines[0], "epoch,lr,train_loss,steps,train_samples,val_score_n,val_score_plcc,val_score_srcc"), lines[0])
}

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// An interrupted run continued with Resume ends with the same weights,
// buffers, momentum and metrics, to the bit, as a run never interrupted.
func TestResumeAfterInterruptionIsBitIdentical(t *testing.T) {
	ref := newToy(t)
	refCfg := toyConfig(t, ref, t.TempDir())
	want, err := Run(context.Background(), ref, refCfg, Callbacks{})
	require.NoError(t, err)

	for _, stopAt := range []int{1, 9, 20} { // step of the first epoch, mid-run, mid-epoch 4
		t.Run("", func(t *testing.T) {
			out := t.TempDir()
			m := newToy(t)
			ctx, cancel := context.WithCancel(context.Background())
			n := 0
			cfg := toyConfig(t, m, out)
			res, err := Run(ctx, m, cfg, Callbacks{OnStep: func(StepInfo) {
				if n++; n == stopAt {
					cancel()
				}
			}})
			require.ErrorIs(t, err, context.Canceled)
			assert.True(t, res.Interrupted)

			// A fresh process: new model and optimizer, resumed from disk.
			m2 := newToy(t)
			cfg2 := toyConfig(t, m2, out)
			cfg2.Resume = true
			got, err := Run(context.Background(), m2, cfg2, Callbacks{})
			require.NoError(t, err)
			assert.Equal(t, stopAt > 6, got.Resumed, "a checkpoint exists once the first epoch is done")
			assert.Equal(t, (stopAt-1)/6, got.StartEpoch)
			assert.Equal(t, storeValues(t, ref.store), storeValues(t, m2.store), "parameters and buffers")
			assert.Equal(t, momentum(t, refCfg.Optimizer), momentum(t, cfg2.Optimizer), "momentum buffers")
			assert.Equal(t, stripTimes(want.History), stripTimes(got.History))
			assert.Equal(t, want.BestEpoch, got.BestEpoch)
		})
	}
}

// Repeated epochs free everything they allocate.
func TestLiveTensorsStayFlat(t *testing.T) {
	m := newToy(t)
	cfg := toyConfig(t, m, t.TempDir())
	var counts []int64
	_, err := Run(context.Background(), m, cfg, Callbacks{OnEpoch: func(EpochReport) { counts = append(counts, torch.LiveTensors()) }})
	require.NoError(t, err)
	for i := 1; i < len(counts); i++ {
		assert.Equal(t, counts[0], counts[i], "live tensors after each epoch: %v", counts)
	}
}

func TestResumeRefusals(t *testing.T) {
	out := t.TempDir()
	m := newToy(t)
	cfg := toyConfig(t, m, out)
	cfg.Epochs = 2
	_, err := Run(context.Background(), m, cfg, Callbacks{})
	require.NoError(t, err)
	tests := []struct {
		name   string
		change func(*Config)
		want   string // "" : resumes
	}{
		{"changed lr", func(c *Config) { c.Hyper["lr"] = 0.1 }, "lr 0.05 → 0.1"},
		{"changed epochs", func(c *Config) { c.Epochs = 3 }, "epochs 2 → 3"},
		{"changed lr allowed", func(c *Config) { c.Hyper["lr"] = 0.1; c.OverrideSchedule = true }, ""},
		{"changed seed", func(c *Config) { c.Seed = 7 }, "seed 42, not 7"},
		{"changed batch", func(c *Config) { c.BatchSize = 8 }, "batch size 10, not 8"},
		{"changed selection", func(c *Config) { c.Select.Part = "test" }, "val_srcc"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := newToy(t)
			c := toyConfig(t, m, out)
			c.Epochs, c.Resume = 2, true
			tc.change(&c)
			_, err := Run(context.Background(), m, c, Callbacks{})
			if tc.want == "" {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}

	// The checkpoint gone but the metrics there: resuming would overwrite them.
	require.NoError(t, os.Remove(filepath.Join(out, CheckpointName(1))))
	m2 := newToy(t)
	c := toyConfig(t, m2, out)
	c.Epochs, c.Resume = 2, true
	_, err = Run(context.Background(), m2, c, Callbacks{})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "from an earlier run")
}

// Temporaries of killed writes are removed and listed at start.
func TestOrphanTemporariesAreRemoved(t *testing.T) {
	out := t.TempDir()
	orphans := []string{".checkpoint_3.pth.tmp-123", ".metrics.jsonl.tmp456"}
	for _, n := range append(orphans, "notes.txt") {
		require.NoError(t, os.WriteFile(filepath.Join(out, n), []byte("x"), 0o644))
	}
	m := newToy(t)
	cfg := toyConfig(t, m, out)
	cfg.Epochs = 1
	res, err := Run(context.Background(), m, cfg, Callbacks{})
	require.NoError(t, err)
	assert.ElementsMatch(t, orphans, res.RemovedTemps)
	assert.FileExists(t, filepath.Join(out, "notes.txt"))
	for _, n := range orphans {
		assert.NoFileExists(t, filepath.Join(out, n))
	}
}

// fakeParallel is rank 1 of 2 without a process group: it records the
// three hooks' calls.
type fakeParallel struct {
	shards    [][]int
	averaged  []int
	broadcast int
}

func (f *fakeParallel) Rank() int      { return 1 }
func (f *fakeParallel) WorldSize() int { return 2 }
func (f *fakeParallel) Sampler(b []int) []int {
	mine := b[len(b)/2:]
	f.shards = append(f.shards, mine)
	return mine
}
func (f *fakeParallel) AverageGradients(_ []*torch.Tensor, loss float64, n int) (float64, error) {
	f.averaged = append(f.averaged, n)
	return loss, nil
}
func (f *fakeParallel) BroadcastParams(ts ...*torch.Tensor) error { f.broadcast++; return nil }

func TestParallelHooks(t *testing.T) {
	m := newToy(t)
	out := t.TempDir()
	cfg := toyConfig(t, m, out)
	cfg.Epochs = 1
	fp := &fakeParallel{}
	cfg.Parallel = fp
	res, err := Run(context.Background(), m, cfg, Callbacks{})
	require.NoError(t, err)
	require.Len(t, fp.shards, 6)
	order := Batches(EpochOrder(42, 0, cfg.Train), 10, false)
	for k, s := range fp.shards {
		assert.Equal(t, order[k][5:], s, "rank 1 takes the second half of global batch %d", k)
	}
	assert.Equal(t, []int{5, 5, 5, 5, 5, 5}, fp.averaged)
	assert.Equal(t, 1+6+1, fp.broadcast, "parameters once at start, buffers before every step's forward and before the evaluation")
	assert.Equal(t, 60, res.History[0].TrainSamples, "samples count the global batch")
	assert.Empty(t, dirNames(t, out), "only rank 0 writes")

	cfg.BatchSize = 9
	_, err = Run(context.Background(), m, cfg, Callbacks{})
	require.ErrorContains(t, err, "does not divide by the world size 2")
}

func TestSelectionOnTestIsLabelled(t *testing.T) {
	m := newToy(t)
	cfg := toyConfig(t, m, "")
	cfg.Epochs = 2
	cfg.Select = Selection{Part: "test", Metric: "sum_corr"}
	res, err := Run(context.Background(), m, cfg, Callbacks{})
	require.NoError(t, err)
	assert.Equal(t, "test_sum_corr", res.BestBy)
	assert.Contains(t, res.BestLabel, "optimistic")
	r := res.Best.Parts["test"].Outputs["score"]
	assert.InDelta(t, r.SRCC+r.PLCC+r.KRCC, res.Best.Score, 1e-12)

	cfg.Select = Selection{Part: "nope"}
	_, err = Run(context.Background(), m, cfg, Callbacks{})
	require.ErrorContains(t, err, `part "nope"`)
}

func TestFeatureCacheNeedsFrozenEncoder(t *testing.T) {
	m := newToy(t)
	cfg := toyConfig(t, m, "")
	cfg.FeatureCache = true
	_, err := Run(context.Background(), m, cfg, Callbacks{})
	require.ErrorContains(t, err, "frozen image encoder")
}

func TestDivergenceIsAnError(t *testing.T) {
	m := newToy(t)
	cfg := toyConfig(t, m, "")
	opt, err := optim.NewSGD(optim.Single(m.Trainable()), optim.SGDOptions{LR: 1e30})
	require.NoError(t, err)
	defer opt.Close()
	cfg.Optimizer, cfg.ClipGradNorm, cfg.Schedule = opt, 0, nil
	_, err = Run(context.Background(), m, cfg, Callbacks{})
	require.Error(t, err)
	assert.True(t, strings.Contains(err.Error(), "diverged") || errors.Is(err, context.Canceled), err.Error())
}

func TestBatches(t *testing.T) {
	tests := []struct {
		n, bs    int
		keepLast bool
		want     []int // batch sizes
	}{
		{10, 3, false, []int{3, 3, 3}},
		{10, 3, true, []int{3, 3, 3, 1}},
		{2, 5, false, []int{2}},
		{6, 3, false, []int{3, 3}},
	}
	for _, tc := range tests {
		order := make([]int, tc.n)
		var got []int
		for _, b := range Batches(order, tc.bs, tc.keepLast) {
			got = append(got, len(b))
		}
		assert.Equal(t, tc.want, got, "%+v", tc)
	}
}

// The checkpoint a run resumed from (ResumeFrom, e.g. an official file put
// in the output directory) is not removed with the older checkpoints.
func TestResumeFromFileIsKept(t *testing.T) {
	out := t.TempDir()
	m := newToy(t)
	cfg := toyConfig(t, m, out)
	cfg.Epochs = 2
	_, err := Run(context.Background(), m, cfg, Callbacks{})
	require.NoError(t, err)
	from := filepath.Join(out, CheckpointName(0))
	require.NoError(t, os.Rename(filepath.Join(out, CheckpointName(1)), from)) // pretend: a file of epoch 0 given to us
	require.NoError(t, os.Remove(filepath.Join(out, MetricsJSON)))
	m2 := newToy(t)
	c2 := toyConfig(t, m2, out)
	c2.Epochs, c2.ResumeFrom, c2.OverrideSchedule = 3, from, true
	res, err := Run(context.Background(), m2, c2, Callbacks{})
	require.NoError(t, err)
	assert.Equal(t, 2, res.StartEpoch)
	assert.FileExists(t, from)
	assert.FileExists(t, filepath.Join(out, CheckpointName(2)))
}
