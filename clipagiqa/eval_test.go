package clipagiqa

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/clipagiqa/clipagiqa/clipagiqa/imageprep"
	"github.com/clipagiqa/clipagiqa/clipagiqa/metrics"
	"github.com/clipagiqa/clipagiqa/internal/reffix"
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

	rep, preds, err := Evaluate(context.Background(), m, ds, EvalOptions{BatchSize: 3, Workers: 2})
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
	got, err := Predict(context.Background(), m, paths, EvalOptions{})
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
	_, preds, err = Evaluate(context.Background(), m, &small, EvalOptions{})
	require.Error(t, err)
	assert.Len(t, preds, 2)
}

func TestCLIPIQAScoresMatchReference(t *testing.T) {
	exp, err := reffix.Load()
	require.NoError(t, err)
	c, tok := trCLIP(t)
	px, err := reffix.Pixels()
	require.NoError(t, err)
	live := torch.LiveTensors()
	s := torch.NewScope().WithGrad(torch.InferenceMode)
	pixels := s.FromFloat32(px.F32, px.Shape...)

	require.Equal(t, []string{"Good photo.", "Bad photo."}, exp.CLIPIQA.Prompts)
	got, err := CLIPIQAScores(s, c, tok, pixels, nil).Float32s()
	require.NoError(t, err)
	require.Len(t, got, len(exp.CLIPIQA.Scores))
	for i, w := range exp.CLIPIQA.Scores {
		assert.InDelta(t, w, float64(got[i]), 1e-5, "image %d", i)
	}
	// Averaging over pairs: a repeated pair changes nothing; the swapped
	// pair gives 1 - p; the average of both is 1/2.
	twice, err := CLIPIQAScores(s, c, tok, pixels, [][2]string{{"Good photo.", "Bad photo."}, {"Good photo.", "Bad photo."}}).Float32s()
	require.NoError(t, err)
	swapped, err := CLIPIQAScores(s, c, tok, pixels, [][2]string{{"Bad photo.", "Good photo."}}).Float32s()
	require.NoError(t, err)
	both, err := CLIPIQAScores(s, c, tok, pixels, [][2]string{{"Good photo.", "Bad photo."}, {"Bad photo.", "Good photo."}}).Float32s()
	require.NoError(t, err)
	for i, w := range exp.CLIPIQA.Scores {
		assert.InDelta(t, w, float64(twice[i]), 1e-5)
		assert.InDelta(t, 1-w, float64(swapped[i]), 1e-5)
		assert.InDelta(t, 0.5, float64(both[i]), 1e-6)
	}
	require.NoError(t, s.Err())
	s.Close()
	assert.Equal(t, live, torch.LiveTensors())

	// The file path: PredictCLIPIQA on the fixture images.
	var paths []string
	for i := range 8 {
		paths = append(paths, reffix.Path("img_"+string(rune('0'+i))+".png"))
	}
	preds, err := PredictCLIPIQA(context.Background(), c, tok, nil, paths, EvalOptions{})
	require.NoError(t, err)
	for i, w := range exp.CLIPIQA.Scores {
		require.Empty(t, preds[i].Err)
		assert.InDelta(t, w, preds[i].Score, 1e-5, "image %d", i)
		assert.Equal(t, filepath.Base(paths[i]), filepath.Base(preds[i].Name))
	}
}
