package clipagiqa

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"testing"

	"github.com/clipagiqa/clipagiqa/clipagiqa/clip"
	"github.com/clipagiqa/clipagiqa/clipagiqa/tokenizer"
	"github.com/clipagiqa/clipagiqa/internal/ipiqaref"
	"github.com/clipagiqa/clipagiqa/torch"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

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

	text := clipIQAText(s, c, tok, nil) // [1, 2, E], normalised
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
		got, err := CLIPIQAScores(s, c, tok, pixels, c2.pairs).Float32s()
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
	preds, err := PredictCLIPIQA(context.Background(), c, tok, ref.FixturePairs.Pairs, paths, EvalOptions{})
	require.NoError(t, err)
	for k, w := range ref.FixturePairs.Scores {
		require.Empty(t, preds[k].Err)
		assert.InDelta(t, w, preds[k].Score, 1e-5, "image %d", k)
	}
}

// CLIP-AGIQA runs on a ResNet backbone: its scores use the ResNet's image
// features (the official ones give the same head output), and a training
// step moves the prompt context.
func TestCLIPAGIQAOnResNet(t *testing.T) {
	exp, err := ipiqaref.Load()
	require.NoError(t, err)
	c, tok := rnCLIP(t)
	require.NoError(t, torch.ManualSeed(3))
	m, err := New(c, tok, DefaultConfig())
	require.NoError(t, err)
	defer m.Close()
	px, err := ipiqaref.Pixels(224)
	require.NoError(t, err)

	s := torch.NewScope().WithGrad(torch.InferenceMode)
	defer s.Close()
	out := m.Forward(s, s.FromFloat32(px, ipiqaref.Images, 3, 224, 224), false)
	require.NoError(t, s.Err())
	got, err := out.Float32s()
	require.NoError(t, err)
	official := s.FromFloat32(toF32(ipiqaref.Flatten(exp.Image2Prompt.VisualOutputEvalBefore)), ipiqaref.Images, 64)
	want, err := m.Head(s, s.Normalize(official, -1), m.TextFeatures(s), false).Float64s()
	require.NoError(t, err)
	e := ipiqaref.MaxAbs(got, want)
	t.Logf("CLIP-AGIQA scores on RN vs head(official RN features): max abs err %.3g", e)
	assert.LessOrEqual(t, e, 1e-5)

	opt, err := NewOptimizer(m, 0.002, 0.9, 5e-4)
	require.NoError(t, err)
	defer opt.Close()
	before, err := m.Ctx.Float32s()
	require.NoError(t, err)
	mos := []float32{1, 2, 3, 4, 5, 1.5, 2.5, 3.5}
	g := torch.NewScope()
	defer g.Close()
	feats := g.Normalize(g.FromFloat32(toF32(ipiqaref.Flatten(exp.Image2Prompt.VisualOutputEvalBefore)), ipiqaref.Images, 64), -1)
	loss, err := m.TrainStep(opt, feats, mos)
	require.NoError(t, err)
	assert.False(t, math.IsNaN(loss) || math.IsInf(loss, 0))
	after, err := m.Ctx.Float32s()
	require.NoError(t, err)
	assert.NotEqual(t, before, after)
}

func toF32(v []float64) []float32 {
	out := make([]float32, len(v))
	for i, x := range v {
		out[i] = float32(x)
	}
	return out
}
