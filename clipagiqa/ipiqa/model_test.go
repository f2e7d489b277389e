package ipiqa

import (
	"encoding/json"
	"os"
	"testing"

	"github.com/clipagiqa/clipagiqa/clipagiqa/clip"
	"github.com/clipagiqa/clipagiqa/internal/ipiqaref"
	"github.com/clipagiqa/clipagiqa/torch"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Tolerances from testdata/ipiqa-ref/README.md ("Suggested tolerances").
const (
	textAtol   = 1e-5 // text features
	poolRel    = 2e-5 // global_visual, global_txt: × max abs
	scoreAtol  = 2e-5 // eval and out1 scores
	lossRtol   = 1e-6
	gradRel    = 5e-3 // × max abs of the tensor's gradient
	paramAtol  = 1e-5 // parameters after the steps
	afterAtol  = 5e-5 // scores after the steps
	runRelTol  = 1e-5 // BatchNorm running stats after
	kBiasAtol  = 1e-7 // k_proj.bias gradients (mathematically zero)
	outputAtol = 2e-5 // train-mode outputs
)

// fixture is the part of expected.json these tests read.
type fixture struct {
	Prompts []ipiqaref.Prompt `json:"prompts"`
	IPIQA   struct {
		Parameters []struct {
			Name         string  `json:"name"`
			Shape        []int64 `json:"shape"`
			RequiresGrad bool    `json:"requires_grad"`
		} `json:"parameters"`
		Buffers []struct {
			Name string `json:"name"`
		} `json:"buffers"`
	} `json:"ipiqa"`
	Eval struct {
		TextFeatures [][]float64 `json:"text_features"`
		GlobalVisual [][]float64 `json:"global_visual"`
		GlobalTxt    [][]float64 `json:"global_txt"`
		Scores       [][]float64 `json:"scores"`
	} `json:"eval"`
	Train struct {
		TargetsScore        [][]float64 `json:"targets_score"`
		TrainableParameters []string    `json:"trainable_parameters"`
		FrozenParameters    []string    `json:"frozen_parameters"`
		ParamGroups         []struct {
			Params      []string `json:"params"`
			WeightDecay float64  `json:"weight_decay"`
			LRScale     float64  `json:"lr_scale"`
		} `json:"param_groups"`
		Steps []struct {
			OutputsTrainMode [][]float64                 `json:"outputs_train_mode"`
			Loss             float64                     `json:"loss"`
			Grads            map[string]ipiqaref.Summary `json:"grads"`
			WTEGradRows      []int64                     `json:"wte_grad_nonzero_rows"`
			ParamsAfter      map[string]ipiqaref.Summary `json:"params_after"`
		} `json:"steps"`
		AdamStateAfter map[string]struct {
			Step     float64          `json:"step"`
			ExpAvg   ipiqaref.Summary `json:"exp_avg"`
			ExpAvgSq ipiqaref.Summary `json:"exp_avg_sq"`
		} `json:"adam_state_after"`
		BNRunningStatsAfter map[string]json.RawMessage `json:"bn_running_stats_after"`
		EvalAfter           struct {
			Scores [][]float64 `json:"scores"`
		} `json:"eval_after"`
	} `json:"train"`
	Out1 struct {
		Scores [][]float64 `json:"scores"`
	} `json:"out1"`
}

func loadFixture(t *testing.T) *fixture {
	t.Helper()
	b, err := os.ReadFile(ipiqaref.Path("expected.json"))
	require.NoError(t, err)
	var f fixture
	require.NoError(t, json.Unmarshal(b, &f))
	return &f
}

// newFixtureModel is the fixture's initial model: the tiny archive plus
// init_new_params(_out1).pth, head dropout 0 as in the fixture.
func newFixtureModel(t *testing.T, outputs int) *Model {
	t.Helper()
	c, err := clip.Load(ipiqaref.Path("tiny_clip_rn_fp16.pt"), clip.Options{})
	require.NoError(t, err)
	m, err := New(c, Options{Outputs: outputs})
	if err != nil {
		c.Close()
	}
	require.NoError(t, err)
	t.Cleanup(m.Close)
	init, err := torch.LoadStateDict(ipiqaref.Path("init_new_params.pth"))
	require.NoError(t, err)
	defer init.Close()
	if outputs == 1 { // its head comes from init_new_params_out1.pth
		for _, n := range []string{"head.out_proj.weight", "head.out_proj.bias"} {
			init.Tensors[n].Close()
			delete(init.Tensors, n)
		}
	}
	require.NoError(t, m.LoadStateDict(init))
	if outputs == 1 {
		require.NoError(t, m.LoadState(ipiqaref.Path("init_new_params_out1.pth")))
	}
	return m
}

func fixtureInputs(t *testing.T, s *torch.Scope, f *fixture) (*torch.Tensor, [][]int64) {
	t.Helper()
	px, err := ipiqaref.Pixels(512)
	require.NoError(t, err)
	ids := make([][]int64, len(f.Prompts))
	for i, p := range f.Prompts {
		ids[i] = p.Tokens77
	}
	return s.FromFloat32(px, ipiqaref.Images, 3, 512, 512), ids
}

func values(t *testing.T, x *torch.Tensor) []float32 {
	t.Helper()
	v, err := x.Float32s()
	require.NoError(t, err)
	return v
}

func TestStoreNamesAndFreezingMatchOfficial(t *testing.T) {
	f := loadFixture(t)
	m := newFixtureModel(t, 2)
	var names []string
	for _, p := range m.Store().Parameters() {
		names = append(names, p.Name)
	}
	var want []string
	for _, p := range f.IPIQA.Parameters {
		want = append(want, p.Name)
	}
	assert.Equal(t, want, names, "parameters in official order")
	var bufs, wantBufs []string
	for _, b := range m.Store().Buffers() {
		bufs = append(bufs, b.Name)
	}
	for _, b := range f.IPIQA.Buffers {
		wantBufs = append(wantBufs, b.Name)
	}
	assert.Equal(t, wantBufs, bufs)
	for _, p := range f.IPIQA.Parameters {
		assert.Equal(t, p.Shape, m.Store().Get(p.Name).Shape(), p.Name)
	}
	var trainable []string
	for _, p := range m.Store().Trainable() {
		trainable = append(trainable, p.Name)
	}
	assert.Equal(t, f.Train.TrainableParameters, trainable)
	assert.Len(t, trainable, 82)
	// Frozen modules stay in eval mode through model.train().
	m.Store().Train(true)
	assert.False(t, m.Store().Sub("txt_model").Training())
	assert.False(t, m.Store().Sub("ln_final").Training())
	assert.True(t, m.Store().Sub("resnet50").Training())
	assert.True(t, m.Store().Sub("head").Training())

	groups := m.ParamGroups(10, 0)
	require.Len(t, groups, len(f.Train.ParamGroups))
	for i, g := range groups {
		var got []string
		for _, p := range g.Params {
			got = append(got, p.Name)
		}
		assert.Equal(t, f.Train.ParamGroups[i].Params, got, "group %d", i)
		scale := g.LRScale
		if scale == 0 {
			scale = 1
		}
		assert.Equal(t, f.Train.ParamGroups[i].LRScale, scale, "group %d", i)
	}

	// The paper's freezing also freezes txt_pos and text_projection.
	c, err := clip.Load(ipiqaref.Path("tiny_clip_rn_fp16.pt"), clip.Options{})
	require.NoError(t, err)
	paper, err := New(c, Options{Freezing: FreezePaper, FreezeTokenEmbedding: true})
	require.NoError(t, err)
	defer paper.Close()
	n := len(paper.Store().Trainable())
	assert.Equal(t, 82-3, n)
}

func TestEvalForwardMatchesOfficial(t *testing.T) {
	f := loadFixture(t)
	m := newFixtureModel(t, 2)
	s := torch.NewScope().WithGrad(torch.InferenceMode)
	defer s.Close()
	px, ids := fixtureInputs(t, s, f)
	p := m.ForwardIDs(s, px, ids, false)
	require.NoError(t, s.Err())
	check := func(what string, got *torch.Tensor, want [][]float64, tol float64) {
		w := ipiqaref.Flatten(want)
		e := ipiqaref.MaxAbs(values(t, got), w)
		t.Logf("%s: max abs err %.3g (tolerance %.3g)", what, e, tol)
		assert.LessOrEqual(t, e, tol, what)
	}
	check("text_features", p.TextFeatures, f.Eval.TextFeatures, textAtol)
	check("global_visual", p.GlobalVisual, f.Eval.GlobalVisual, poolRel*ipiqaref.MaxAbsOf(ipiqaref.Flatten(f.Eval.GlobalVisual)))
	check("global_txt", p.GlobalText, f.Eval.GlobalTxt, poolRel*ipiqaref.MaxAbsOf(ipiqaref.Flatten(f.Eval.GlobalTxt)))
	check("scores", p.Scores, f.Eval.Scores, scoreAtol)

	// Prompts through the tokenizer, and repeated prompts, give the same
	// scores as their rows.
	texts := make([]string, len(f.Prompts))
	for i, pr := range f.Prompts {
		texts[i] = pr.Text
	}
	check("scores from prompt texts", m.Forward(s, px, texts, false), f.Eval.Scores, scoreAtol)
	rep := append([][]int64(nil), ids...)
	rep[5] = ids[0]
	rep[7] = ids[0]
	got := values(t, m.ForwardIDs(s, px, rep, false).TextFeatures)
	require.NoError(t, s.Err())
	all := values(t, p.TextFeatures)
	e := len(all) / len(ids)
	assert.Equal(t, all[:e], got[5*e:6*e])
	assert.Equal(t, all[:e], got[7*e:8*e])
}

func TestOneOutputMatchesOfficial(t *testing.T) {
	f := loadFixture(t)
	m := newFixtureModel(t, 1)
	s := torch.NewScope().WithGrad(torch.InferenceMode)
	defer s.Close()
	px, ids := fixtureInputs(t, s, f)
	got := values(t, m.ForwardIDs(s, px, ids, false).Scores)
	require.NoError(t, s.Err())
	e := ipiqaref.MaxAbs(got, ipiqaref.Flatten(f.Out1.Scores))
	t.Logf("out1 scores: max abs err %.3g (tolerance %.3g)", e, scoreAtol)
	assert.LessOrEqual(t, e, scoreAtol)
}

func TestBadInputs(t *testing.T) {
	m := newFixtureModel(t, 2)
	s := torch.NewScope().WithGrad(torch.InferenceMode)
	defer s.Close()
	m.Forward(s, s.Zeros(torch.Float32, 1, 3, 224, 224), []string{"x"}, false)
	assert.ErrorContains(t, s.Err(), "want [B 3 512 512]")

	// A 2-output checkpoint does not fit a 1-output model: the error names
	// the tensor.
	one := newFixtureModel(t, 1)
	err := one.LoadState(ipiqaref.Path("init_new_params.pth"))
	assert.ErrorContains(t, err, "head.out_proj.weight")

	_, err = New(m.CLIP(), Options{Outputs: 3})
	assert.ErrorContains(t, err, "3 outputs")
}

// The attention maps are the pools' own weights: each row sums to 1, and
// weighting the value projections with them and applying the output
// projection gives back the pooled features.
func TestAttentionMapsReproducePools(t *testing.T) {
	f := loadFixture(t)
	m := newFixtureModel(t, 2)
	s := torch.NewScope().WithGrad(torch.InferenceMode)
	defer s.Close()
	px, ids := fixtureInputs(t, s, f)
	vis, txt := m.AttentionMaps(s, px, ids)
	require.NoError(t, s.Err())
	g := int64(m.Grid())
	assert.Equal(t, []int64{8, 2, g*g + 1}, vis.Shape())
	assert.Equal(t, []int64{8, 2, g*g + 1}, txt.Shape())
	p := m.ForwardIDs(s, px, ids, false)
	rebuild := func(w *torch.Tensor, pos *torch.Tensor, v, out linear) []float32 {
		x := poolTokens(s, p.FeatureMap, pos)
		vv := v.forward(s, x) // [N, L, D]
		n, l, d := vv.Shape()[0], vv.Shape()[1], vv.Shape()[2]
		vh := s.Permute(s.Reshape(vv, n, l, 2, d/2), 0, 2, 1, 3) // [N, H, L, hd]
		o := s.MatMul(s.Unsqueeze(w, 2), vh)                     // [N, H, 1, hd]
		return values(t, out.forward(s, s.Reshape(s.Permute(o, 0, 2, 1, 3), n, d)))
	}
	ap := m.attnpool
	gotVis := rebuild(vis, ap.PositionalEmbedding, linear{ap.VProj.Weight, ap.VProj.Bias}, linear{ap.CProj.Weight, ap.CProj.Bias})
	gotTxt := rebuild(txt, m.txtPool.pos, m.txtPool.v, m.txtPool.out)
	require.NoError(t, s.Err())
	wantVis, wantTxt := values(t, p.GlobalVisual), values(t, p.GlobalText)
	for i := range wantVis {
		assert.InDelta(t, wantVis[i], gotVis[i], 1e-4, "global_visual[%d]", i)
		assert.InDelta(t, wantTxt[i], gotTxt[i], 1e-5, "global_txt[%d]", i)
	}
	sums := values(t, s.Sum(txt, false, 2))
	for _, v := range sums {
		assert.InDelta(t, 1, v, 1e-5)
	}
}
