package ipiqa

import (
	"encoding/json"
	"math"
	"os"
	"strings"
	"testing"

	"github.com/clipagiqa/clipagiqa/internal/ipiqaref"
	"github.com/clipagiqa/clipagiqa/torch"
	"github.com/clipagiqa/clipagiqa/torch/optim"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type image2PromptFixture struct {
	I2P struct {
		PromptEmbeddings      [][]float64                 `json:"prompt_embeddings"`
		VisualOutputTrainMode [][]float64                 `json:"visual_output_train_mode"`
		VisualOutputEvalAfter [][]float64                 `json:"visual_output_eval_after"`
		Loss                  float64                     `json:"loss"`
		Grads                 map[string]ipiqaref.Summary `json:"grads"`
		ParamsAfter           map[string]ipiqaref.Summary `json:"params_after"`
		BNRunningStatsAfter   map[string]struct {
			RunningMean ipiqaref.Summary `json:"running_mean"`
			RunningVar  ipiqaref.Summary `json:"running_var"`
		} `json:"bn_running_stats_after"`
	} `json:"image2prompt"`
}

// One Image2Prompt step as the fixture's reading of it: CLIP's visual at
// 224 in train mode, cosine embedding loss against the frozen text
// features, AdamW(visual.parameters(), lr 1e-5, wd 0).
func TestImage2PromptStepMatchesFixture(t *testing.T) {
	f := loadFixture(t)
	b, err := os.ReadFile(ipiqaref.Path("expected.json"))
	require.NoError(t, err)
	var ref image2PromptFixture
	require.NoError(t, json.Unmarshal(b, &ref))
	r := ref.I2P
	m := newFixtureModel(t, 2)
	params, err := m.Image2PromptParams()
	require.NoError(t, err)
	assert.Len(t, params, len(r.Grads))
	opts := optim.AdamWDefaults()
	opts.LR, opts.WeightDecay = 1e-5, 0
	opt, err := optim.NewAdamW(optim.Single(params), opts)
	require.NoError(t, err)
	defer opt.Close()

	ids := make([][]int64, len(f.Prompts))
	for i, p := range f.Prompts {
		ids[i] = p.Tokens77
	}
	px, err := ipiqaref.Pixels(224)
	require.NoError(t, err)
	s := torch.NewScope()
	pixels := s.FromFloat32(px, ipiqaref.Images, 3, 224, 224)
	loss, out := m.Image2PromptLoss(s, pixels, ids, true)
	require.NoError(t, s.Err())
	l, err := loss.Item()
	require.NoError(t, err)
	t.Logf("image2prompt loss %.9g (fixture %.9g)", l, r.Loss)
	assert.InDelta(t, r.Loss, l, 1e-6)
	want := ipiqaref.Flatten(r.VisualOutputTrainMode)
	e := ipiqaref.MaxAbs(values(t, out), want)
	tol := poolRel * ipiqaref.MaxAbsOf(want)
	t.Logf("image2prompt train-mode output: max abs err %.3g (tolerance %.3g)", e, tol)
	assert.LessOrEqual(t, e, tol)
	require.NoError(t, loss.Backward())
	worst := 0.0
	for _, p := range params {
		w, ok := r.Grads[p.Name]
		require.True(t, ok, p.Name)
		tol := gradRel * math.Max(-w.Min, w.Max)
		if strings.HasSuffix(p.Name, "k_proj.bias") {
			tol = kBiasAtol
		}
		rr, what := w.Compare(gradValues(t, p.T), tol)
		worst = math.Max(worst, rr)
		assert.LessOrEqual(t, rr, 1.0, "grad %s: %s", p.Name, what)
	}
	t.Logf("image2prompt gradients of %d tensors: worst %.3g of tolerance", len(params), worst)
	s.Close()
	require.NoError(t, opt.Step())
	require.NoError(t, opt.ZeroGrad())
	worst = 0
	for _, p := range params {
		rr, what := r.ParamsAfter[p.Name].Compare(values(t, p.T), paramAtol)
		worst = math.Max(worst, rr)
		assert.LessOrEqual(t, rr, 1.0, "param %s: %s", p.Name, what)
	}
	t.Logf("image2prompt parameters after: worst %.3g of tolerance", worst)
	for layer, st := range r.BNRunningStatsAfter {
		for name, w := range map[string]ipiqaref.Summary{"running_mean": st.RunningMean, "running_var": st.RunningVar} {
			rr, what := w.Compare(values(t, m.Store().Get("resnet50."+layer+"."+name)), runRelTol*math.Max(-w.Min, w.Max))
			assert.LessOrEqual(t, rr, 1.0, "%s.%s: %s", layer, name, what)
		}
	}
	es := torch.NewScope().WithGrad(torch.InferenceMode)
	defer es.Close()
	after := values(t, m.CLIP().EncodeImage(es, es.FromFloat32(px, ipiqaref.Images, 3, 224, 224)))
	require.NoError(t, es.Err())
	want = ipiqaref.Flatten(r.VisualOutputEvalAfter)
	e = ipiqaref.MaxAbs(after, want)
	tol = poolRel * ipiqaref.MaxAbsOf(want)
	t.Logf("image2prompt eval output after the step: max abs err %.3g (tolerance %.3g)", e, tol)
	assert.LessOrEqual(t, e, tol)
}
