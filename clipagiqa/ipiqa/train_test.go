package ipiqa

import (
	"encoding/json"
	"math"
	"runtime"
	"strings"
	"testing"

	"github.com/clipagiqa/clipagiqa/clipagiqa/clip"
	"github.com/clipagiqa/clipagiqa/internal/ipiqaref"
	"github.com/clipagiqa/clipagiqa/torch"
	"github.com/clipagiqa/clipagiqa/torch/optim"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// newFixtureOptimizer is the official Trainer.optimizer: AdamW over
// get_optimizer_params(weight_decay=0, lr_scale=1) with head_scale 10,
// lr 1e-5.
func newFixtureOptimizer(t *testing.T, m *Model) *optim.Adam {
	t.Helper()
	opts := optim.AdamWDefaults()
	opts.LR, opts.WeightDecay = 1e-5, 0
	opt, err := optim.NewAdamW(m.ParamGroups(10, 0), opts)
	require.NoError(t, err)
	t.Cleanup(opt.Close)
	return opt
}

func fixtureTargets(t *testing.T, s *torch.Scope, f *fixture) *torch.Tensor {
	t.Helper()
	flat := ipiqaref.Flatten(f.Train.TargetsScore)
	v := make([]float32, len(flat))
	for i, x := range flat {
		v[i] = float32(x)
	}
	return s.FromFloat32(v, int64(len(f.Train.TargetsScore)), 2)
}

// trainStep is one official iteration: train-mode forward, MSE loss,
// backward, AdamW step, zero_grad. check sees the gradients before the step.
func trainStep(t *testing.T, m *Model, opt *optim.Adam, f *fixture, check func(loss float64, outputs []float32)) {
	t.Helper()
	// One OS thread for forward and backward, as train.Run: autograd's
	// order (and so the last bits of sums) follows per-thread counters.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	s := torch.NewScope()
	defer s.Close()
	px, ids := fixtureInputs(t, s, f)
	scores := m.ForwardIDs(s, px, ids, true).Scores
	loss := s.MSELoss(scores, fixtureTargets(t, s, f))
	require.NoError(t, s.Err())
	require.NoError(t, loss.Backward())
	l, err := loss.Item()
	require.NoError(t, err)
	if check != nil {
		check(l, values(t, scores))
	}
	require.NoError(t, opt.Step())
	require.NoError(t, opt.ZeroGrad())
}

func gradValues(t *testing.T, x *torch.Tensor) []float32 {
	t.Helper()
	g, err := x.Grad()
	require.NoError(t, err)
	defer g.Close()
	return values(t, g)
}

func TestTwoAdamWStepsMatchOfficial(t *testing.T) {
	f := loadFixture(t)
	m := newFixtureModel(t, 2)
	opt := newFixtureOptimizer(t, m)
	for step := range 2 {
		ref := f.Train.Steps[step]
		trainStep(t, m, opt, f, func(loss float64, out []float32) {
			assert.InDelta(t, ref.Loss, loss, lossRtol*ref.Loss, "step %d loss", step)
			t.Logf("step %d: loss %.9g (official %.9g, rel err %.2g)", step+1, loss, ref.Loss, math.Abs(loss-ref.Loss)/ref.Loss)
			e := ipiqaref.MaxAbs(out, ipiqaref.Flatten(ref.OutputsTrainMode))
			t.Logf("step %d: train-mode outputs max abs err %.3g (tolerance %.3g)", step+1, e, outputAtol)
			assert.LessOrEqual(t, e, outputAtol)
			worst, worstName := 0.0, ""
			for _, p := range m.Store().Trainable() {
				want, ok := ref.Grads[p.Name]
				require.True(t, ok, p.Name)
				tol := gradRel * math.Max(-want.Min, want.Max)
				if strings.HasSuffix(p.Name, "k_proj.bias") {
					tol = kBiasAtol
				}
				g := gradValues(t, p.T)
				r, what := want.Compare(g, tol)
				if r > worst {
					worst, worstName = r, p.Name+" "+what
				}
				assert.LessOrEqual(t, r, 1.0, "step %d grad %s: %s", step+1, p.Name, what)
				if p.Name == "wte.weight" {
					assert.Equal(t, ref.WTEGradRows, nonZeroRows(g, p.T.Shape()[1]), "step %d: token-embedding rows with gradient", step+1)
				}
			}
			t.Logf("step %d: gradients of %d tensors, worst %.3g of tolerance (%s)", step+1, len(ref.Grads), worst, worstName)
		})
		worst, worstName := 0.0, ""
		for name, want := range ref.ParamsAfter {
			r, what := want.Compare(values(t, m.Store().Get(name)), paramAtol)
			if r > worst {
				worst, worstName = r, name+" "+what
			}
			assert.LessOrEqual(t, r, 1.0, "step %d param %s: %s", step+1, name, what)
		}
		t.Logf("step %d: %d parameters after, worst %.3g of tolerance (%s)", step+1, len(ref.ParamsAfter), worst, worstName)
	}

	// Adam's state after the two steps.
	worstM, worstV := 0.0, 0.0
	for _, p := range m.Store().Trainable() {
		want, ok := f.Train.AdamStateAfter[p.Name]
		require.True(t, ok, p.Name)
		st, err := opt.State(p.Name)
		require.NoError(t, err)
		step, err := st.Step.Item()
		require.NoError(t, err)
		assert.Equal(t, want.Step, step, p.Name)
		// exp_avg is a gradient average: the gradient tolerance; exp_avg_sq
		// is squared, so twice the relative error.
		tolM := gradRel * math.Max(-want.ExpAvg.Min, want.ExpAvg.Max)
		tolV := 2 * gradRel * want.ExpAvgSq.Max
		if strings.HasSuffix(p.Name, "k_proj.bias") { // rounding noise of a zero gradient
			tolM, tolV = kBiasAtol, kBiasAtol*kBiasAtol
		}
		r, what := want.ExpAvg.Compare(values(t, st.ExpAvg), tolM)
		worstM = math.Max(worstM, r)
		assert.LessOrEqual(t, r, 1.0, "exp_avg %s: %s", p.Name, what)
		r, what = want.ExpAvgSq.Compare(values(t, st.ExpAvgSq), tolV)
		worstV = math.Max(worstV, r)
		assert.LessOrEqual(t, r, 1.0, "exp_avg_sq %s: %s", p.Name, what)
		st.Close()
	}
	t.Logf("Adam state of %d tensors: exp_avg worst %.3g, exp_avg_sq worst %.3g of tolerance", len(f.Train.AdamStateAfter), worstM, worstV)

	// BatchNorm running statistics after the two steps.
	worst := 0.0
	for layer, raw := range f.Train.BNRunningStatsAfter {
		var want struct {
			Mean    []float64 `json:"running_mean"`
			Var     []float64 `json:"running_var"`
			Tracked int64     `json:"num_batches_tracked"`
		}
		require.NoError(t, json.Unmarshal(raw, &want))
		for _, c := range []struct {
			name string
			want []float64
		}{{"running_mean", want.Mean}, {"running_var", want.Var}} {
			got := values(t, m.Store().Get(layer+"."+c.name))
			require.Len(t, got, len(c.want))
			for i, w := range c.want {
				r := math.Abs(float64(got[i])-w) / (runRelTol * math.Max(math.Abs(w), 1e-3))
				worst = math.Max(worst, r)
				assert.LessOrEqual(t, r, 1.0, "%s.%s[%d]: got %v want %v", layer, c.name, i, got[i], w)
			}
		}
		n, err := m.Store().Get(layer + ".num_batches_tracked").Item()
		require.NoError(t, err)
		assert.Equal(t, float64(want.Tracked), n, layer)
	}
	t.Logf("BatchNorm running stats of %d layers: worst %.3g of tolerance", len(f.Train.BNRunningStatsAfter), worst)

	s := torch.NewScope().WithGrad(torch.InferenceMode)
	defer s.Close()
	px, ids := fixtureInputs(t, s, f)
	got := values(t, m.ForwardIDs(s, px, ids, false).Scores)
	require.NoError(t, s.Err())
	e := ipiqaref.MaxAbs(got, ipiqaref.Flatten(f.Train.EvalAfter.Scores))
	t.Logf("eval scores after the steps: max abs err %.3g (tolerance %.3g)", e, afterAtol)
	assert.LessOrEqual(t, e, afterAtol)
}

// nonZeroRows lists the rows of a [R, cols] matrix with a non-zero entry.
func nonZeroRows(v []float32, cols int64) []int64 {
	var rows []int64
	for r := int64(0); r*cols < int64(len(v)); r++ {
		for _, x := range v[r*cols : (r+1)*cols] {
			if x != 0 {
				rows = append(rows, r)
				break
			}
		}
	}
	return rows
}

// Repeated training steps and eval passes free everything they allocate:
// after the first step (which creates Adam's state) the live tensor count
// stays flat.
func TestTrainingLoopKeepsLiveTensorsFlat(t *testing.T) {
	f := loadFixture(t)
	m := newFixtureModel(t, 2)
	opt := newFixtureOptimizer(t, m)
	var counts []int64
	for range 3 {
		trainStep(t, m, opt, f, nil)
		evalScores(t, m, f)
		counts = append(counts, torch.LiveTensors())
	}
	assert.Equal(t, counts[0], counts[1], "live tensors after steps 1..3: %v", counts)
	assert.Equal(t, counts[0], counts[2], "live tensors after steps 1..3: %v", counts)
}

// Close frees every tensor the model and its CLIP hold.
func TestCloseFreesEverything(t *testing.T) {
	f := loadFixture(t)
	before := torch.LiveTensors()
	c, err := clip.Load(ipiqaref.Path("tiny_clip_rn_fp16.pt"), clip.Options{})
	require.NoError(t, err)
	m, err := New(c, Options{})
	require.NoError(t, err)
	evalScores(t, m, f)
	assert.Greater(t, torch.LiveTensors(), before)
	m.Close()
	m.Close()
	assert.Equal(t, before, torch.LiveTensors())
}
