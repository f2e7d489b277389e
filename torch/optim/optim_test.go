package optim

import (
	"math"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/clipagiqa/clipagiqa/torch"
	"github.com/clipagiqa/clipagiqa/torch/ptfile"
)

// tensor makes a leaf float32 tensor that requires grad, closed at cleanup.
func tensor(t *testing.T, vals []float32, shape ...int64) *torch.Tensor {
	t.Helper()
	x, err := torch.FromFloat32(vals, shape...)
	require.NoError(t, err)
	require.NoError(t, x.SetRequiresGrad(true))
	t.Cleanup(x.Close)
	return x
}

func twoParams(t *testing.T) []Param {
	return []Param{
		{Name: "layer.weight", T: tensor(t, []float32{1, -2, 3, -4}, 2, 2)},
		{Name: "layer.bias", T: tensor(t, []float32{0.5, -0.5}, 2)},
	}
}

func TestConstructorsRejectBadInput(t *testing.T) {
	closed, err := torch.FromFloat32([]float32{1}, 1)
	require.NoError(t, err)
	closed.Close()
	ps := twoParams(t)
	dup := []Param{ps[0], {Name: ps[0].Name, T: ps[1].T}}
	sgd := func(g []ParamGroup, o SGDOptions) error { _, err := NewSGD(g, o); return err }
	adam := func(g []ParamGroup, o AdamOptions) error { _, err := NewAdamW(g, o); return err }
	withBeta := func(b0, b1 float64) AdamOptions { o := AdamWDefaults(); o.Betas = [2]float64{b0, b1}; return o }
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"negative lr", sgd(Single(ps), SGDOptions{LR: -1}), "invalid learning rate"},
		{"nesterov without momentum", sgd(Single(ps), SGDOptions{LR: 1, Nesterov: true}), "Nesterov"},
		{"nesterov with dampening", sgd(Single(ps), SGDOptions{LR: 1, Momentum: 0.9, Dampening: 0.1, Nesterov: true}), "Nesterov"},
		{"negative weight decay", sgd(Single(ps), SGDOptions{LR: 1, WeightDecay: -1}), "weight decay"},
		{"duplicate name", sgd(Single(dup), SGDOptions{LR: 1}), "more than once"},
		{"unnamed", sgd(Single([]Param{{T: ps[0].T}}), SGDOptions{LR: 1}), "without a name"},
		{"closed tensor", sgd(Single([]Param{{Name: "x", T: closed}}), SGDOptions{LR: 1}), "nil or closed"},
		{"no parameters", sgd(Single(nil), SGDOptions{LR: 1}), "empty parameter list"},
		{"negative lr scale", sgd([]ParamGroup{{Params: ps, LRScale: -2}}, SGDOptions{LR: 1}), "lr scale"},
		{"negative group decay", sgd([]ParamGroup{{Params: ps, WeightDecay: Decay(-1)}}, SGDOptions{LR: 1}), "weight decay"},
		{"beta1 = 1", adam(Single(ps), withBeta(1, 0.999)), "index 0"},
		{"negative beta2", adam(Single(ps), withBeta(0.9, -0.1)), "index 1"},
		{"negative eps", adam(Single(ps), AdamOptions{LR: 1, Eps: -1}), "epsilon"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Error(t, tc.err)
			assert.Contains(t, tc.err.Error(), tc.want)
		})
	}
}

func TestGroupByNames(t *testing.T) {
	ps := []Param{
		{Name: "visual.conv1.weight", T: tensor(t, []float32{1}, 1)},
		{Name: "visual.bn1.weight", T: tensor(t, []float32{1}, 1)},
		{Name: "visual.bn1.bias", T: tensor(t, []float32{1}, 1)},
		{Name: "frozen.weight", T: tensor(t, []float32{1}, 1)},
		{Name: "head.weight", T: tensor(t, []float32{1}, 1)},
	}
	assign := func(n string) int {
		switch {
		case n == "frozen.weight":
			return -1
		case n == "head.weight":
			return 2
		case n == "visual.bn1.weight" || n == "visual.bn1.bias":
			return 1
		}
		return 0
	}
	groups, err := GroupBy(ps, assign, ParamGroup{}, ParamGroup{WeightDecay: Decay(0)}, ParamGroup{LRScale: 10}, ParamGroup{})
	require.NoError(t, err)
	require.Len(t, groups, 4, "empty groups are kept")
	var got [][]string
	for _, g := range groups {
		var ns []string
		for _, p := range g.Params {
			ns = append(ns, p.Name)
		}
		got = append(got, ns)
	}
	assert.Equal(t, [][]string{{"visual.conv1.weight"}, {"visual.bn1.weight", "visual.bn1.bias"}, {"head.weight"}, nil}, got)

	opt, err := NewAdamW(groups, AdamOptions{LR: 1e-3, Betas: [2]float64{0.9, 0.999}, Eps: 1e-8, WeightDecay: 0.05})
	require.NoError(t, err)
	defer opt.Close()
	assert.Equal(t, []float64{1e-3, 1e-3, 1e-2, 1e-3}, []float64{opt.LR(0), opt.LR(1), opt.LR(2), opt.LR(3)})
	assert.Equal(t, []float64{0.05, 0, 0.05, 0.05}, []float64{opt.Groups()[0].WeightDecay, opt.Groups()[1].WeightDecay,
		opt.Groups()[2].WeightDecay, opt.Groups()[3].WeightDecay})
	assert.Len(t, opt.Params(), 4, "the frozen tensor is left out")

	_, err = GroupBy(ps, func(string) int { return 7 }, ParamGroup{})
	require.ErrorContains(t, err, "visual.conv1.weight assigned to group 7 of 1")
}

// A parameter that backward did not reach is skipped and gets no state, as
// PyTorch skips parameters whose .grad is None.
func TestStepSkipsParametersWithoutGradient(t *testing.T) {
	for _, kind := range []string{"sgd", "adamw"} {
		t.Run(kind, func(t *testing.T) {
			ps := twoParams(t)
			var opt Optimizer
			var err error
			if kind == "sgd" {
				opt, err = NewSGD(Single(ps), SGDOptions{LR: 0.1, Momentum: 0.9})
			} else {
				opt, err = NewAdamW(Single(ps), AdamWDefaults())
			}
			require.NoError(t, err)
			defer opt.Close()
			s := torch.NewScope()
			loss := s.Sum(s.Mul(ps[0].T, ps[0].T), false) // bias untouched
			require.NoError(t, s.Err())
			require.NoError(t, loss.Backward())
			s.Close()
			require.NoError(t, opt.Step())
			w, _ := ps[0].T.Float32s()
			b, _ := ps[1].T.Float32s()
			assert.NotEqual(t, []float32{1, -2, 3, -4}, w, "weight stepped")
			assert.Equal(t, []float32{0.5, -0.5}, b, "bias without grad unchanged")
			sd, err := opt.StateDict()
			require.NoError(t, err)
			st, _ := sd.Get("state")
			keys := st.(*ptfile.Dict).Keys
			assert.Equal(t, []any{int64(0)}, keys, "state only for the stepped parameter")
		})
	}
}

// validSGD is an SGD with momentum after one step, and its state dict.
func validSGD(t *testing.T) (*SGD, []Param) {
	t.Helper()
	ps := twoParams(t)
	opt, err := NewSGD(Single(ps), SGDOptions{LR: 0.1, Momentum: 0.9})
	require.NoError(t, err)
	t.Cleanup(opt.Close)
	s := torch.NewScope()
	defer s.Close()
	loss := s.Add(s.Sum(s.Mul(ps[0].T, ps[0].T), false), s.Sum(ps[1].T, false))
	require.NoError(t, s.Err())
	require.NoError(t, loss.Backward())
	require.NoError(t, opt.Step())
	return opt, ps
}

func TestLoadStateDictRejectsMismatchesAndKeepsState(t *testing.T) {
	group := func(sd *ptfile.Dict) *ptfile.Dict {
		g, _ := sd.Get("param_groups")
		return g.([]any)[0].(*ptfile.Dict)
	}
	entry := func(sd *ptfile.Dict, i int64) *ptfile.Dict {
		st, _ := sd.Get("state")
		e, _ := st.(*ptfile.Dict).Get(i)
		return e.(*ptfile.Dict)
	}
	for _, tc := range []struct {
		name   string
		mutate func(sd *ptfile.Dict)
		want   string
	}{
		{"two groups", func(sd *ptfile.Dict) {
			g, _ := sd.Get("param_groups")
			sd.Set("param_groups", append(g.([]any), group(sd)))
		}, "2 parameter groups, the optimizer 1"},
		{"group size", func(sd *ptfile.Dict) { group(sd).Set("params", []any{int64(0)}) }, "has 1 parameters"},
		{"other names", func(sd *ptfile.Dict) { group(sd).Set("param_names", []any{"layer.bias", "layer.weight"}) }, "parameter 0 is layer.bias"},
		{"state of an unknown index", func(sd *ptfile.Dict) {
			st, _ := sd.Get("state")
			st.(*ptfile.Dict).Set(int64(9), ptfile.NewDict(ptfile.KindDict))
		}, "index 9"},
		{"buffer shape", func(sd *ptfile.Dict) {
			r, _ := ptfile.FromFloat32s(ptfile.Float32, []int64{3}, []float32{1, 2, 3})
			entry(sd, 0).Set("momentum_buffer", r)
		}, "has shape [3], the parameter [2 2]"},
		{"unknown state key", func(sd *ptfile.Dict) { entry(sd, 0).Set("exp_avg", nil) }, "unexpected state exp_avg"},
		{"nesterov without momentum", func(sd *ptfile.Dict) {
			group(sd).Set("nesterov", true)
			group(sd).Set("momentum", 0.0)
		}, "Nesterov"},
		{"lr not a number", func(sd *ptfile.Dict) { group(sd).Set("lr", "fast") }, "lr is a string"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opt, _ := validSGD(t)
			before, err := opt.MomentumBuffer("layer.weight")
			require.NoError(t, err)
			want, _ := before.Float32s()
			before.Close()
			sd, err := opt.StateDict()
			require.NoError(t, err)
			tc.mutate(sd)
			live := torch.LiveTensors()
			err = opt.LoadStateDict(sd)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
			assert.Equal(t, live, torch.LiveTensors(), "a failed load frees what it made")
			after, err := opt.MomentumBuffer("layer.weight")
			require.NoError(t, err)
			defer after.Close()
			got, _ := after.Float32s()
			assert.Equal(t, want, got, "state unchanged")
			assert.Equal(t, 0.1, opt.LR(0), "hyper-parameters unchanged")
		})
	}
}

func TestAdamRejectsAmsgradAndLoadsOldIntegerStep(t *testing.T) {
	ps := twoParams(t)
	opt, err := NewAdam(Single(ps), AdamDefaults())
	require.NoError(t, err)
	defer opt.Close()
	m, _ := ptfile.FromFloat32s(ptfile.Float32, []int64{2, 2}, []float32{1, 2, 3, 4})
	v, _ := ptfile.FromFloat32s(ptfile.Float32, []int64{2, 2}, []float32{1, 1, 1, 1})
	make := func(amsgrad bool) *ptfile.Dict {
		e := ptfile.NewDict(ptfile.KindDict)
		e.Set("step", int64(3)) // PyTorch < 1.12 kept a Python int
		e.Set("exp_avg", m)
		e.Set("exp_avg_sq", v)
		st := ptfile.NewDict(ptfile.KindDict)
		st.Set(int64(0), e)
		g := ptfile.NewDict(ptfile.KindDict)
		for _, kv := range []entry{{"lr", 0.01}, {"betas", ptfile.Tuple{0.9, 0.999}}, {"eps", 1e-8},
			{"weight_decay", 0.0}, {"amsgrad", amsgrad}, {"params", []any{int64(0), int64(1)}}} {
			g.Set(kv.key, kv.value)
		}
		return stateDictRoot(st, []any{g})
	}
	require.ErrorContains(t, opt.LoadStateDict(make(true)), "amsgrad=True is not supported")
	require.NoError(t, opt.LoadStateDict(make(false)))
	st, err := opt.State("layer.weight")
	require.NoError(t, err)
	defer st.Close()
	assert.Equal(t, torch.Float32, st.Step.DType())
	assert.Empty(t, st.Step.Shape(), "step is a scalar")
	step, err := st.Step.Item()
	require.NoError(t, err)
	assert.Equal(t, 3.0, step)
	assert.Equal(t, 0.01, opt.LR(0))
	assert.Equal(t, 0.01, opt.InitialLR(0), "initial_lr defaults to lr")
	none, err := opt.State("layer.bias")
	require.NoError(t, err)
	assert.Nil(t, none.Step, "no state for a parameter the file has none for")
}

func TestSchedules(t *testing.T) {
	for _, tc := range []struct {
		name  string
		s     Schedule
		t     int
		want  float64
		exact bool
	}{
		{"constant", Constant{}, 17, 0.3, true},
		{"linear warm-up start", LinearWarmup{Steps: 4, StartFactor: 0.25}, 0, 0.075, true},
		{"linear warm-up middle", LinearWarmup{Steps: 4, StartFactor: 0.25}, 2, 0.3 * 0.625, true},
		{"linear warm-up done", LinearWarmup{Steps: 4, StartFactor: 0.25}, 4, 0.3, true},
		{"cosine at warm-up end", WarmupCosine{Warmup: 2, StartFactor: 0.1, Total: 10, MinLR: 0.01}, 2, 0.3, true},
		{"cosine halfway", WarmupCosine{Warmup: 2, StartFactor: 0.1, Total: 10, MinLR: 0.01}, 6, 0.155, false},
		{"cosine end", WarmupCosine{Warmup: 2, StartFactor: 0.1, Total: 10, MinLR: 0.01}, 10, 0.01, true},
		{"cosine stays at min", WarmupCosine{Warmup: 2, StartFactor: 0.1, Total: 10, MinLR: 0.01}, 50, 0.01, true},
		// The official run's lr after 100 epochs (clip-agiqa-ref history):
		// warm-up 1 epoch at 1e-5, then cosine with T_max 100 at clock 99.
		{"official CLIP-AGIQA", ConstantWarmupCosine{Warmup: 1, WarmupLR: 1e-5, TMax: 100}, 100, 4.934396342684e-07 / 0.002 * 0.3, false},
		{"official warm-up", ConstantWarmupCosine{Warmup: 1, WarmupLR: 1e-5, TMax: 100}, 0, 1e-5, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.s.LR(0.3, tc.t)
			if tc.exact {
				assert.Equal(t, tc.want, got)
			} else {
				assert.InDelta(t, tc.want, got, 1e-12*math.Abs(tc.want))
			}
		})
	}
	assert.InDelta(t, 4.934396342684e-07, ConstantWarmupCosine{Warmup: 1, WarmupLR: 1e-5, TMax: 100}.LR(0.002, 100), 1e-15)
	assert.Equal(t, 7, PerEpoch.Tick(7, 10, 3))
	assert.Equal(t, 73, PerStep.Tick(7, 10, 3))

	ps := twoParams(t)
	opt, err := NewSGD([]ParamGroup{{Params: ps[:1]}, {Params: ps[1:], LRScale: 10}}, SGDOptions{LR: 0.1})
	require.NoError(t, err)
	Apply(opt, LinearWarmup{Steps: 2, StartFactor: 0.5}, 0)
	assert.Equal(t, []float64{0.05, 0.5}, []float64{opt.LR(0), opt.LR(1)}, "each group from its own initial lr")
	assert.Equal(t, []float64{0.1, 1}, []float64{opt.InitialLR(0), opt.InitialLR(1)})
}

// storeParam has torch/nn's NamedParam layout.
type storeParam struct {
	Name string
	T    *torch.Tensor
}

func TestNamedConvertsStoreParams(t *testing.T) {
	w := tensor(t, []float32{1, 2}, 2)
	ps := Named([]storeParam{{Name: "fc.weight", T: w}})
	require.Len(t, ps, 1)
	assert.Equal(t, "fc.weight", ps[0].Name)
	assert.Same(t, w, ps[0].T)
}
