package agiqa

import (
	"context"
	"os"
	"testing"

	"github.com/clipagiqa/clipagiqa/clipagiqa/imageprep"
	"github.com/clipagiqa/clipagiqa/clipagiqa/method"
	"github.com/clipagiqa/clipagiqa/clipagiqa/metrics"
	"github.com/clipagiqa/clipagiqa/torch"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestEvaluateReportsUnreadableImages(t *testing.T) {
	dir := t.TempDir()
	ds := trDataset(t, dir, "e", 8, 6)
	require.NoError(t, os.WriteFile(ds.Samples[2].Path, []byte("\xff\xd8\xff\xe0 truncated jpeg"), 0o644))
	require.NoError(t, os.Remove(ds.Samples[5].Path))
	c, tok := trCLIP(t)
	m := trModel(t, c, tok, 2)
	live := torch.LiveTensors()

	rep, preds, err := Evaluate(context.Background(), m, ds, method.EvalOptions{BatchSize: 3, Workers: 2})
	require.NoError(t, err)
	assert.Equal(t, live, torch.LiveTensors())
	require.Len(t, preds, 8)
	var score, mos []float64
	for i, p := range preds {
		assert.Equal(t, ds.Samples[i].Name, p.Name)
		assert.Equal(t, ds.Samples[i].MOS, p.MOS)
		if i == 2 || i == 5 {
			assert.NotEmpty(t, p.Err, "image %d", i)
			assert.Zero(t, p.Score)
			continue
		}
		require.Empty(t, p.Err, "image %d", i)
		// Independent reference: imageprep + Model.Score on one image.
		px, err := imageprep.LoadFile(p.Path, imageprep.DefaultOptions(224))
		require.NoError(t, err)
		want, err := m.Score(px, 1)
		require.NoError(t, err)
		assert.InDelta(t, float64(want[0]), p.Score, 1e-5, "image %d", i)
		score = append(score, p.Score)
		mos = append(mos, p.MOS)
	}
	assert.Contains(t, preds[5].Err, "no such file")
	assert.Equal(t, 6, rep.N)
	want, err := metrics.Compute(score, mos)
	require.NoError(t, err)
	assert.Equal(t, want, rep)

	// Predict: same scores, no MOS, the path as given.
	paths := []string{ds.Samples[0].Path, ds.Samples[5].Path, ds.Samples[1].Path}
	got, err := Predict(context.Background(), m, paths, method.EvalOptions{})
	require.NoError(t, err)
	require.Len(t, got, 3)
	assert.Equal(t, paths[1], got[1].Name)
	assert.NotEmpty(t, got[1].Err)
	assert.InDelta(t, preds[0].Score, got[0].Score, 1e-6)
	assert.InDelta(t, preds[1].Score, got[2].Score, 1e-6)
	assert.Zero(t, got[0].MOS)

	// Too few readable images is an error that still returns the predictions.
	small := *ds
	small.Samples = ds.Samples[1:3]
	_, preds, err = Evaluate(context.Background(), m, &small, method.EvalOptions{})
	require.Error(t, err)
	assert.Len(t, preds, 2)
}
