package ipiqatrain

import (
	"context"
	"math"
	"path/filepath"
	"testing"

	"github.com/clipagiqa/clipagiqa/clipagiqa/train"
	"github.com/clipagiqa/clipagiqa/torch"
	"github.com/clipagiqa/clipagiqa/torch/optim"
	"github.com/clipagiqa/clipagiqa/torch/ptfile"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestMixedPrecisionChoices(t *testing.T) {
	ac, sc, err := MixedPrecision(torch.Float32)
	require.NoError(t, err)
	assert.Zero(t, ac)
	assert.Nil(t, sc)
	ac, sc, err = MixedPrecision(torch.Float16)
	require.NoError(t, err)
	assert.Equal(t, torch.Float16, ac)
	require.NotNil(t, sc, "fp16 needs a loss scaler")
	assert.Equal(t, 65536.0, sc.Scale())
	ac, sc, err = MixedPrecision(torch.BFloat16)
	require.NoError(t, err)
	assert.Equal(t, torch.BFloat16, ac)
	assert.Nil(t, sc, "bf16 has fp32's range: no scaler")
	_, _, err = MixedPrecision(torch.Float64)
	assert.Error(t, err)
}

// The loss scaler through the trainer on the fixture (CPU, fp32, where
// scaling by a power of two is exact): a scale of 2^127 overflows the
// gradients, so epoch 1's step is skipped (weights and AdamW untouched)
// and the scale backs off to 2^27; epoch 2's step then lands where the
// official code's first step does. The checkpoints carry the scaler
// state, and a resumed run restores it.
func TestScalerSkipsOverflowAndMatchesOfficialStep(t *testing.T) {
	f := loadFixture(t)
	out := t.TempDir()
	a, m := fixtureModel(t, f)
	sc, err := optim.NewGradScalerWith(math.Ldexp(1, 127), 2, math.Ldexp(1, -100), 2000)
	require.NoError(t, err)
	a.opts.Scaler = sc
	cfg := fixtureConfig(t, m, out, 2)
	cfg.Scaler = sc
	before := values(t, m.Store().Get("head.dense.weight"))
	var losses, scales []float64
	var weights [][]float32
	cb := train.Callbacks{
		OnStep: func(s train.StepInfo) { losses = append(losses, s.Loss) },
		OnEpoch: func(train.EpochReport) {
			scales = append(scales, sc.Scale())
			weights = append(weights, values(t, m.Store().Get("head.dense.weight")))
		}}
	_, err = train.Run(context.Background(), a, cfg, cb)
	require.NoError(t, err)
	require.Len(t, losses, 2)
	assert.Equal(t, []float64{math.Ldexp(1, 27), math.Ldexp(1, 27)}, scales, "backoff after the overflow, then one clean step")
	assert.Equal(t, int64(1), sc.GrowthTracker())
	assert.Equal(t, before, weights[0], "the overflowing step is skipped")
	for i, l := range losses { // the reported loss is the unscaled one
		want := f.Train.Steps[0].Loss
		assert.InDelta(t, want, l, lossRtol*want, "step %d", i+1)
	}
	worst := 0.0
	for name, want := range f.Train.Steps[0].ParamsAfter {
		r, what := want.Compare(values(t, m.Store().Get(name)), paramAtol)
		worst = math.Max(worst, r)
		assert.LessOrEqual(t, r, 1.0, "param %s: %s", name, what)
	}
	t.Logf("%d parameters after the scaled step vs the official first step: worst %.3g of tolerance %.0g", len(f.Train.Steps[0].ParamsAfter), worst, paramAtol)
	st, err := cfg.Optimizer.(*optim.Adam).State("head.dense.weight")
	require.NoError(t, err)
	step, err := st.Step.Item()
	st.Close()
	require.NoError(t, err)
	assert.Equal(t, 1.0, step, "AdamW counted only the step taken")

	ck, err := ptfile.Load(filepath.Join(out, "checkpoint_1.pth"))
	require.NoError(t, err)
	got, err := ptfile.GetFloat(ck.Root, "scaler", "scale")
	require.NoError(t, err)
	assert.Equal(t, math.Ldexp(1, 27), got)
	tracker, err := ptfile.GetInt(ck.Root, "scaler", "_growth_tracker")
	require.NoError(t, err)
	assert.Equal(t, int64(1), tracker)

	// Resume: a fresh default scaler takes the saved state.
	a2, m2 := fixtureModel(t, f)
	sc2 := optim.NewGradScaler()
	a2.opts.Scaler = sc2
	cfg2 := fixtureConfig(t, m2, out, 2)
	cfg2.Scaler, cfg2.Resume = sc2, true
	res, err := train.Run(context.Background(), a2, cfg2, train.Callbacks{})
	require.NoError(t, err)
	assert.True(t, res.Resumed)
	assert.Equal(t, math.Ldexp(1, 27), sc2.Scale())
	assert.Equal(t, int64(1), sc2.GrowthTracker())
}

// Without a scaler the checkpoint's "scaler" stays None (the official
// layout), and an fp16 run resuming such a checkpoint keeps its fresh
// scaler.
func TestScalerNoneWithoutFP16(t *testing.T) {
	f := loadFixture(t)
	out := t.TempDir()
	a, _ := fixtureModel(t, f)
	require.NoError(t, a.SaveCheckpoint(filepath.Join(out, "c.pth"), nil, nil, 0))
	ck, err := ptfile.Load(filepath.Join(out, "c.pth"))
	require.NoError(t, err)
	v, err := ptfile.Get(ck.Root, "scaler")
	require.NoError(t, err)
	assert.Nil(t, v)
	a.opts.Scaler = optim.NewGradScaler()
	_, _, err = a.LoadCheckpoint(filepath.Join(out, "c.pth"), nil)
	require.NoError(t, err)
	assert.Equal(t, 65536.0, a.opts.Scaler.Scale())
}
