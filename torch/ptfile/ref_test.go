package ptfile

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The CLIP-AGIQA reference fixture (see its README.md): the lead places it
// under the repository's testdata; the shared copy is the fallback.
var refDirs = []string{"../../testdata/clip-agiqa-ref", "/work/shared/fixtures/clip-agiqa-ref"}

// refFile returns the first existing copy of a fixture file, or skips.
func refFile(t *testing.T, rel string) string {
	t.Helper()
	for _, d := range refDirs {
		p := filepath.Join(d, rel)
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	t.Skipf("reference fixture %s not found in %v", rel, refDirs)
	return ""
}

// summary is the per-tensor digest the fixture records.
type summary struct {
	Shape     []int64   `json:"shape"`
	DType     string    `json:"dtype"`
	Sum       float64   `json:"sum"`
	L2        float64   `json:"l2"`
	Min       float64   `json:"min"`
	Max       float64   `json:"max"`
	First     []float64 `json:"first"`
	ProbeIdx  []int     `json:"probe_flat_index"`
	ProbeVals []float64 `json:"probe_values"`
}

type ckptListing struct {
	TopLevelKeys    []string                     `json:"top_level_keys"`
	Epoch           int64                        `json:"epoch"`
	StateDict       map[string][]json.RawMessage `json:"state_dict"`
	ParamGroups     []map[string]any             `json:"optimizer_param_groups"`
	StateKeys       map[string][]string          `json:"optimizer_state_keys"`
	SchedulerKeys   []string                     `json:"scheduler_keys"`
	SuccessorType   string                       `json:"scheduler_type_of_successor"`
	SchedulerPlain  map[string]any               `json:"scheduler_plain_fields"`
	SuccessorFields map[string]any               `json:"successor_fields"`
}

type scriptEntry struct {
	Name    string    `json:"name"`
	Shape   []int64   `json:"shape"`
	DType32 string    `json:"dtype_fp32_archive"`
	DType16 string    `json:"dtype_fp16_archive"`
	Sum     float64   `json:"sum"`
	First   []float64 `json:"first"`
}

type refExpected struct {
	ClipAGIQA struct {
		Checkpoints    map[string]ckptListing `json:"checkpoints"`
		Ctx            [][]float64            `json:"ctx"`
		Regression     map[string]summary     `json:"regression"`
		RegressionFull map[string]any         `json:"regression_full"`
	} `json:"clip_agiqa"`
	TrainStepResume struct {
		MomentumCtx summary `json:"checkpoint_momentum_buffer_ctx"`
	} `json:"train_step_resume"`
	FP16Variant struct {
		Ctx [][]float64 `json:"ctx"`
	} `json:"fp16_ctx_variant"`
	TinyClip struct {
		StateDict []scriptEntry `json:"state_dict"`
	} `json:"tiny_clip"`
}

var (
	refOnce sync.Once
	refExp  refExpected
	refErr  error
)

func loadRefExpected(t *testing.T) *refExpected {
	t.Helper()
	p := refFile(t, "expected.json")
	refOnce.Do(func() {
		b, err := os.ReadFile(p)
		if err != nil {
			refErr = err
			return
		}
		refErr = json.Unmarshal(b, &refExp)
	})
	require.NoError(t, refErr)
	return &refExp
}

// flattenAny flattens nested JSON arrays of numbers in row-major order.
func flattenAny(v any) []float64 {
	switch x := v.(type) {
	case float64:
		return []float64{x}
	case []any:
		var out []float64
		for _, e := range x {
			out = append(out, flattenAny(e)...)
		}
		return out
	}
	return nil
}

func flatten(rows [][]float64) []float64 {
	var out []float64
	for _, r := range rows {
		out = append(out, r...)
	}
	return out
}

// requireExactF32 compares float32 values with JSON numbers that Python
// wrote from the same float32s (repr of a float32-valued double is exact).
func requireExactF32(t *testing.T, want []float64, got []float32, what string) {
	t.Helper()
	require.Len(t, got, len(want), what)
	for i := range want {
		if float32(want[i]) != got[i] {
			require.Failf(t, "value mismatch", "%s[%d]: want %v got %v", what, i, float32(want[i]), got[i])
		}
	}
}

// checkSummary checks first values and probes exactly and the aggregate
// statistics to float64-summation tolerance.
func checkSummary(t *testing.T, s summary, tn *Tensor, what string) {
	t.Helper()
	require.Equal(t, s.Shape, tn.Shape, what)
	require.Equal(t, s.DType, tn.DType.String(), what)
	v, err := tn.Float32s()
	require.NoError(t, err)
	requireExactF32(t, s.First, v[:len(s.First)], what+" first")
	for i, idx := range s.ProbeIdx {
		assert.Equal(t, float32(s.ProbeVals[i]), v[idx], "%s probe %d", what, idx)
	}
	var sum, sq, abs float64
	mn, mx := math.Inf(1), math.Inf(-1)
	for _, x := range v {
		f := float64(x)
		sum += f
		sq += f * f
		abs += math.Abs(f)
		mn = math.Min(mn, f)
		mx = math.Max(mx, f)
	}
	// torch sums in float32 with pairwise reduction: allow 1e-6 of sum|x|.
	assert.InDelta(t, s.Sum, sum, 1e-6*abs+1e-12, "%s sum", what)
	assert.InDelta(t, s.L2, math.Sqrt(sq), 1e-6*s.L2, "%s l2", what)
	assert.Equal(t, float32(s.Min), float32(mn), "%s min", what)
	assert.Equal(t, float32(s.Max), float32(mx), "%s max", what)
}

func loadRef(t *testing.T, rel string) *File {
	t.Helper()
	f, err := Load(refFile(t, rel))
	require.NoError(t, err)
	return f
}

func parseListing(t *testing.T, raw []json.RawMessage) ([]int64, string) {
	t.Helper()
	require.Len(t, raw, 2)
	var shape []int64
	var dt string
	require.NoError(t, json.Unmarshal(raw[0], &shape))
	require.NoError(t, json.Unmarshal(raw[1], &dt))
	return shape, dt
}

// checkListing compares a checkpoint against the fixture's description of
// it: key order, shapes, dtypes, optimizer and scheduler fields.
func checkListing(t *testing.T, f *File, want ckptListing, dtype string) {
	t.Helper()
	root, ok := f.Root.(*Dict)
	require.True(t, ok, "root is %T", f.Root)
	var keys []string
	for _, k := range root.Keys {
		keys = append(keys, k.(string))
	}
	assert.Equal(t, want.TopLevelKeys, keys)

	epoch, err := GetInt(f.Root, "epoch")
	require.NoError(t, err)
	assert.Equal(t, want.Epoch, epoch)
	vr, err := Get(f.Root, "val_result")
	require.NoError(t, err)
	assert.Nil(t, vr)

	sd, names, err := StateDict(f.Root)
	require.NoError(t, err)
	require.Len(t, names, len(want.StateDict))
	for _, n := range names {
		shape, dt := parseListing(t, want.StateDict[n])
		if dtype != "" {
			dt = dtype
		}
		assert.Equal(t, shape, sd[n].Shape, n)
		assert.Equal(t, dt, sd[n].DType.String(), n)
		assert.Equal(t, ContiguousStrides(shape), sd[n].Strides, n)
	}

	// optimizer.param_groups: every scalar field and the params list.
	require.Len(t, want.ParamGroups, 1)
	for k, w := range want.ParamGroups[0] {
		got, err := Get(f.Root, "optimizer", "param_groups", 0, k)
		require.NoError(t, err, k)
		switch wv := w.(type) {
		case float64:
			gf, err := GetFloat(f.Root, "optimizer", "param_groups", 0, k)
			require.NoError(t, err, k)
			assert.Equal(t, wv, gf, k)
		case bool:
			assert.Equal(t, wv, got, k)
		case nil:
			assert.Nil(t, got, k)
		case []any:
			l, ok := got.(*List)
			require.True(t, ok, k)
			require.Len(t, l.Items, len(wv))
			for i := range wv {
				assert.Equal(t, int64(wv[i].(float64)), l.Items[i], k)
			}
		}
	}
	st, err := Get(f.Root, "optimizer", "state")
	require.NoError(t, err)
	require.Equal(t, len(want.StateKeys), st.(*Dict).Len())
	for i := 0; i < len(want.StateKeys); i++ {
		require.Contains(t, want.StateKeys, fmt.Sprint(i))
		mb, err := GetTensor(f.Root, "optimizer", "state", i, "momentum_buffer")
		require.NoError(t, err)
		// Buffers follow the parameter order of the state dict.
		assert.Equal(t, sd[names[i]].Shape, mb.Shape)
		assert.Equal(t, sd[names[i]].DType, mb.DType)
	}

	// scheduler: a plain dict whose "successor" is a live CosineAnnealingLR.
	sch, err := Get(f.Root, "scheduler")
	require.NoError(t, err)
	var sk []string
	for _, k := range sch.(*Dict).Keys {
		sk = append(sk, k.(string))
	}
	assert.Equal(t, want.SchedulerKeys, sk)
	for k, w := range want.SchedulerPlain {
		got, err := Get(f.Root, "scheduler", k)
		require.NoError(t, err, k)
		assertPyEqual(t, w, got, "scheduler."+k)
	}
	succ, err := Get(f.Root, "scheduler", "successor")
	require.NoError(t, err)
	so, ok := succ.(*Object)
	require.True(t, ok, "successor is %T", succ)
	assert.Equal(t, want.SuccessorType, so.Class.String())
	for k, w := range want.SuccessorFields {
		got, err := Get(succ, k)
		require.NoError(t, err, k)
		if k == "optimizer" {
			o, ok := got.(*Object)
			require.True(t, ok)
			assert.Equal(t, w, o.Class.String())
			continue
		}
		assertPyEqual(t, w, got, "successor."+k)
	}
}

// assertPyEqual compares a JSON value with an unpickled one.
func assertPyEqual(t *testing.T, want, got any, what string) {
	t.Helper()
	switch w := want.(type) {
	case float64:
		switch g := got.(type) {
		case int64:
			assert.Equal(t, w, float64(g), what)
		case float64:
			assert.Equal(t, w, g, what)
		default:
			assert.Failf(t, "type", "%s: want number, got %T", what, got)
		}
	case []any:
		var items []any
		switch g := got.(type) {
		case *List:
			items = g.Items
		case Tuple:
			items = g
		default:
			assert.Failf(t, "type", "%s: want list, got %T", what, got)
			return
		}
		require.Len(t, items, len(w), what)
		for i := range w {
			assertPyEqual(t, w[i], items[i], what)
		}
	default:
		assert.Equal(t, want, got, what)
	}
}

func TestDasslPromptLearnerFP32(t *testing.T) {
	exp := loadRefExpected(t)
	f := loadRef(t, "prompt_learner/model.pth.tar-100")
	assert.Equal(t, "model.pth/", f.Prefix)
	assert.Equal(t, "3", f.Version)
	assert.False(t, f.TorchScript)
	checkListing(t, f, exp.ClipAGIQA.Checkpoints["prompt_learner/model.pth.tar-100"], "")

	ctx, err := GetTensor(f.Root, "state_dict", "ctx")
	require.NoError(t, err)
	v, err := ctx.Float32s()
	require.NoError(t, err)
	requireExactF32(t, flatten(exp.ClipAGIQA.Ctx), v, "ctx")

	mb, err := GetTensor(f.Root, "optimizer", "state", 0, "momentum_buffer")
	require.NoError(t, err)
	checkSummary(t, exp.TrainStepResume.MomentumCtx, mb, "momentum_buffer")

	// The scheduler's live SGD keys its defaultdict state by the ctx
	// Parameter; its momentum buffer is the very same pickled object.
	inner, err := Get(f.Root, "scheduler", "successor", "optimizer", "state")
	require.NoError(t, err)
	dd := inner.(*Dict)
	assert.Equal(t, KindDefaultDict, dd.Kind)
	require.Equal(t, 1, dd.Len())
	param := dd.Keys[0].(*Tensor)
	pv, err := param.Float32s()
	require.NoError(t, err)
	requireExactF32(t, flatten(exp.ClipAGIQA.Ctx), pv, "scheduler parameter")
	buf, err := GetTensor(dd, param, "momentum_buffer")
	require.NoError(t, err)
	assert.Same(t, mb, buf)
	pg, err := GetTensor(f.Root, "scheduler", "successor", "optimizer", "param_groups", 0, "params", 0)
	require.NoError(t, err)
	assert.Same(t, param, pg)
}

func TestDasslPromptLearnerFP16(t *testing.T) {
	exp := loadRefExpected(t)
	f := loadRef(t, "fp16_prec/prompt_learner/model.pth.tar-100")
	checkListing(t, f, exp.ClipAGIQA.Checkpoints["prompt_learner/model.pth.tar-100"], "float16")

	ctx, err := GetTensor(f.Root, "state_dict", "ctx")
	require.NoError(t, err)
	require.Equal(t, Float16, ctx.DType)
	v, err := ctx.Float32s()
	require.NoError(t, err)
	// Upcast fp16 equals the fixture's fp16-rounded values exactly.
	requireExactF32(t, flatten(exp.FP16Variant.Ctx), v, "fp16 ctx")

	// Rounding the fp32 ctx with Float32ToHalf reproduces torch's .half() bits.
	fp32 := flatten(exp.ClipAGIQA.Ctx)
	vals := make([]float32, len(fp32))
	for i, x := range fp32 {
		vals[i] = float32(x)
	}
	h, err := FromFloat32s(Float16, ctx.Shape, vals)
	require.NoError(t, err)
	assert.Equal(t, ctx.Data, h.Data)

	// The fp16 momentum buffer is the fp32 one cast: check against the fp32 summary.
	mb, err := GetTensor(f.Root, "optimizer", "state", 0, "momentum_buffer")
	require.NoError(t, err)
	require.Equal(t, Float16, mb.DType)
	mv, err := mb.Float32s()
	require.NoError(t, err)
	s := exp.TrainStepResume.MomentumCtx
	for i, w := range s.First {
		assert.Equal(t, HalfToFloat32(Float32ToHalf(float32(w))), mv[i], "momentum first %d", i)
	}
	for i, idx := range s.ProbeIdx {
		assert.Equal(t, HalfToFloat32(Float32ToHalf(float32(s.ProbeVals[i]))), mv[idx], "momentum probe %d", idx)
	}
}

func TestDasslRegression(t *testing.T) {
	exp := loadRefExpected(t)
	f := loadRef(t, "regression/model.pth.tar-100")
	checkListing(t, f, exp.ClipAGIQA.Checkpoints["regression/model.pth.tar-100"], "")
	sd, names, err := StateDict(f.Root)
	require.NoError(t, err)
	assert.Equal(t, []string{"1.weight", "1.bias", "4.weight", "4.bias"}, names)
	for name, want := range exp.ClipAGIQA.RegressionFull {
		v, err := sd[name].Float32s()
		require.NoError(t, err)
		requireExactF32(t, flattenAny(want), v, name)
	}
	for name, s := range exp.ClipAGIQA.Regression {
		checkSummary(t, s, sd[name], name)
	}
}

func TestTorchScriptTinyCLIP(t *testing.T) {
	exp := loadRefExpected(t)
	want := exp.TinyClip.StateDict
	require.Len(t, want, 89)
	archives := []struct {
		file string
		fp16 bool
	}{{"tiny_clip_vit.pt", false}, {"tiny_clip_vit_fp16.pt", true}}
	values := make([]map[string][]float32, len(archives))
	for ai, a := range archives {
		t.Run(a.file, func(t *testing.T) {
			f := loadRef(t, a.file)
			assert.True(t, f.TorchScript)
			assert.Equal(t, "4", f.Version)
			tensors, names, err := ModuleTensors(f.Root)
			require.NoError(t, err)
			require.Len(t, names, len(want))
			// StateDict on a module root gives the same answer.
			sd2, names2, err := StateDict(f.Root)
			require.NoError(t, err)
			assert.Equal(t, names, names2)
			assert.Len(t, sd2, len(tensors))
			values[ai] = map[string][]float32{}
			for i, e := range want {
				require.Equal(t, e.Name, names[i], "entry %d", i)
				tn := tensors[e.Name]
				assert.Equal(t, e.Shape, tn.Shape, e.Name)
				dt := e.DType32
				if a.fp16 {
					dt = e.DType16
				}
				require.Equal(t, dt, tn.DType.String(), e.Name)
				var v []float32
				if tn.DType == Int64 {
					iv, err := tn.Int64s()
					require.NoError(t, err)
					for _, x := range iv {
						v = append(v, float32(x))
					}
				} else {
					v, err = tn.Float32s()
					require.NoError(t, err)
				}
				values[ai][e.Name] = v
				requireExactF32(t, e.First, v[:len(e.First)], e.Name)
				var sum, abs float64
				for _, x := range v {
					sum += float64(x)
					abs += math.Abs(float64(x))
				}
				assert.InDelta(t, e.Sum, sum, math.Max(1e-3*math.Abs(e.Sum), 1e-6*abs), "%s sum", e.Name)
			}
			res, err := GetInt(f.Root, "input_resolution")
			require.NoError(t, err)
			assert.Equal(t, int64(224), res)
		})
	}
	// The README promises identical values in both archives after upcasting.
	if values[0] != nil && values[1] != nil {
		for _, e := range want {
			assert.Equal(t, values[0][e.Name], values[1][e.Name], e.Name)
		}
	}
}

// TestTruncatedReferenceCheckpoint cuts the real CLIP-AGIQA checkpoint in
// half (the central directory is lost) and at 90 % (inside the last record).
func TestTruncatedReferenceCheckpoint(t *testing.T) {
	full, err := os.ReadFile(refFile(t, "prompt_learner/model.pth.tar-100"))
	require.NoError(t, err)
	dir := t.TempDir()
	for _, frac := range []int{50, 90, 99} {
		p := filepath.Join(dir, fmt.Sprintf("cut%d.pth", frac))
		require.NoError(t, os.WriteFile(p, full[:len(full)*frac/100], 0o644))
		f, err := Load(p)
		require.Error(t, err, "cut at %d%%", frac)
		assert.Nil(t, f)
		assert.Contains(t, err.Error(), p)
	}
}

func BenchmarkLoadRegressionCheckpoint(b *testing.B) {
	var p string
	for _, d := range refDirs {
		if _, err := os.Stat(filepath.Join(d, "regression/model.pth.tar-100")); err == nil {
			p = filepath.Join(d, "regression/model.pth.tar-100")
			break
		}
	}
	if p == "" {
		b.Skip("reference fixture not found")
	}
	st, _ := os.Stat(p)
	b.SetBytes(st.Size())
	for i := 0; i < b.N; i++ {
		if _, err := Load(p); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSaveStateDict(b *testing.B) {
	vals := make([]float32, 512*3584)
	for i := range vals {
		vals[i] = float32(i%1000) * 1e-3
	}
	w, err := FromFloat32s(Float32, []int64{512, 3584}, vals)
	if err != nil {
		b.Fatal(err)
	}
	p := filepath.Join(b.TempDir(), "bench.pt")
	b.SetBytes(int64(len(w.Data)))
	for i := 0; i < b.N; i++ {
		if err := SaveStateDict(p, []NamedTensor{{"1.weight", w}}); err != nil {
			b.Fatal(err)
		}
	}
}
