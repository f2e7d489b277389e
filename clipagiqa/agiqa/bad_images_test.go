package agiqa

import (
	"context"
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A training image that becomes unreadable during a --feature-cache off run
// (after the start-up check) stops the run naming it, or, with
// SkipBadImages, is listed in TrainFailed and visibly missing from the
// epoch's image count: never silently dropped.
func TestImageUnreadableDuringTraining(t *testing.T) {
	dir := t.TempDir()
	c, tok := trCLIP(t)
	for _, skip := range []bool{false, true} {
		t.Run(map[bool]string{false: "stops", true: "skipped"}[skip], func(t *testing.T) {
			train := trDataset(t, dir, "train", 16, 4)
			victim := train.Samples[5]
			cfg := trConfig(CacheOff)
			cfg.Epochs, cfg.SkipBadImages, cfg.OutDir = 2, skip, t.TempDir()
			broke := false
			res, err := Train(context.Background(), trModel(t, c, tok, 1), Datasets{Train: train}, cfg, Callbacks{
				OnEpoch: func(r EpochReport) {
					if r.Epoch == 1 {
						require.NoError(t, os.WriteFile(victim.Path, []byte("gone bad"), 0o644))
						broke = true
					}
				},
			})
			require.True(t, broke)
			if !skip {
				require.Error(t, err)
				assert.Contains(t, err.Error(), victim.Name)
				assert.Contains(t, err.Error(), "epoch 2")
				require.Len(t, res.History, 1, "epoch 1 stays saved")
				return
			}
			require.NoError(t, err)
			require.Len(t, res.TrainFailed, 1)
			assert.Equal(t, victim.Name, res.TrainFailed[0].Name)
			assert.Equal(t, 16, res.History[0].TrainImages)
			assert.Equal(t, 15, res.History[1].TrainImages)
		})
	}
}
