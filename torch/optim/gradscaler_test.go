package optim

import (
	"math"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/clipagiqa/clipagiqa/torch"
	"github.com/clipagiqa/clipagiqa/torch/ptfile"
)

// The update rule against a table computed by hand from PyTorch's
// _amp_update_scale_ (libtorch 1.13 has no CPU kernel for it to compare
// with): interval 3, growth 2, backoff 0.5, from 8.
func TestGradScalerUpdateRule(t *testing.T) {
	g, err := NewGradScalerWith(8, 2, 0.5, 3)
	require.NoError(t, err)
	for i, c := range []struct {
		foundInf bool
		scale    float64
		tracker  int64
	}{
		{false, 8, 1},
		{false, 8, 2},
		{false, 16, 0}, // third clean step in a row: grows, count restarts
		{true, 8, 0},   // inf: backoff, count restarts
		{false, 8, 1},
		{true, 4, 0}, // an inf before the interval resets the count
		{true, 2, 0},
		{false, 2, 1},
		{false, 2, 2},
		{false, 4, 0},
		{false, 4, 1},
	} {
		g.Update(c.foundInf)
		assert.Equal(t, c.scale, g.Scale(), "after update %d", i+1)
		assert.Equal(t, c.tracker, g.GrowthTracker(), "after update %d", i+1)
	}
}

// PyTorch's defaults, and growth that would overflow float32 is not kept.
func TestGradScalerDefaultsAndOverflowingGrowth(t *testing.T) {
	d := NewGradScaler()
	assert.Equal(t, 65536.0, d.Scale())
	for range 1999 {
		d.Update(false)
	}
	assert.Equal(t, 65536.0, d.Scale(), "1999 clean steps: not yet")
	d.Update(false)
	assert.Equal(t, 131072.0, d.Scale(), "the 2000th clean step doubles")
	assert.Equal(t, int64(0), d.GrowthTracker())

	big, err := NewGradScalerWith(math.Ldexp(1, 127), 2, 0.5, 1)
	require.NoError(t, err)
	big.Update(false)
	assert.Equal(t, math.Ldexp(1, 127), big.Scale(), "2^128 is inf in float32: scale kept")
	assert.Equal(t, int64(0), big.GrowthTracker())

	for _, bad := range []struct {
		init, growth, backoff float64
		interval              int64
	}{{0, 2, 0.5, 1}, {math.Inf(1), 2, 0.5, 1}, {1, 1, 0.5, 1}, {1, 2, 1, 1}, {1, 2, 0, 1}, {1, 2, 0.5, 0}, {math.NaN(), 2, 0.5, 1}} {
		_, err := NewGradScalerWith(bad.init, bad.growth, bad.backoff, bad.interval)
		assert.Error(t, err, "%+v", bad)
	}
}

// backwardOf runs backward of sum(p ⊙ c) × scale: p's gradient is c × scale.
func backwardOf(t *testing.T, g *GradScaler, p *torch.Tensor, c []float32) {
	t.Helper()
	s := torch.NewScope()
	defer s.Close()
	loss := s.Sum(s.Mul(p, s.FromFloat32(c, int64(len(c)))), false)
	require.NoError(t, s.Err())
	require.NoError(t, g.ScaleLoss(s, loss).Backward())
}

func gradOf(t *testing.T, p *torch.Tensor) []float32 {
	t.Helper()
	gr, err := p.Grad()
	require.NoError(t, err)
	require.NotNil(t, gr)
	defer gr.Close()
	v, err := gr.Float32s()
	require.NoError(t, err)
	return v
}

// Unscale divides the gradients by the scale in place and flags inf and
// NaN in any of them; parameters without a gradient are skipped.
func TestGradScalerUnscale(t *testing.T) {
	g, err := NewGradScalerWith(1024, 2, 0.5, 2000)
	require.NoError(t, err)
	a := tensor(t, []float32{1, 2, 3}, 3)
	b := tensor(t, []float32{4, 5}, 2)
	none := tensor(t, []float32{6}, 1)
	backwardOf(t, g, a, []float32{0.5, -0.25, 3e-8}) // 3e-8 × 1024: still exact after unscaling
	backwardOf(t, g, b, []float32{7, -1e30})
	assert.Equal(t, []float32{512, -256, float32(3e-8) * 1024}, gradOf(t, a), "scaled")
	live := torch.LiveTensors()
	foundInf, err := g.Unscale([]*torch.Tensor{a, none, b})
	require.NoError(t, err)
	assert.False(t, foundInf)
	assert.Equal(t, live, torch.LiveTensors(), "Unscale frees what it allocates")
	assert.Equal(t, []float32{0.5, -0.25, 3e-8}, gradOf(t, a))
	assert.Equal(t, []float32{7, -1e30}, gradOf(t, b))

	for _, bad := range []float32{float32(math.Inf(1)), float32(math.Inf(-1)), float32(math.NaN())} {
		require.NoError(t, a.ZeroGrad())
		require.NoError(t, b.ZeroGrad())
		backwardOf(t, g, a, []float32{1, 2, 3})
		backwardOf(t, g, b, []float32{1, bad})
		foundInf, err := g.Unscale([]*torch.Tensor{a, b})
		require.NoError(t, err)
		assert.True(t, foundInf, "gradient %v", bad)
	}
	// An overflow made by the scale itself: 1e36 × 1024 is inf in float32.
	require.NoError(t, a.ZeroGrad())
	require.NoError(t, b.ZeroGrad())
	backwardOf(t, g, a, []float32{1e36, 0, 0})
	foundInf, err = g.Unscale([]*torch.Tensor{a, b})
	require.NoError(t, err)
	assert.True(t, foundInf, "overflow of the scaled gradient")
}

// The state dict has PyTorch's keys and types, survives a torch.save-format
// file, and loads back; PyTorch reads our file (python3-torch when present).
func TestGradScalerStateDictRoundTrip(t *testing.T) {
	g, err := NewGradScalerWith(4096, 2, 0.5, 100)
	require.NoError(t, err)
	for range 7 {
		g.Update(false)
	}
	g.Update(true)
	g.Update(false)
	g.Update(false) // scale 2048, tracker 2
	path := filepath.Join(t.TempDir(), "scaler.pth")
	require.NoError(t, ptfile.SaveValue(path, g.StateDict()))
	f, err := ptfile.Load(path)
	require.NoError(t, err)
	d, ok := f.Root.(*ptfile.Dict)
	require.True(t, ok)
	var back GradScaler
	require.NoError(t, back.LoadStateDict(d))
	assert.Equal(t, *g, back)
	assert.Equal(t, 2048.0, back.Scale())
	assert.Equal(t, int64(2), back.GrowthTracker())

	bad := ptfile.NewDict(ptfile.KindDict)
	assert.ErrorContains(t, back.LoadStateDict(bad), "empty")
	bad.Set("scale", 1.0)
	assert.Error(t, back.LoadStateDict(bad))
	assert.Equal(t, *g, back, "a failed load changes nothing")

	if exec.Command(pythonPath, "-c", "import torch").Run() != nil {
		t.Skip("python3-torch not installed: checked the Go round trip only")
	}
	out, err := exec.Command(pythonPath, "-c", `import sys, torch
sd = torch.load(sys.argv[1])
print(sorted((k, type(v).__name__, v) for k, v in sd.items()))`, path).CombinedOutput()
	require.NoError(t, err, string(out))
	assert.Equal(t, "[('_growth_tracker', 'int', 2), ('backoff_factor', 'float', 0.5), ('growth_factor', 'float', 2.0), ('growth_interval', 'int', 100), ('scale', 'float', 2048.0)]", strings.TrimSpace(string(out)))
}
