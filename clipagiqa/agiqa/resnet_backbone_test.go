package agiqa

import (
	"math"
	"testing"

	"github.com/clipagiqa/clipagiqa/clipagiqa/clip"
	"github.com/clipagiqa/clipagiqa/clipagiqa/tokenizer"
	"github.com/clipagiqa/clipagiqa/internal/ipiqaref"
	"github.com/clipagiqa/clipagiqa/torch"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

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
