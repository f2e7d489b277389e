package benchkit

import (
	"testing"

	"github.com/clipagiqa/clipagiqa/clipagiqa"
	"github.com/clipagiqa/clipagiqa/clipagiqa/clip"
	"github.com/clipagiqa/clipagiqa/clipagiqa/tokenizer"
	"github.com/clipagiqa/clipagiqa/internal/reffix"
	"github.com/clipagiqa/clipagiqa/torch"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// trainSome runs steps SGD steps of CLIP-AGIQA (dropout off) on fixed image
// features and returns the losses and the learned context.
func trainSome(t *testing.T, fused bool, steps int) ([]float64, []float32) {
	t.Helper()
	cm, err := clip.Load(reffix.Path("tiny_clip_vit.pt"), clip.Options{})
	require.NoError(t, err)
	defer cm.Close()
	if fused {
		ok, err := cm.EnableFused()
		require.NoError(t, err)
		require.True(t, ok)
	}
	tok, err := tokenizer.Default()
	require.NoError(t, err)
	require.NoError(t, torch.ManualSeed(11))
	cfg := clipagiqa.DefaultConfig()
	cfg.Dropout = 0
	m, err := clipagiqa.New(cm, tok, cfg)
	require.NoError(t, err)
	defer m.Close()
	opt, err := clipagiqa.NewOptimizer(m, 0.05, 0.9, 5e-4)
	require.NoError(t, err)
	defer opt.Close()
	s := torch.NewScope().WithGrad(torch.NoGrad)
	defer s.Close()
	feats := s.Normalize(s.Randn(torch.Float32, 8, int64(cm.Config.EmbedDim)), -1)
	require.NoError(t, s.Err())
	mos := []float32{1, 2, 3, 4, 5, 2.5, 3.5, 4.5}
	var losses []float64
	for i := 0; i < steps; i++ {
		l, err := m.TrainStep(opt, feats, mos)
		require.NoError(t, err)
		losses = append(losses, l)
	}
	ctx, err := m.Ctx.Float32s()
	require.NoError(t, err)
	return losses, ctx
}

// Training with the fused text path (hand-written backward) follows the
// plain autograd path step for step.
func TestFusedTrainingMatchesPlain(t *testing.T) {
	l1, c1 := trainSome(t, false, 4)
	l2, c2 := trainSome(t, true, 4)
	for i := range l1 {
		assert.InDelta(t, l1[i], l2[i], 1e-5*l1[i], "step %d loss", i)
	}
	assert.Less(t, relErr(c2, toF64(c1)), 1e-5, "learned context")
	assert.NotEqual(t, l1[0], l1[len(l1)-1], "the steps train something")
}

func toF64(v []float32) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(x)
	}
	return out
}
