package optim

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/clipagiqa/clipagiqa/torch"
	"github.com/clipagiqa/clipagiqa/torch/ptfile"
)

// Reference trajectories of PyTorch 1.13's torch.optim, written by
// testdata/gen/make_ref.py. The update is the same ATen ops in the same
// order, so on the libtorch the references came from (1.13) parameters and
// state must agree to the bit (a wrong op order shows as 1-4 ulps); on other
// libtorch versions the stated tolerance is paramAtol (max abs) and maxUlps.
// The tests log the measured figures.
const (
	paramAtol = 1e-6
	maxUlps   = 4
)

// check asserts d within the tolerance for this libtorch.
func (d diff) check(t *testing.T, what string) {
	t.Helper()
	assert.LessOrEqual(t, d.maxAbs, paramAtol, what)
	assert.LessOrEqual(t, d.maxUlps, int64(maxUlps), what)
	if strings.HasPrefix(torch.TorchVersion(), "1.13.") {
		assert.Zero(t, d.differ, "%s: values not bit-identical to PyTorch %s", what, torch.TorchVersion())
	}
}

// lrRtol bounds schedule values against PyTorch's recursive schedulers.
const lrRtol = 1e-12

type refSchedule struct {
	Kind        string  `json:"kind"`
	Warmup      int     `json:"warmup"`
	StartFactor float64 `json:"start_factor"`
	Total       int     `json:"total"`
	MinLR       float64 `json:"min_lr"`
}

type refStep struct {
	LRs    []float64            `json:"lrs"`
	Params map[string][]float64 `json:"params"`
}

type refCase struct {
	Case struct {
		Cls      string         `json:"cls"`
		Kw       map[string]any `json:"kw"`
		Groups   [][]*float64   `json:"groups"`
		Schedule *refSchedule   `json:"schedule"`
	} `json:"case"`
	Grads          []map[string][]float64 `json:"grads"`
	Steps          []refStep              `json:"steps"`
	FinalStateDict map[string]any         `json:"final_state_dict"`
}

type refFile struct {
	Torch    string               `json:"torch"`
	Steps    int                  `json:"steps"`
	ResumeAt int                  `json:"resume_at"`
	Shapes   map[string][]int64   `json:"shapes"`
	Initial  map[string][]float64 `json:"initial"`
	Cases    map[string]refCase   `json:"cases"`
}

// names is make_ref.py's parameter order.
var names = []string{"encoder.weight", "encoder.bias", "norm.weight", "norm.bias", "head.weight", "head.bias"}

// caseNames are make_ref.py's cases, in its order.
var caseNames = []string{"sgd", "sgd_momentum_wd", "sgd_nesterov_groups", "sgd_momentum_groups_cosine",
	"adam", "adam_groups", "adamw", "adamw_groups_warmup_cosine", "adam_maximize_linear_warmup"}

func loadRef(t *testing.T) *refFile {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "ref.json"))
	require.NoError(t, err)
	var r refFile
	require.NoError(t, json.Unmarshal(b, &r))
	require.Len(t, r.Cases, len(caseNames))
	return &r
}

// groupOf is make_ref.py's group_of: IP-IQA's split by name.
func groupOf(name string) int {
	switch {
	case len(name) > 5 && name[:5] == "head.":
		return 2
	case filepath.Ext(name) == ".bias" || name[:5] == "norm.":
		return 1
	}
	return 0
}

func newParams(t *testing.T, r *refFile, values map[string][]float64) []Param {
	t.Helper()
	ps := make([]Param, len(names))
	for i, n := range names {
		ts, err := torch.FromFloat32(f32(values[n]), r.Shapes[n]...)
		require.NoError(t, err)
		require.NoError(t, ts.SetRequiresGrad(true))
		ps[i] = Param{Name: n, T: ts}
	}
	t.Cleanup(func() {
		for _, p := range ps {
			p.T.Close()
		}
	})
	return ps
}

func f32(v []float64) []float32 {
	out := make([]float32, len(v))
	for i, x := range v {
		out[i] = float32(x)
	}
	return out
}

func num(kw map[string]any, k string) float64 {
	f, _ := kw[k].(float64)
	return f
}

func build(t *testing.T, c refCase, ps []Param) (Optimizer, Schedule) {
	t.Helper()
	groups := Single(ps)
	if c.Case.Groups != nil {
		specs := make([]ParamGroup, len(c.Case.Groups))
		for i, g := range c.Case.Groups {
			specs[i] = ParamGroup{LRScale: *g[0], WeightDecay: g[1]}
		}
		var err error
		groups, err = GroupBy(ps, groupOf, specs...)
		require.NoError(t, err)
	}
	kw := c.Case.Kw
	var opt Optimizer
	var err error
	switch c.Case.Cls {
	case "SGD":
		nest, _ := kw["nesterov"].(bool)
		opt, err = NewSGD(groups, SGDOptions{LR: num(kw, "lr"), Momentum: num(kw, "momentum"),
			Dampening: num(kw, "dampening"), WeightDecay: num(kw, "weight_decay"), Nesterov: nest})
	case "Adam", "AdamW":
		o := AdamDefaults()
		if c.Case.Cls == "AdamW" {
			o = AdamWDefaults()
		}
		o.LR = num(kw, "lr")
		if b, ok := kw["betas"].([]any); ok {
			o.Betas = [2]float64{b[0].(float64), b[1].(float64)}
		}
		if v, ok := kw["eps"].(float64); ok {
			o.Eps = v
		}
		if v, ok := kw["weight_decay"].(float64); ok {
			o.WeightDecay = v
		}
		o.Maximize, _ = kw["maximize"].(bool)
		if c.Case.Cls == "AdamW" {
			opt, err = NewAdamW(groups, o)
		} else {
			opt, err = NewAdam(groups, o)
		}
	default:
		t.Fatalf("unknown optimizer %s", c.Case.Cls)
	}
	require.NoError(t, err)
	t.Cleanup(opt.Close)
	var sched Schedule
	if s := c.Case.Schedule; s != nil {
		switch s.Kind {
		case "linear_warmup":
			sched = LinearWarmup{Steps: s.Warmup, StartFactor: s.StartFactor}
		case "warmup_cosine":
			sched = WarmupCosine{Warmup: s.Warmup, StartFactor: s.StartFactor, Total: s.Total, MinLR: s.MinLR}
		default:
			t.Fatalf("unknown schedule %s", s.Kind)
		}
	}
	return opt, sched
}

// setGrads makes each parameter's gradient exactly g[name], by backward of
// Σ sum(p ⊙ g) (the product's gradient is 1·g).
func setGrads(t *testing.T, r *refFile, ps []Param, g map[string][]float64) {
	t.Helper()
	s := torch.NewScope()
	defer s.Close()
	var loss *torch.Tensor
	for _, p := range ps {
		term := s.Sum(s.Mul(p.T, s.FromFloat32(f32(g[p.Name]), r.Shapes[p.Name]...)), false)
		if loss == nil {
			loss = term
		} else {
			loss = s.Add(loss, term)
		}
	}
	require.NoError(t, s.Err())
	require.NoError(t, loss.Backward())
}

// diff is the largest absolute difference and the number of values that
// differ at all.
type diff struct {
	maxAbs  float64
	differ  int
	values  int
	maxUlps int64
}

func (d *diff) add(want []float64, got []float32) {
	for i, w := range want {
		a := math.Abs(float64(got[i]) - w)
		d.maxAbs = max(d.maxAbs, a)
		if float32(w) != got[i] {
			d.differ++
			u := int64(math.Float32bits(float32(w))) - int64(math.Float32bits(got[i]))
			d.maxUlps = max(d.maxUlps, u, -u)
		}
		d.values++
	}
}

func (d *diff) merge(o diff) {
	d.maxAbs, d.maxUlps = max(d.maxAbs, o.maxAbs), max(d.maxUlps, o.maxUlps)
	d.differ += o.differ
	d.values += o.values
}

func (d diff) String() string {
	return fmt.Sprintf("max abs %.3g, %d of %d values differ, max %d ulps", d.maxAbs, d.differ, d.values, d.maxUlps)
}

// runSteps runs steps [from, to) of case c and compares lrs and parameters.
func runSteps(t *testing.T, r *refFile, c refCase, opt Optimizer, sched Schedule, ps []Param, from, to int) diff {
	t.Helper()
	var d diff
	for k := from; k < to; k++ {
		if sched != nil {
			Apply(opt, sched, k)
		}
		want := c.Steps[k]
		require.Equal(t, len(want.LRs), opt.NumGroups())
		for g, lr := range want.LRs {
			assert.InDelta(t, lr, opt.LR(g), lrRtol*math.Abs(lr)+1e-18, "step %d group %d lr", k, g)
		}
		setGrads(t, r, ps, c.Grads[k])
		require.NoError(t, opt.Step())
		require.NoError(t, opt.ZeroGrad())
		for _, p := range ps {
			got, err := p.T.Float32s()
			require.NoError(t, err)
			d.add(want.Params[p.Name], got)
		}
	}
	return d
}

func TestMatchesPyTorchOverSteps(t *testing.T) {
	r := loadRef(t)
	for _, name := range caseNames {
		t.Run(name, func(t *testing.T) {
			c := r.Cases[name]
			ps := newParams(t, r, r.Initial)
			opt, sched := build(t, c, ps)
			d := runSteps(t, r, c, opt, sched, ps, 0, 1)
			live := torch.LiveTensors() // the first step made the state
			d.merge(runSteps(t, r, c, opt, sched, ps, 1, r.Steps))
			assert.Equal(t, live, torch.LiveTensors(), "later steps keep no tensors")
			t.Logf("%s, %d steps: %v", name, r.Steps, d)
			d.check(t, "parameters after each step")
			if sched != nil {
				Apply(opt, sched, r.Steps) // PyTorch's scheduler stepped after the last step
			}
			checkStateDict(t, c.FinalStateDict, opt)
		})
	}
}

// checkStateDict compares opt's state dict with the one PyTorch wrote
// (through JSON: tensors as {shape, dtype, values}).
func checkStateDict(t *testing.T, want map[string]any, opt Optimizer) {
	t.Helper()
	sd, err := opt.StateDict()
	require.NoError(t, err)
	wg := want["param_groups"].([]any)
	gg, _ := sd.Get("param_groups")
	got := gg.([]any)
	require.Len(t, got, len(wg))
	for i := range wg {
		w, g := wg[i].(map[string]any), got[i].(*ptfile.Dict)
		for k, wv := range w {
			if k == "foreach" { // the reference passed foreach=False; we write PyTorch's default None
				continue
			}
			gv, ok := g.Get(k)
			require.True(t, ok, "group %d lacks %s", i, k)
			switch wv := wv.(type) {
			case float64:
				f, ok := asFloat(gv)
				require.True(t, ok, "group %d %s is %T", i, k, gv)
				assert.InDelta(t, wv, f, lrRtol*math.Abs(wv)+1e-18, "group %d %s", i, k)
			case bool:
				assert.Equal(t, wv, gv, "group %d %s", i, k)
			case []any:
				l, ok := asList(gv)
				require.True(t, ok, "group %d %s is %T", i, k, gv)
				require.Len(t, l, len(wv), "group %d %s", i, k)
				for j := range wv {
					f, _ := asFloat(l[j])
					assert.Equal(t, wv[j], f, "group %d %s[%d]", i, k, j)
				}
			default:
				t.Fatalf("group %d %s: unexpected %T", i, k, wv)
			}
		}
	}
	ws := want["state"].(map[string]any)
	gs, _ := sd.Get("state")
	st := gs.(*ptfile.Dict)
	require.Equal(t, len(ws), st.Len(), "state entries")
	var d diff
	for k, wv := range ws {
		var idx int64
		_, err := fmt.Sscan(k, &idx)
		require.NoError(t, err)
		ge, ok := st.Get(idx)
		require.True(t, ok, "no state for %d", idx)
		we := wv.(map[string]any)
		gd := ge.(*ptfile.Dict)
		require.Equal(t, len(we), gd.Len(), "state %d keys", idx)
		for key, v := range we {
			g, ok := gd.Get(key)
			require.True(t, ok, "state %d lacks %s", idx, key)
			if v == nil {
				assert.Nil(t, g, "state %d %s", idx, key)
				continue
			}
			wt := v.(map[string]any)
			gt := g.(*ptfile.Tensor)
			assert.Equal(t, "torch.float32", wt["dtype"])
			assert.Equal(t, ptfile.Float32, gt.DType, "state %d %s dtype", idx, key)
			ws := wt["shape"].([]any)
			require.Len(t, gt.Shape, len(ws), "state %d %s shape", idx, key)
			vals, err := gt.Float32s()
			require.NoError(t, err)
			wvals := make([]float64, len(vals))
			for i, x := range wt["values"].([]any) {
				wvals[i] = x.(float64)
			}
			d.add(wvals, vals)
		}
	}
	t.Logf("final state: %v", d)
	d.check(t, "state tensors")
}
