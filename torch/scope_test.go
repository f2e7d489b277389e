package torch

import (
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/wangkuiyi/gotorch"
)

func TestRuntimeHandshake(t *testing.T) {
	require.NoError(t, CheckRuntime())
	assert.Equal(t, ShimVersion, NativeShimVersion())
	assert.Regexp(t, `^\d+\.\d+`, TorchVersion())
	assert.GreaterOrEqual(t, NumThreads(), 1)
	require.NoError(t, SetNumThreads(2))
	assert.Equal(t, 2, NumThreads())
	require.Error(t, SetNumThreads(0))
}

func TestParseDevice(t *testing.T) {
	for _, c := range []struct {
		in   string
		want Device
		bad  bool
	}{
		{"cpu", CPU, false}, {"", CPU, false}, {"cuda", Device{CUDA, 0}, false},
		{"cuda:3", Device{CUDA, 3}, false}, {"cuda:x", Device{}, true}, {"tpu", Device{}, true},
	} {
		d, err := ParseDevice(c.in)
		if c.bad {
			assert.Error(t, err, c.in)
			continue
		}
		require.NoError(t, err, c.in)
		assert.Equal(t, c.want, d, c.in)
	}
	if !CUDAAvailable() {
		assert.ErrorContains(t, CheckDevice(Device{CUDA, 0}), "CUDA is not available")
	}
}

func TestScopeErrorsAreStickyAndDescriptive(t *testing.T) {
	s := NewScope()
	defer s.Close()
	a := s.FromFloat32([]float32{1, 2, 3, 4, 5, 6}, 2, 3)
	b := s.FromFloat32([]float32{1, 2, 3, 4}, 2, 2)
	out := s.MatMul(a, b)
	assert.Nil(t, out)
	require.Error(t, s.Err())
	assert.Contains(t, s.Err().Error(), "matmul(float32[2 3], float32[2 2])")
	// Later ops do nothing and keep the first error.
	first := s.Err()
	assert.Nil(t, s.Relu(a))
	assert.Equal(t, first, s.Err())
}

func TestBadInputsReturnErrors(t *testing.T) {
	_, err := FromFloat32([]float32{1, 2, 3}, 2, 2)
	assert.ErrorContains(t, err, "do not fill shape")
	s := NewScope()
	defer s.Close()
	s.Reshape(s.FromFloat32([]float32{1, 2, 3}, 3), 2, 2)
	assert.ErrorContains(t, s.Err(), "reshape")

	s2 := NewScope()
	x := s2.FromFloat32([]float32{1}, 1)
	s2.Close()
	s3 := NewScope()
	defer s3.Close()
	s3.Relu(x)
	assert.ErrorContains(t, s3.Err(), "used after Close")

	s4 := NewScope()
	defer s4.Close()
	s4.Embedding(s4.FromFloat32(make([]float32, 6), 3, 2), s4.FromInt64([]int64{7}, 1))
	assert.ErrorContains(t, s4.Err(), "embedding")

	var nilT *Tensor
	_, err = nilT.Float32s()
	assert.Error(t, err)
	assert.Error(t, nilT.Backward())
}

func TestBackwardErrorIsReturned(t *testing.T) {
	s := NewScope()
	defer s.Close()
	x := s.FromFloat32([]float32{1, 2}, 2) // no requires_grad: backward must fail cleanly
	y := s.Sum(s.Mul(x, x), false)
	require.NoError(t, s.Err())
	assert.ErrorContains(t, y.Backward(), "backward")
}

func TestNoGradScopeRecordsNoHistory(t *testing.T) {
	w, err := FromFloat32([]float32{1, 2, 3}, 3)
	require.NoError(t, err)
	defer w.Close()
	require.NoError(t, w.SetRequiresGrad(true))
	for _, mode := range []GradMode{NoGrad, InferenceMode} {
		s := NewScope().WithGrad(mode)
		y := s.MulScalar(w, 2)
		require.NoError(t, s.Err())
		assert.False(t, y.RequiresGrad(), "mode %d", mode)
		s.Close()
	}
	s := NewScope()
	defer s.Close()
	assert.True(t, s.MulScalar(w, 2).RequiresGrad())
}

func TestDropout(t *testing.T) {
	require.NoError(t, ManualSeed(7))
	s := NewScope()
	defer s.Close()
	x := s.Full(1, Float32, 10000)
	eval, err := s.Dropout(x, 0.5, false).Float32s()
	require.NoError(t, err)
	for _, v := range eval {
		require.Equal(t, float32(1), v)
	}
	train, err := s.Dropout(x, 0.5, true).Float32s()
	require.NoError(t, err)
	zeros := 0
	for _, v := range train {
		if v == 0 {
			zeros++
		} else {
			require.Equal(t, float32(2), v, "kept values are scaled by 1/(1-p)")
		}
	}
	assert.InDelta(t, 5000, zeros, 300)
}

func TestGotorchInterop(t *testing.T) {
	g := gotorch.NewTensor([][]float32{{1, 2}, {3, 4}})
	x, err := FromGotorch(g)
	require.NoError(t, err)
	defer x.Close()
	s := NewScope()
	defer s.Close()
	v, err := s.MulScalar(x, 10).Float32s()
	require.NoError(t, err)
	assert.Equal(t, []float32{10, 20, 30, 40}, v)
	back, err := s.AddScalar(x, 1).Gotorch()
	require.NoError(t, err)
	assert.Equal(t, []int64{2, 2}, back.Shape())
	assert.Equal(t, float32(5), back.Sum().Item().(float32)-9)
}

func TestTorchScriptLoadAndErrors(t *testing.T) {
	sd, err := LoadTorchScript("../testdata/clip-agiqa-ref/tiny_clip_vit_fp16.pt")
	require.NoError(t, err)
	defer sd.Close()
	require.Contains(t, sd.Tensors, "visual.transformer.resblocks.0.attn.in_proj_weight")
	assert.Equal(t, []int64{576, 192}, sd.Get("visual.transformer.resblocks.0.attn.in_proj_weight").Shape())
	assert.Equal(t, Float16, sd.Get("visual.transformer.resblocks.0.attn.in_proj_weight").DType())
	assert.Equal(t, Float32, sd.Get("token_embedding.weight").DType())
	res, err := sd.Get("input_resolution").Item()
	require.NoError(t, err)
	assert.Equal(t, 224.0, res)

	dir := t.TempDir()
	trunc := filepath.Join(dir, "trunc.pt")
	full, err := os.ReadFile("../testdata/clip-agiqa-ref/tiny_clip_vit_fp16.pt")
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(trunc, full[:len(full)/2], 0o644))
	junk := filepath.Join(dir, "junk.pt")
	require.NoError(t, os.WriteFile(junk, []byte(strings.Repeat("not a zip ", 100)), 0o644))
	empty := filepath.Join(dir, "empty.pt")
	require.NoError(t, os.WriteFile(empty, nil, 0o644))
	for _, p := range []string{filepath.Join(dir, "missing.pt"), trunc, junk, empty, dir} {
		_, err := LoadTorchScript(p)
		require.Error(t, err, p)
		assert.Contains(t, err.Error(), p)
	}
}

func readRSS(t *testing.T) int64 {
	b, err := os.ReadFile("/proc/self/statm")
	require.NoError(t, err)
	f := strings.Fields(string(b))
	pages, err := strconv.ParseInt(f[1], 10, 64)
	require.NoError(t, err)
	return pages * int64(os.Getpagesize())
}

// TestMemoryStaysFlat runs an op-heavy loop with a scope per iteration and
// checks that every handle is freed and RSS does not grow.
func TestMemoryStaysFlat(t *testing.T) {
	w, err := FromFloat32(make([]float32, 256*256), 256, 256)
	require.NoError(t, err)
	defer w.Close()
	require.NoError(t, w.SetRequiresGrad(true))
	iter := func() {
		s := NewScope()
		defer s.Close()
		x := s.Randn(Float32, 32, 256)
		h := s.QuickGelu(s.LayerNorm(s.Linear(x, w, nil), nil, nil, 1e-5))
		h = s.Softmax(s.MatMul(h, s.Transpose(h, 0, 1)), -1)
		loss := s.Mean(h, false)
		require.NoError(t, s.Err())
		require.NoError(t, loss.Backward())
		require.NoError(t, w.ZeroGrad())
	}
	for range 50 { // warm up allocator caches
		iter()
	}
	runtime.GC()
	startLive := LiveTensors()
	startRSS := readRSS(t)
	for range 1000 {
		iter()
	}
	assert.Equal(t, startLive, LiveTensors(), "every tensor handle created in the loop is freed")
	grown := readRSS(t) - startRSS
	assert.Less(t, grown, int64(16<<20), "RSS grew by %d bytes over 1000 iterations", grown)
}

func TestCloseIsIdempotent(t *testing.T) {
	start := LiveTensors()
	x, err := FromFloat32([]float32{1}, 1)
	require.NoError(t, err)
	assert.Equal(t, start+1, LiveTensors())
	x.Close()
	x.Close()
	assert.Equal(t, start, LiveTensors())
	assert.False(t, x.Valid())
}
