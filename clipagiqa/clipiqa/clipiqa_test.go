package clipiqa

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/clipagiqa/clipagiqa/clipagiqa/clip"
	"github.com/clipagiqa/clipagiqa/clipagiqa/method"
	"github.com/clipagiqa/clipagiqa/clipagiqa/tokenizer"
	"github.com/clipagiqa/clipagiqa/internal/ipiqaref"
	"github.com/clipagiqa/clipagiqa/internal/reffix"
	"github.com/clipagiqa/clipagiqa/torch"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// vitCLIP is the tiny ViT CLIP of the CLIP-AGIQA fixtures.
func vitCLIP(t testing.TB) (*clip.Model, *tokenizer.Tokenizer) {
	t.Helper()
	c, err := clip.Load(reffix.Path("tiny_clip_vit_fp16.pt"), clip.Options{})
	require.NoError(t, err)
	t.Cleanup(c.Close)
	tok, err := tokenizer.Default()
	require.NoError(t, err)
	return c, tok
}

func rnCLIP(t *testing.T) (*clip.Model, *tokenizer.Tokenizer) {
	t.Helper()
	c, err := clip.Load(ipiqaref.Path("tiny_clip_rn_fp16.pt"), clip.Options{})
	require.NoError(t, err)
	t.Cleanup(c.Close)
	require.True(t, c.Config.IsResNet())
	tok, err := tokenizer.Default()
	require.NoError(t, err)
	return c, tok
}

// clipIQARNRef is testdata/ipiqa-ref/clipiqa_rn.json, written by
// testdata/gen/make_ipiqa_clipiqa.py from the archive's traced graph.
type clipIQARNRef struct {
	Cos          [][]float64 `json:"cos"`
	Scores       []float64   `json:"scores"`
	FixturePairs struct {
		Pairs  [][2]string `json:"pairs"`
		Scores []float64   `json:"scores"`
	} `json:"fixture_pairs"`
}

func TestCLIPIQAScoresMatchReference(t *testing.T) {
	exp, err := reffix.Load()
	require.NoError(t, err)
	c, tok := vitCLIP(t)
	px, err := reffix.Pixels()
	require.NoError(t, err)
	live := torch.LiveTensors()
	s := torch.NewScope().WithGrad(torch.InferenceMode)
	pixels := s.FromFloat32(px.F32, px.Shape...)

	require.Equal(t, []string{"Good photo.", "Bad photo."}, exp.CLIPIQA.Prompts)
	got, err := Scores(s, c, tok, pixels, nil).Float32s()
	require.NoError(t, err)
	require.Len(t, got, len(exp.CLIPIQA.Scores))
	for i, w := range exp.CLIPIQA.Scores {
		assert.InDelta(t, w, float64(got[i]), 1e-5, "image %d", i)
	}
	// Averaging over pairs: a repeated pair changes nothing; the swapped
	// pair gives 1 - p; the average of both is 1/2.
	twice, err := Scores(s, c, tok, pixels, [][2]string{{"Good photo.", "Bad photo."}, {"Good photo.", "Bad photo."}}).Float32s()
	require.NoError(t, err)
	swapped, err := Scores(s, c, tok, pixels, [][2]string{{"Bad photo.", "Good photo."}}).Float32s()
	require.NoError(t, err)
	both, err := Scores(s, c, tok, pixels, [][2]string{{"Good photo.", "Bad photo."}, {"Bad photo.", "Good photo."}}).Float32s()
	require.NoError(t, err)
	for i, w := range exp.CLIPIQA.Scores {
		assert.InDelta(t, w, float64(twice[i]), 1e-5)
		assert.InDelta(t, 1-w, float64(swapped[i]), 1e-5)
		assert.InDelta(t, 0.5, float64(both[i]), 1e-6)
	}
	require.NoError(t, s.Err())
	s.Close()
	assert.Equal(t, live, torch.LiveTensors())

	// The file path: Predict on the fixture images.
	var paths []string
	for i := range 8 {
		paths = append(paths, reffix.Path("img_"+string(rune('0'+i))+".png"))
	}
	preds, err := Predict(context.Background(), c, tok, nil, paths, method.EvalOptions{})
	require.NoError(t, err)
	for i, w := range exp.CLIPIQA.Scores {
		require.Empty(t, preds[i].Err)
		assert.InDelta(t, w, preds[i].Score, 1e-5, "image %d", i)
		assert.Equal(t, filepath.Base(paths[i]), filepath.Base(preds[i].Name))
	}
}

// CLIP-IQA on a ResNet CLIP (the IP-IQA fixture's), against PyTorch running
// the archive's traced graph: atol 1e-5 on cos and scores.
func TestCLIPIQAOnResNetMatchesReference(t *testing.T) {
	b, err := os.ReadFile(ipiqaref.Path("clipiqa_rn.json"))
	require.NoError(t, err)
	var ref clipIQARNRef
	require.NoError(t, json.Unmarshal(b, &ref))
	c, tok := rnCLIP(t)
	px, err := ipiqaref.Pixels(224)
	require.NoError(t, err)
	live := torch.LiveTensors()
	s := torch.NewScope().WithGrad(torch.InferenceMode)
	pixels := s.FromFloat32(px, ipiqaref.Images, 3, 224, 224)

	text := textFeatures(s, c, tok, nil) // [1, 2, E], normalised
	img := s.Normalize(c.EncodeImage(s, pixels), -1)
	cos, err := s.MatMul(img, s.Transpose(s.Reshape(text, 2, -1), 0, 1)).Float32s()
	require.NoError(t, err)
	worst := ipiqaref.MaxAbs(cos, ipiqaref.Flatten(ref.Cos))
	t.Logf("cos(image, Good/Bad photo.): max abs err %.3g", worst)
	assert.LessOrEqual(t, worst, 1e-5)

	for _, c2 := range []struct {
		pairs [][2]string
		want  []float64
	}{{nil, ref.Scores}, {ref.FixturePairs.Pairs, ref.FixturePairs.Scores}} {
		got, err := Scores(s, c, tok, pixels, c2.pairs).Float32s()
		require.NoError(t, err)
		e := ipiqaref.MaxAbs(got, c2.want)
		t.Logf("CLIP-IQA scores (pairs %v): max abs err %.3g", c2.pairs, e)
		assert.LessOrEqual(t, e, 1e-5)
	}
	require.NoError(t, s.Err())
	s.Close()
	assert.Equal(t, live, torch.LiveTensors())

	// The file path: the 224×224 inputs go through CLIP's preprocessing
	// unchanged (resize to 224, centre crop 224).
	var paths []string
	for k := range ipiqaref.Images {
		paths = append(paths, ipiqaref.Path(fmt.Sprintf("resized/img_%d_224.png", k)))
	}
	preds, err := Predict(context.Background(), c, tok, ref.FixturePairs.Pairs, paths, method.EvalOptions{})
	require.NoError(t, err)
	for k, w := range ref.FixturePairs.Scores {
		require.Empty(t, preds[k].Err)
		assert.InDelta(t, w, preds[k].Score, 1e-5, "image %d", k)
	}
}
