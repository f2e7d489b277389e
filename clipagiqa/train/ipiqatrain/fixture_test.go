package ipiqatrain

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/clipagiqa/clipagiqa/clipagiqa/clip"
	"github.com/clipagiqa/clipagiqa/clipagiqa/ipiqa"
	"github.com/clipagiqa/clipagiqa/clipagiqa/train"
	"github.com/clipagiqa/clipagiqa/internal/ipiqaref"
	"github.com/clipagiqa/clipagiqa/torch"
	"github.com/clipagiqa/clipagiqa/torch/optim"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Tolerances from the fixture README ("Suggested tolerances"), as in
// clipagiqa/ipiqa's tests.
const (
	lossRtol  = 1e-6
	paramAtol = 1e-5
	gradRel   = 5e-3
	runRelTol = 1e-5
	kBiasAtol = 1e-7
)

// fixture is the part of expected.json these tests read.
type fixture struct {
	Prompts []ipiqaref.Prompt `json:"prompts"`
	Train   struct {
		TargetsScore [][]float64 `json:"targets_score"`
		Steps        []struct {
			Loss        float64                     `json:"loss"`
			ParamsAfter map[string]ipiqaref.Summary `json:"params_after"`
		} `json:"steps"`
		AdamStateAfter map[string]struct {
			Step     float64          `json:"step"`
			ExpAvg   ipiqaref.Summary `json:"exp_avg"`
			ExpAvgSq ipiqaref.Summary `json:"exp_avg_sq"`
		} `json:"adam_state_after"`
		BNRunningStatsAfter map[string]struct {
			Mean    []float64 `json:"running_mean"`
			Var     []float64 `json:"running_var"`
			Tracked int64     `json:"num_batches_tracked"`
		} `json:"bn_running_stats_after"`
	} `json:"train"`
}

func loadFixture(t *testing.T) *fixture {
	t.Helper()
	b, err := os.ReadFile(ipiqaref.Path("expected.json"))
	require.NoError(t, err)
	var f fixture
	require.NoError(t, json.Unmarshal(b, &f))
	return &f
}

// fixtureModel is the fixture's initial IP-IQA (head dropout 0) on its 8
// resized images, prompts and targets, without augmentation (the fixture's
// steps use the eval processor).
func fixtureModel(t *testing.T, f *fixture) (*Model, *ipiqa.Model) {
	t.Helper()
	c, err := clip.Load(ipiqaref.Path("tiny_clip_rn_fp16.pt"), clip.Options{})
	require.NoError(t, err)
	m, err := ipiqa.New(c, ipiqa.Options{Outputs: 2})
	if err != nil {
		c.Close()
	}
	require.NoError(t, err)
	t.Cleanup(m.Close)
	require.NoError(t, m.LoadState(ipiqaref.Path("init_new_params.pth")))
	var ss []Sample
	for k, p := range f.Prompts {
		name := fmt.Sprintf("img_%d_512.png", k)
		ss = append(ss, Sample{Name: name, Path: ipiqaref.Path(filepath.Join("resized", name)), Prompt: p.Text, Targets: f.Train.TargetsScore[k]})
	}
	a, err := New(m, ss, nil, Options{})
	require.NoError(t, err)
	return a, m
}

func fixtureConfig(t *testing.T, m *ipiqa.Model, out string, epochs int) train.Config {
	t.Helper()
	opt, err := NewOptimizer(m, OfficialSchedule())
	require.NoError(t, err)
	t.Cleanup(opt.Close)
	return train.Config{Epochs: epochs, BatchSize: 8, Seed: 42, Train: []int{0, 1, 2, 3, 4, 5, 6, 7},
		Optimizer: opt, OutDir: out, Hyper: OfficialSchedule().Hyper(),
		ModelConfig: OfficialConfig(m, OfficialSchedule(), 8, epochs, 42, "agiqa_doublescore")}
}

func values(t *testing.T, x *torch.Tensor) []float32 {
	t.Helper()
	v, err := x.Float32s()
	require.NoError(t, err)
	return v
}

// One trainer epoch (one step of the 8 images) writes checkpoint_0.pth in
// the official layout; a fresh process resuming it for one more epoch ends
// where the official code's second step does: loss, parameters, AdamW
// state and BatchNorm running statistics.
func TestResumedStepMatchesOfficialSecondStep(t *testing.T) {
	f := loadFixture(t)
	out := t.TempDir()
	a, m := fixtureModel(t, f)
	var losses []float64
	onStep := func(s train.StepInfo) { losses = append(losses, s.Loss) }
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	_, err := train.Run(ctx, a, fixtureConfig(t, m, out, 2), train.Callbacks{OnStep: onStep, OnEpoch: func(train.EpochReport) { stop() }})
	require.ErrorIs(t, err, context.Canceled, "stopped after the first epoch")
	require.FileExists(t, filepath.Join(out, "checkpoint_0.pth"))
	opts, err := ipiqa.OptionsFromOfficial(filepath.Join(out, "checkpoint_0.pth"))
	require.NoError(t, err)
	assert.Equal(t, 512, opts.InputResolution)
	assert.Equal(t, 2, opts.Outputs)

	a2, m2 := fixtureModel(t, f) // a new process: initial weights, empty AdamW
	cfg := fixtureConfig(t, m2, out, 2)
	cfg.Resume = true
	res, err := train.Run(context.Background(), a2, cfg, train.Callbacks{OnStep: onStep})
	require.NoError(t, err)
	assert.Equal(t, 1, res.StartEpoch)
	require.Len(t, losses, 2)
	for i, l := range losses {
		want := f.Train.Steps[i].Loss
		t.Logf("step %d loss %.9g, official %.9g (rel err %.2g, tolerance %.0g)", i+1, l, want, math.Abs(l-want)/want, lossRtol)
		assert.InDelta(t, want, l, lossRtol*want, "step %d", i+1)
	}

	worst, worstName := 0.0, ""
	for name, want := range f.Train.Steps[1].ParamsAfter {
		r, what := want.Compare(values(t, m2.Store().Get(name)), paramAtol)
		if r > worst {
			worst, worstName = r, name+" "+what
		}
		assert.LessOrEqual(t, r, 1.0, "param %s: %s", name, what)
	}
	t.Logf("%d parameters after the resumed step: worst %.3g of tolerance %.0g (%s)", len(f.Train.Steps[1].ParamsAfter), worst, paramAtol, worstName)

	worstM, worstV := 0.0, 0.0
	adam := cfg.Optimizer.(*optim.Adam)
	for _, p := range m2.Store().Trainable() {
		want, ok := f.Train.AdamStateAfter[p.Name]
		require.True(t, ok, p.Name)
		st, err := adam.State(p.Name)
		require.NoError(t, err)
		step, err := st.Step.Item()
		require.NoError(t, err)
		assert.Equal(t, want.Step, step, p.Name)
		tolM := gradRel * math.Max(-want.ExpAvg.Min, want.ExpAvg.Max)
		tolV := 2 * gradRel * want.ExpAvgSq.Max
		if len(p.Name) > 11 && p.Name[len(p.Name)-11:] == "k_proj.bias" {
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
	t.Logf("AdamW state: exp_avg worst %.3g, exp_avg_sq worst %.3g of tolerance", worstM, worstV)

	worst = 0
	for layer, want := range f.Train.BNRunningStatsAfter {
		for _, c := range []struct {
			name string
			want []float64
		}{{"running_mean", want.Mean}, {"running_var", want.Var}} {
			got := values(t, m2.Store().Get(layer+"."+c.name))
			require.Len(t, got, len(c.want))
			for i, w := range c.want {
				r := math.Abs(float64(got[i])-w) / (runRelTol * math.Max(math.Abs(w), 1e-3))
				worst = math.Max(worst, r)
				assert.LessOrEqual(t, r, 1.0, "%s.%s[%d]", layer, c.name, i)
			}
		}
		n, err := m2.Store().Get(layer + ".num_batches_tracked").Item()
		require.NoError(t, err)
		assert.Equal(t, float64(want.Tracked), n, layer)
	}
	t.Logf("BatchNorm running stats of %d layers: worst %.3g of tolerance %.0g (relative)", len(f.Train.BNRunningStatsAfter), worst, runRelTol)
}

// The official checkpoint_best.pth (after the two steps, epoch 0) resumes
// with its AdamW state: the next epoch is 1 and Adam's step count is 2.
func TestResumeOfficialCheckpoint(t *testing.T) {
	f := loadFixture(t)
	a, m := fixtureModel(t, f)
	cfg := fixtureConfig(t, m, t.TempDir(), 1)
	cfg.ResumeFrom = ipiqaref.Path("checkpoint_best.pth")
	res, err := train.Run(context.Background(), a, cfg, train.Callbacks{})
	require.NoError(t, err)
	assert.True(t, res.Resumed)
	assert.Equal(t, 1, res.StartEpoch, "official epoch 0 done")
	assert.Empty(t, res.History)
	st, err := cfg.Optimizer.(*optim.Adam).State("head.dense.weight")
	require.NoError(t, err)
	defer st.Close()
	step, err := st.Step.Item()
	require.NoError(t, err)
	assert.Equal(t, 2.0, step)
	want := f.Train.Steps[1].ParamsAfter["head.dense.weight"]
	r, what := want.Compare(values(t, m.Store().Get("head.dense.weight")), paramAtol)
	assert.LessOrEqual(t, r, 1.0, what)
}
