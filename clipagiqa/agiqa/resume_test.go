package agiqa

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Group 4: a resume that would silently restart or mix schedules is
// refused with a message naming what is there; orphaned temporaries of
// killed writes are removed at start (only ours, only in our directories).
func TestResumeRefusalsAndOrphanTemps(t *testing.T) {
	dir := t.TempDir()
	train := trDataset(t, filepath.Join(dir, "img"), "train", 16, 1)
	val := trDataset(t, filepath.Join(dir, "img"), "val", 6, 2)
	c, tok := trCLIP(t)
	ds := Datasets{Train: train, Val: val}
	ctx := context.Background()
	base := trConfig(CacheCenter)
	base.Epochs = 2
	base.CacheDir = filepath.Join(dir, "cache")

	// done trains two epochs into a fresh directory and returns its config.
	done := func(t *testing.T) TrainConfig {
		cfg := base
		cfg.OutDir = filepath.Join(t.TempDir(), "run")
		_, err := Train(ctx, trModel(t, c, tok, 3), ds, cfg, Callbacks{})
		require.NoError(t, err)
		cfg.Resume = true
		return cfg
	}
	cases := []struct {
		name   string
		change func(t *testing.T, cfg *TrainConfig)
		want   []string // in the error; nil: must succeed
	}{
		{"last missing, best and metrics present", func(t *testing.T, cfg *TrainConfig) {
			require.NoError(t, os.RemoveAll(filepath.Join(cfg.OutDir, LastDir)))
		}, []string{filepath.Join(LastDir, ModelFile), "best/model.pt", MetricsJSON, "start fresh"}},
		{"more epochs", func(_ *testing.T, cfg *TrainConfig) { cfg.Epochs = 4 }, []string{"epochs 2 → 4", "override"}},
		{"other lr", func(_ *testing.T, cfg *TrainConfig) { cfg.LR *= 2 }, []string{"lr 0.05 → 0.1"}},
		{"other warm-up", func(_ *testing.T, cfg *TrainConfig) { cfg.WarmupEpochs = 0 }, []string{"warmup epochs 1 → 0"}},
		{"other weight decay", func(_ *testing.T, cfg *TrainConfig) { cfg.WeightDecay = 0 }, []string{"weight decay"}},
		{"more epochs, override", func(_ *testing.T, cfg *TrainConfig) { cfg.Epochs, cfg.OverrideSchedule = 3, true }, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := done(t)
			tc.change(t, &cfg)
			before, _ := os.ReadFile(filepath.Join(cfg.OutDir, BestDir, ModelFile))
			res, err := Train(ctx, trModel(t, c, tok, 3), ds, cfg, Callbacks{})
			if tc.want == nil {
				require.NoError(t, err)
				assert.Equal(t, 2, res.StartEpoch)
				require.Len(t, res.History, 3)
				return
			}
			require.Error(t, err)
			for _, w := range tc.want {
				assert.Contains(t, err.Error(), w)
			}
			after, _ := os.ReadFile(filepath.Join(cfg.OutDir, BestDir, ModelFile))
			assert.Equal(t, before, after, "a refused resume must not touch best/")
		})
	}

	t.Run("orphan temporaries", func(t *testing.T) {
		cfg := done(t)
		old := time.Now().Add(-time.Hour)
		mk := func(path string, age time.Time) string {
			require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
			require.NoError(t, os.WriteFile(path, []byte("partial"), 0o644))
			require.NoError(t, os.Chtimes(path, age, age))
			return path
		}
		orphans := []string{
			mk(filepath.Join(cfg.OutDir, LastDir, ".model.pt.tmp-123456"), time.Now()),
			mk(filepath.Join(cfg.OutDir, BestDir, ".model.pt.tmp-99"), time.Now()),
			mk(filepath.Join(cfg.OutDir, ".metrics.csv.tmp777"), time.Now()),
			mk(filepath.Join(cfg.OutDir, ".metrics.jsonl.tmp1"), time.Now()),
			mk(filepath.Join(cfg.CacheDir, ".features-center-r224-0123abcd.bin.tmp42"), old),
		}
		kept := []string{
			mk(filepath.Join(cfg.CacheDir, ".features-center-r224-0123abcd.bin.tmp43"), time.Now()), // another run may be writing it
			mk(filepath.Join(cfg.OutDir, ".notes.tmp1"), old),                                       // not ours
			mk(filepath.Join(cfg.OutDir, LastDir, "model.pt.tmp-1"), old),                           // not our pattern
		}
		res, err := Train(ctx, trModel(t, c, tok, 3), ds, cfg, Callbacks{})
		require.NoError(t, err)
		assert.ElementsMatch(t, orphans, res.RemovedTemps)
		for _, p := range orphans {
			assert.NoFileExists(t, p)
		}
		for _, p := range kept {
			assert.FileExists(t, p)
		}
	})
}
