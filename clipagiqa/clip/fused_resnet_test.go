package clip

import (
	"math"
	"strings"
	"sync"
	"testing"

	"github.com/clipagiqa/clipagiqa/torch"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// relL2 is ‖got − want‖ / ‖want‖.
func relL2(got, want []float32) float64 {
	var d, n float64
	for i := range want {
		e := float64(got[i]) - float64(want[i])
		d += e * e
		n += float64(want[i]) * float64(want[i])
	}
	return math.Sqrt(d / n)
}

// opByOp is the trunk without the fused op (the path training takes).
func opByOp(t *testing.T, rn *ModifiedResNet, s *torch.Scope, px *torch.Tensor) []float32 {
	t.Helper()
	out := float32s(t, s.ToMemoryFormat(rn.forward(s, px, nil), torch.RowMajor))
	require.NoError(t, s.Err())
	return out
}

func convCount(rn *ModifiedResNet) int64 {
	n := int64(3)
	for _, layer := range rn.stages() {
		for _, b := range *layer {
			n += 3
			if b.Downsample != nil {
				n++
			}
		}
	}
	return n
}

// The fused eval trunk folds each convolution once, refolds exactly the ones
// whose tensors changed (in place or replaced), and always equals the
// op-by-op trunk on the current weights to float32 rounding.
func TestFusedEvalTrunkFollowsWeightChanges(t *testing.T) {
	rn := loadTinyRN(t).Visual.(*ModifiedResNet)
	s := torch.NewScope().WithGrad(torch.NoGrad)
	defer s.Close()
	px := fixturePixels(t, s, 224)
	check := func(what string, wantFolds int64) []float32 {
		t.Helper()
		got := float32s(t, rn.FeatureMap(s, px))
		require.NoError(t, s.Err())
		assert.Equal(t, wantFolds, rn.FusedEvalFolds(), "%s: folds", what)
		e := relL2(got, opByOp(t, rn, s, px))
		t.Logf("%s: fused vs op by op, relative L2 %.3g", what, e)
		assert.Less(t, e, 1e-5, what)
		return got
	}
	n := convCount(rn)
	first := check("first call", n)
	check("unchanged weights", n)

	// In place: a running variance doubled (CopyFrom bumps its version).
	bn := &rn.Layer2[0].BN2
	doubled := s.MulScalar(bn.RunningVar, 2)
	require.NoError(t, s.Err())
	require.NoError(t, bn.RunningVar.CopyFrom(doubled))
	inPlace := check("running_var updated in place", n+1)
	assert.Greater(t, relL2(inPlace, first), 1e-4, "the change must matter")

	// Replaced: another tensor in the conv weight's field.
	b := rn.Layer3[0]
	old := b.Conv1
	b.Conv1 = s.Keep(s.MulScalar(old, 0.5))
	require.NoError(t, s.Err())
	replaced := check("conv weight replaced", n+2)
	assert.Greater(t, relL2(replaced, inPlace), 1e-4, "the change must matter")
	b.Conv1.Close()
	b.Conv1 = old
	restored := check("conv weight restored", n+3)

	// A training-mode forward moves the running statistics inside
	// BatchNorm's kernel (libtorch 1.13 leaves their versions alone): every
	// convolution is refolded.
	mean := float32s(t, rn.Layer1[0].BN1.RunningMean)
	rn.SetTraining(true)
	rn.FeatureMap(s, px)
	require.NoError(t, s.Err())
	rn.SetTraining(false)
	assert.NotEqual(t, mean, float32s(t, rn.Layer1[0].BN1.RunningMean), "the running mean must move")
	trained := check("after a training-mode forward", 2*n+3)
	assert.Greater(t, relL2(trained, restored), 1e-4, "the change must matter")

	// Inference mode gives the same numbers.
	inf := torch.NewScope().WithGrad(torch.InferenceMode)
	defer inf.Close()
	got := float32s(t, rn.FeatureMap(inf, px))
	require.NoError(t, inf.Err())
	assert.Less(t, relL2(got, opByOp(t, rn, s, px)), 1e-5)
	assert.Equal(t, 2*n+3, rn.FusedEvalFolds())
}

// Autograd, training mode, a forced row-major layout and SetFusedEval(false)
// take the op-by-op path.
func TestFusedEvalTrunkStepsAside(t *testing.T) {
	rn := loadTinyRN(t).Visual.(*ModifiedResNet)
	s := torch.NewScope()
	defer s.Close()
	px := fixturePixels(t, s, 224)

	require.NoError(t, rn.Conv2.SetRequiresGrad(true))
	y := rn.FeatureMap(s, px)
	require.NoError(t, s.Err())
	assert.True(t, y.RequiresGrad(), "a weight that requires grad needs the differentiable path")
	require.NoError(t, rn.Conv2.SetRequiresGrad(false))

	y = rn.FeatureMap(s, px) // grad mode on, nothing requires grad: fused
	require.NoError(t, s.Err())
	assert.False(t, y.RequiresGrad())
	assert.Equal(t, convCount(rn), rn.FusedEvalFolds())

	for _, c := range []struct {
		name string
		set  func()
		undo func()
	}{
		{"training mode", func() { rn.SetTraining(true) }, func() { rn.SetTraining(false) }},
		{"row-major layout", func() { rn.SetMemoryFormat(torch.RowMajor) }, func() { rn.layout = nil }},
		{"SetFusedEval(false)", func() { rn.SetFusedEval(false) }, func() { rn.SetFusedEval(true) }},
	} {
		c.set()
		_, ok := rn.fusedForward(s, px)
		assert.False(t, ok, c.name)
		c.undo()
	}
	assert.Zero(t, rn.FusedEvalFolds(), "SetFusedEval(false) frees the folded weights")
	_, ok := rn.fusedForward(s, px)
	assert.True(t, ok, "fused again after SetFusedEval(true)")
	require.NoError(t, s.Err())
}

// Calls from several goroutines agree, and a loop of calls leaves no tensors.
func TestFusedEvalTrunkConcurrentAndFlat(t *testing.T) {
	rn := loadTinyRN(t).Visual.(*ModifiedResNet)
	s := torch.NewScope().WithGrad(torch.InferenceMode)
	defer s.Close()
	px := fixturePixels(t, s, 224)
	want := float32s(t, rn.FeatureMap(s, px))
	require.NoError(t, s.Err())

	var wg sync.WaitGroup
	got := make([][]float32, 4)
	errs := make([]error, len(got))
	for i := range got {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sub := torch.NewScope().WithGrad(torch.InferenceMode)
			defer sub.Close()
			y := rn.FeatureMap(sub, px)
			if errs[i] = sub.Err(); errs[i] == nil {
				got[i], errs[i] = y.Float32s()
			}
		}()
	}
	wg.Wait()
	for i := range got {
		require.NoError(t, errs[i])
		assert.Equal(t, want, got[i], "goroutine %d", i)
	}

	live := torch.LiveTensors()
	for range 3 {
		sub := s.Sub()
		rn.FeatureMap(sub, px)
		require.NoError(t, sub.Err())
		sub.Close()
	}
	assert.Equal(t, live, torch.LiveTensors())
}

// NewFusedResNet refuses weight sets that are not a ModifiedResNet trunk.
func TestNewFusedResNetRefusesBadWeights(t *testing.T) {
	rn := loadTinyRN(t).Visual.(*ModifiedResNet)
	s := torch.NewScope().WithGrad(torch.NoGrad)
	defer s.Close()
	base, err := rn.trunkWeights()
	require.NoError(t, err)
	with := func(edit func(map[string]*torch.Tensor)) map[string]*torch.Tensor {
		ws := map[string]*torch.Tensor{}
		for k, v := range base {
			ws[k] = v
		}
		edit(ws)
		return ws
	}
	for _, c := range []struct {
		name    string
		weights map[string]*torch.Tensor
		want    string
	}{
		{"missing BatchNorm bias", with(func(ws map[string]*torch.Tensor) { delete(ws, "layer1.0.bn1.bias") }), "missing weight layer1.0.bn1.bias"},
		{"attnpool weight", with(func(ws map[string]*torch.Tensor) { ws["attnpool.q_proj.weight"] = rn.AttnPool.QProj.Weight }), "unexpected weight attnpool.q_proj.weight"},
		{"BatchNorm of another width", with(func(ws map[string]*torch.Tensor) { ws["bn2.weight"] = rn.BN3.Weight }), "the BatchNorm after conv2.weight has shape"},
		{"half precision", with(func(ws map[string]*torch.Tensor) { ws["conv1.weight"] = s.Cast(rn.Conv1, torch.Float16) }), "must be CPU float32"},
		{"no stage 4", with(func(ws map[string]*torch.Tensor) {
			for k := range ws {
				if strings.HasPrefix(k, "layer4.") {
					delete(ws, k)
				}
			}
		}), "stage layer4 has no blocks"},
	} {
		t.Run(c.name, func(t *testing.T) {
			require.NoError(t, s.Err())
			f, err := torch.NewFusedResNet(c.weights, rn.blockStrides(), bnEps)
			if f != nil {
				f.Close()
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), c.want)
		})
	}
	// The strides are the model's: one per block, each at least 1.
	for name, c := range map[string]struct {
		strides []int64
		want    string
	}{
		"a stride too few": {rn.blockStrides()[1:], "block strides given, the weights have"},
		"zero stride":      {make([]int64, len(rn.blockStrides())), "block stride 0"},
	} {
		f, err := torch.NewFusedResNet(base, c.strides, bnEps)
		if f != nil {
			f.Close()
		}
		require.Error(t, err, name)
		assert.Contains(t, err.Error(), c.want, name)
	}
}
