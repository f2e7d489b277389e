package ipiqa

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/clipagiqa/clipagiqa/clipagiqa/clip"
	"github.com/clipagiqa/clipagiqa/internal/ipiqaref"
	"github.com/clipagiqa/clipagiqa/torch"
	"github.com/clipagiqa/clipagiqa/torch/ptfile"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// checkpointFixture is expected.json's "checkpoint" section.
type checkpointFixture struct {
	Checkpoint struct {
		ModelKeys          map[string]json.RawMessage `json:"model_keys"`
		ExcludedFrozenKeys []string                   `json:"excluded_frozen_keys"`
		Epoch              int64                      `json:"epoch"`
		Reload             struct {
			Scores [][]float64 `json:"scores"`
		} `json:"reload"`
	} `json:"checkpoint"`
}

func loadCheckpointFixture(t *testing.T) *checkpointFixture {
	t.Helper()
	b, err := os.ReadFile(ipiqaref.Path("expected.json"))
	require.NoError(t, err)
	var c checkpointFixture
	require.NoError(t, json.Unmarshal(b, &c))
	return &c
}

// newRandomModel is IP-IQA on the tiny archive with its own random new
// parameters (the official reload builds a fresh model with another seed).
func newRandomModel(t *testing.T, opts Options) *Model {
	t.Helper()
	c, err := clip.Load(ipiqaref.Path("tiny_clip_rn_fp16.pt"), clip.Options{})
	require.NoError(t, err)
	m, err := New(c, opts)
	if err != nil {
		c.Close()
	}
	require.NoError(t, err)
	t.Cleanup(m.Close)
	return m
}

func evalScores(t *testing.T, m *Model, f *fixture) []float32 {
	t.Helper()
	s := torch.NewScope().WithGrad(torch.InferenceMode)
	defer s.Close()
	px, ids := fixtureInputs(t, s, f)
	got := values(t, m.ForwardIDs(s, px, ids, false).Scores)
	require.NoError(t, s.Err())
	return got
}

// checkpoint_best.pth, written by the official Trainer after the two steps,
// loads into a fresh model and scores as the official reload did.
func TestOfficialCheckpointLoadsAndScores(t *testing.T) {
	f := loadFixture(t)
	cf := loadCheckpointFixture(t)
	opts, err := OptionsFromOfficial(ipiqaref.Path("checkpoint_best.pth"))
	require.NoError(t, err)
	assert.Equal(t, Options{InputResolution: 512, Outputs: 2, Dropout: 0.5}, opts)
	opts.Dropout = 0 // as the fixture's steps (the config keeps 0.5)
	m := newRandomModel(t, opts)
	opt := newFixtureOptimizer(t, m)
	ck, err := m.LoadOfficial(ipiqaref.Path("checkpoint_best.pth"), opt)
	require.NoError(t, err)
	assert.Equal(t, cf.Checkpoint.Epoch, ck.Epoch)
	model, err := ptfile.Get(ck.Config, "model", "arch")
	require.NoError(t, err)
	assert.Equal(t, "ipiqa", model)
	st, err := opt.State("txt_pos")
	require.NoError(t, err)
	defer st.Close()
	step, err := st.Step.Item()
	require.NoError(t, err)
	assert.EqualValues(t, 2, step)
	got := evalScores(t, m, f)
	e := ipiqaref.MaxAbs(got, ipiqaref.Flatten(cf.Checkpoint.Reload.Scores))
	t.Logf("official checkpoint reload: scores max abs err %.3g (tolerance %.3g)", e, afterAtol)
	assert.LessOrEqual(t, e, afterAtol)
	n, err := m.Store().Get("resnet50.bn1.num_batches_tracked").Item()
	require.NoError(t, err)
	assert.EqualValues(t, 2, n)
}

// Our export has the official layout, reloads to the same scores, and a
// checkpoint written after step 1 resumes to the uninterrupted step 2 bit
// for bit (so also to the fixture's step 2).
func TestSaveOfficialRoundTripAndResume(t *testing.T) {
	f := loadFixture(t)
	cf := loadCheckpointFixture(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "checkpoint_step1.pth")

	m := newFixtureModel(t, 2)
	opt := newFixtureOptimizer(t, m)
	trainStep(t, m, opt, f, nil)
	config := ptfile.NewDict(ptfile.KindDict)
	config.Set("note", "round trip")
	require.NoError(t, m.SaveOfficial(path, opt, config, 0))
	step1 := evalScores(t, m, f)
	var wantLoss float64
	trainStep(t, m, opt, f, func(loss float64, _ []float32) { wantLoss = loss })

	// Layout: the official model keys (frozen ones left out), in order.
	pf, err := ptfile.Load(path)
	require.NoError(t, err)
	raw, names, err := ptfile.StateDict(mustGet(t, pf.Root, "model"))
	require.NoError(t, err)
	assert.Len(t, names, len(cf.Checkpoint.ModelKeys))
	for _, n := range names {
		assert.Contains(t, cf.Checkpoint.ModelKeys, n)
	}
	for _, n := range cf.Checkpoint.ExcludedFrozenKeys {
		assert.NotContains(t, raw, n)
	}
	for _, k := range []string{"optimizer", "config", "scaler", "epoch"} {
		_, err := ptfile.Get(pf.Root, k)
		assert.NoError(t, err, k)
	}

	// Reload into a fresh random model: same scores.
	r := newRandomModel(t, Options{})
	ropt := newFixtureOptimizer(t, r)
	ck, err := r.LoadOfficial(path, ropt)
	require.NoError(t, err)
	note, err := ptfile.Get(ck.Config, "note")
	require.NoError(t, err)
	assert.Equal(t, "round trip", note)
	assert.Equal(t, step1, evalScores(t, r, f))

	// Resume: step 2 from the checkpoint equals the uninterrupted step 2.
	trainStep(t, r, ropt, f, func(loss float64, _ []float32) {
		assert.Equal(t, wantLoss, loss)
		assert.InDelta(t, f.Train.Steps[1].Loss, loss, lossRtol*loss)
	})
	for _, p := range m.Store().Parameters() {
		assert.Equal(t, values(t, p.T), values(t, r.Store().Get(p.Name)), p.Name)
	}
	for _, b := range m.Store().Buffers() {
		if b.T.DType() == torch.Float32 {
			assert.Equal(t, values(t, b.T), values(t, r.Store().Get(b.Name)), b.Name)
		}
	}
	for name, want := range f.Train.Steps[1].ParamsAfter {
		rr, what := want.Compare(values(t, r.Store().Get(name)), paramAtol)
		assert.LessOrEqual(t, rr, 1.0, "resumed step 2 param %s: %s", name, what)
	}
}

func mustGet(t *testing.T, root any, path ...any) any {
	t.Helper()
	v, err := ptfile.Get(root, path...)
	require.NoError(t, err)
	return v
}

func TestLoadOfficialBadCheckpoints(t *testing.T) {
	dir := t.TempDir()
	m := newRandomModel(t, Options{})
	// A checkpoint from a 1-output model does not fit: the error names the
	// tensor.
	one := newRandomModel(t, Options{Outputs: 1})
	p1 := filepath.Join(dir, "out1.pth")
	require.NoError(t, one.SaveOfficial(p1, nil, nil, 3))
	_, err := m.LoadOfficial(p1, nil)
	assert.ErrorContains(t, err, "head.out_proj.weight")
	o1, err := OptionsFromOfficial(p1)
	require.NoError(t, err)
	assert.Equal(t, 1, o1.Outputs)
	_, err = OptionsFromOfficial(ipiqaref.Path("init_new_params.pth"))
	assert.ErrorContains(t, err, "not an IP-IQA checkpoint")
	// The official checkpoint (512) into a model built for 224: the resized
	// positional embedding does not fit, and the error says which.
	small := newRandomModel(t, Options{InputResolution: 224})
	_, err = small.LoadOfficial(ipiqaref.Path("checkpoint_best.pth"), nil)
	assert.ErrorContains(t, err, "attnpool.positional_embedding: checkpoint [257 128], model [50 128]")
	// Without an optimizer state there is nothing to resume from.
	_, err = m.LoadOfficial(p1, newFixtureOptimizer(t, m))
	assert.Error(t, err)
	// A plain state dict is not an IP-IQA checkpoint.
	_, err = m.LoadOfficial(ipiqaref.Path("init_new_params.pth"), nil)
	assert.ErrorContains(t, err, "not an IP-IQA checkpoint")
	_, err = m.LoadOfficial(filepath.Join(dir, "absent.pth"), nil)
	assert.ErrorContains(t, err, "absent.pth")
}

func TestViTCLIPIsRejected(t *testing.T) {
	c, err := clip.Load(filepath.Join(ipiqaref.Dir(), "..", "clip-agiqa-ref", "tiny_clip_vit.pt"), clip.Options{})
	require.NoError(t, err)
	defer c.Close()
	_, err = New(c, Options{})
	assert.ErrorContains(t, err, "needs a ResNet CLIP")
}

// A checkpoint saved in float16 loads, upcast: every tensor equals the
// float16 rounding of the float32 original.
func TestLoadOfficialFloat16(t *testing.T) {
	pf, err := ptfile.Load(ipiqaref.Path("checkpoint_best.pth"))
	require.NoError(t, err)
	model := mustGet(t, pf.Root, "model").(*ptfile.Dict)
	want := map[string][]float32{}
	for i, k := range model.Keys {
		raw := model.Values[i].(*ptfile.Tensor)
		if raw.DType != ptfile.Float32 {
			continue
		}
		v, err := raw.Float32s()
		require.NoError(t, err)
		h, err := ptfile.FromFloat32s(ptfile.Float16, raw.Shape, v)
		require.NoError(t, err)
		model.Values[i] = h
		hv, err := h.Float32s()
		require.NoError(t, err)
		want[k.(string)] = hv
	}
	path := filepath.Join(t.TempDir(), "fp16.pth")
	root := ptfile.NewDict(ptfile.KindDict)
	root.Set("model", model)
	require.NoError(t, ptfile.SaveValue(path, root))
	m := newRandomModel(t, Options{})
	_, err = m.LoadOfficial(path, nil)
	require.NoError(t, err)
	require.NotEmpty(t, want)
	for name, w := range want {
		got := m.Store().Get(name)
		assert.Equal(t, torch.Float32, got.DType(), name)
		assert.Equal(t, w, values(t, got), name)
	}
}

func TestLoadBuildsTheCheckpointsModel(t *testing.T) {
	f := loadFixture(t)
	cf := loadCheckpointFixture(t)
	m, err := Load(ipiqaref.Path("tiny_clip_rn_fp16.pt"), ipiqaref.Path("checkpoint_best.pth"), torch.CPU, nil)
	require.NoError(t, err)
	defer m.Close()
	assert.Equal(t, 512, m.Options().InputResolution)
	e := ipiqaref.MaxAbs(evalScores(t, m, f), ipiqaref.Flatten(cf.Checkpoint.Reload.Scores))
	assert.LessOrEqual(t, e, afterAtol)

	// A ViT CLIP cannot carry IP-IQA.
	_, err = Load(filepath.Join(ipiqaref.Dir(), "..", "clip-agiqa-ref", "tiny_clip_vit.pt"), ipiqaref.Path("checkpoint_best.pth"), torch.CPU, nil)
	assert.ErrorContains(t, err, "needs a ResNet CLIP")
}
