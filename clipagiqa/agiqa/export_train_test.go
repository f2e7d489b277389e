package agiqa

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/clipagiqa/clipagiqa/torch/ptfile"
	"github.com/stretchr/testify/require"
)

// TestTrainedCheckpointExportsItsHyperParameters: a run with non-default
// momentum, weight decay and lr saves its optimizer state, and the official
// export carries those values (not the paper's defaults).
func TestTrainedCheckpointExportsItsHyperParameters(t *testing.T) {
	dir := t.TempDir()
	train := trDataset(t, filepath.Join(dir, "img"), "train", 16, 1)
	c, tok := trCLIP(t)
	m := trModel(t, c, tok, 5)
	cfg := trConfig(CacheOff)
	cfg.Epochs, cfg.WarmupEpochs, cfg.Momentum, cfg.WeightDecay, cfg.LR = 1, 0, 0.5, 1e-3, 0.03
	cfg.OutDir = filepath.Join(dir, "run")
	_, err := Train(context.Background(), m, Datasets{Train: train}, cfg, Callbacks{})
	require.NoError(t, err)
	ck, err := ReadCheckpoint(filepath.Join(cfg.OutDir, LastDir), 0)
	require.NoError(t, err)
	require.NotNil(t, ck.Optimizer, "optimizer state saved with the checkpoint")
	out := filepath.Join(dir, "official")
	require.NoError(t, ck.ExportOfficial(out, nil, nil, 0.01))
	for _, sub := range optimizerModules {
		f, err := ptfile.Load(filepath.Join(out, sub, "model.pth.tar-1"))
		require.NoError(t, err)
		v, err := ptfile.Get(f.Root, "optimizer")
		require.NoError(t, err)
		g, err := singleGroup(v.(*ptfile.Dict))
		require.NoError(t, err)
		for k, want := range map[string]float64{"lr": 0.01, "momentum": 0.5, "weight_decay": 1e-3, "initial_lr": 0.03} {
			got, _ := g.Get(k)
			require.Equal(t, want, got, "%s %s", sub, k)
		}
	}
}
