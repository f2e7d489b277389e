package torch

import (
	"encoding/json"
	"math"
	"os"
	"testing"

	"github.com/stretchr/testify/require"
)

// nnCase is one case of testdata/nn_ops.json (see testdata/gen/nn_ops.py).
type nnCase struct {
	Name     string         `json:"name"`
	Inputs   []*refTensor   `json:"inputs"`
	Ints     []*refTensor   `json:"ints"`
	Out      refTensor      `json:"out"`
	Upstream refTensor      `json:"upstream"`
	Grads    []*refTensor   `json:"grads"`
	Attrs    map[string]any `json:"attrs"`
}

type nnClip struct {
	NormType any         `json:"norm_type"`
	MaxNorm  float64     `json:"max_norm"`
	Params   []refTensor `json:"params"`
	Grads    []refTensor `json:"grads"`
	Clipped  []refTensor `json:"clipped"`
	Total    float64     `json:"total"`
}

type nnBNSteps struct {
	Weight, Bias refTensor
	Momentum     float64 `json:"momentum"`
	Eps          float64 `json:"eps"`
	Steps        []struct {
		X           refTensor `json:"x"`
		Out         refTensor `json:"out"`
		RunningMean []float64 `json:"running_mean"`
		RunningVar  []float64 `json:"running_var"`
	} `json:"steps"`
}

type nnRef struct {
	Cases   []nnCase  `json:"cases"`
	Clip    []nnClip  `json:"clip_grad_norm"`
	BNSteps nnBNSteps `json:"bn_steps"`
}

func loadNNRef(t *testing.T) nnRef {
	t.Helper()
	b, err := os.ReadFile("testdata/nn_ops.json")
	require.NoError(t, err)
	var r nnRef
	require.NoError(t, json.Unmarshal(b, &r))
	require.NotEmpty(t, r.Cases)
	return r
}

func attrPair(c nnCase, k string) Pair {
	v := attrIntsMap(c.Attrs, k)
	return Pair{v[0], v[1]}
}

func attrIntsMap(m map[string]any, k string) []int64 {
	var out []int64
	for _, v := range m[k].([]any) {
		out = append(out, int64(v.(float64)))
	}
	return out
}

func attrFloats(m map[string]any, k string) []float32 {
	var out []float32
	for _, v := range m[k].([]any) {
		out = append(out, float32(v.(float64)))
	}
	return out
}

func interpMode(name string) InterpMode {
	switch name {
	case "bicubic":
		return Bicubic
	case "bilinear":
		return Bilinear
	}
	return Nearest
}

// Tolerances: float32 on both sides, same kernels; differences come from
// summation order only (the reductions of conv2d/batch_norm gradients).
const nnAtol, nnRtol = 1e-5, 1e-5

// TestNNOpsAgainstPyTorch runs each op forward on the stored inputs, then
// backward from sum(out·upstream), and compares the output and every input
// gradient with PyTorch's.
func TestNNOpsAgainstPyTorch(t *testing.T) {
	ref := loadNNRef(t)
	for _, c := range ref.Cases {
		t.Run(c.Name, func(t *testing.T) {
			s := NewScope()
			defer s.Close()
			in := make([]*Tensor, len(c.Inputs))
			for i, r := range c.Inputs {
				in[i] = s.FromFloat32(r.f32(), r.Shape...)
				if c.Grads[i] != nil {
					require.NoError(t, in[i].SetRequiresGrad(true))
				}
			}
			var out *Tensor
			a := c.Attrs
			switch c.Name {
			case "conv2d_groups":
				out = s.Conv2DEx(in[0], in[1], in[2], Conv2DOptions{Stride: attrPair(c, "stride"), Padding: attrPair(c, "padding"), Dilation: attrPair(c, "dilation"), Groups: attrI2(a, "groups")})
			case "conv2d_nobias", "conv2d_depthwise":
				out = s.Conv2DEx(in[0], in[1], nil, Conv2DOptions{Stride: attrPair(c, "stride"), Padding: attrPair(c, "padding"), Dilation: attrPair(c, "dilation"), Groups: attrI2(a, "groups")})
			case "avg_pool2d_k2", "avg_pool2d_pad_ceil", "avg_pool2d_pad_exclude", "avg_pool2d_divisor":
				out = s.AvgPool2D(in[0], AvgPool2DOptions{Kernel: attrPair(c, "kernel"), Stride: attrPair(c, "stride"), Padding: attrPair(c, "padding"),
					CeilMode: a["ceil_mode"].(bool), CountIncludePad: a["count_include_pad"].(bool), DivisorOverride: attrI2(a, "divisor_override")})
			case "max_pool2d":
				out = s.MaxPool2D(in[0], MaxPool2DOptions{Kernel: attrPair(c, "kernel"), Stride: attrPair(c, "stride"), Padding: attrPair(c, "padding"), Dilation: attrPair(c, "dilation"), CeilMode: a["ceil_mode"].(bool)})
			case "adaptive_avg_pool2d_3x2", "adaptive_avg_pool2d_1":
				out = s.AdaptiveAvgPool2D(in[0], attrPair(c, "size"))
			case "batch_norm_train", "batch_norm_eval":
				rm := s.FromFloat32(attrFloats(a, "running_mean"), 3)
				rv := s.FromFloat32(attrFloats(a, "running_var"), 3)
				training := a["training"].(bool)
				out = s.BatchNorm(in[0], in[1], in[2], rm, rv, training, a["momentum"].(float64), a["eps"].(float64))
				require.NoError(t, s.Err())
				wantM, wantV := a["running_mean"], a["running_var"]
				if training {
					wantM, wantV = a["running_mean_after"], a["running_var_after"]
				}
				requireCloseTensor(t, anyFloats(wantM), rm, 1e-6, 1e-6, "running_mean")
				requireCloseTensor(t, anyFloats(wantV), rv, 1e-6, 1e-6, "running_var")
			case "interpolate_bicubic", "interpolate_bicubic_down", "interpolate_bicubic_ac", "interpolate_bilinear", "interpolate_nearest":
				out = s.Interpolate(in[0], attrPair(c, "size"), interpMode(a["mode"].(string)), a["align_corners"].(bool))
			case "flatten":
				out = s.Flatten(in[0], attrI2(a, "start"), attrI2(a, "end"))
			case "amax":
				out = s.Amax(in[0], a["keepdim"].(bool), attrIntsMap(a, "dims")...)
			case "masked_fill":
				mask := s.Cast(s.FromInt64(attrIntsMap(a, "mask"), attrIntsMap(a, "mask_shape")...), Bool)
				out = s.MaskedFill(in[0], mask, a["value"].(float64))
			case "embedding_padded":
				ids := s.FromInt64(c.Ints[0].i64(), c.Ints[0].Shape...)
				out = s.EmbeddingPadded(in[0], ids, attrI2(a, "padding_idx"))
			case "cosine_embedding_loss":
				out = s.CosineEmbeddingLoss(in[0], in[1], in[2], a["margin"].(float64))
			default:
				t.Fatalf("no Go mapping for case %q", c.Name)
			}
			require.NoError(t, s.Err())
			require.Equal(t, c.Out.Shape, out.Shape(), "shape")
			requireCloseTensor(t, c.Out.Data, out, nnAtol, nnRtol, "forward")

			up := s.FromFloat32(c.Upstream.f32(), c.Upstream.Shape...)
			loss := s.Sum(s.Mul(out, up), false)
			require.NoError(t, s.Err())
			require.NoError(t, loss.Backward())
			for i, g := range c.Grads {
				if g == nil {
					continue
				}
				gt, err := in[i].Grad()
				require.NoError(t, err)
				require.NotNil(t, gt, "input %d has no gradient", i)
				s.Adopt(gt)
				requireCloseTensor(t, g.Data, gt, nnAtol, nnRtol, "gradient of input "+string(rune('0'+i)))
			}
		})
	}
}

func attrI2(m map[string]any, k string) int64 { return int64(m[k].(float64)) }

func anyFloats(v any) []float64 {
	var out []float64
	for _, e := range v.([]any) {
		out = append(out, e.(float64))
	}
	return out
}

func requireCloseTensor(t *testing.T, want []float64, got *Tensor, atol, rtol float64, msg string) {
	t.Helper()
	v, err := got.Float32s()
	require.NoError(t, err, msg)
	requireClose(t, want, v, atol, rtol, msg)
}

// TestBatchNormRunningStatsOverSteps checks three training steps of
// batch_norm against PyTorch: outputs and the running buffers after each.
func TestBatchNormRunningStatsOverSteps(t *testing.T) {
	ref := loadNNRef(t).BNSteps
	s := NewScope()
	defer s.Close()
	w := s.FromFloat32(ref.Weight.f32(), ref.Weight.Shape...)
	b := s.FromFloat32(ref.Bias.f32(), ref.Bias.Shape...)
	rm := s.Zeros(Float32, 3)
	rv := s.Full(1, Float32, 3)
	for _, st := range ref.Steps {
		x := s.FromFloat32(st.X.f32(), st.X.Shape...)
		y := s.BatchNorm(x, w, b, rm, rv, true, ref.Momentum, ref.Eps)
		require.NoError(t, s.Err())
		requireCloseTensor(t, st.Out.Data, y, nnAtol, nnRtol, "output")
		requireCloseTensor(t, st.RunningMean, rm, 1e-6, 1e-6, "running_mean")
		requireCloseTensor(t, st.RunningVar, rv, 1e-6, 1e-6, "running_var")
	}
}

func TestBatchNormEvalNeedsRunningStats(t *testing.T) {
	s := NewScope()
	defer s.Close()
	x := s.Randn(Float32, 2, 3, 4, 4)
	require.Nil(t, s.BatchNorm(x, nil, nil, nil, nil, false, 0.1, 1e-5))
	require.ErrorContains(t, s.Err(), "running_mean")
}

func TestInterpolateRejectsBadInput(t *testing.T) {
	s := NewScope()
	defer s.Close()
	require.Nil(t, s.Interpolate(s.Randn(Float32, 3, 4), Sq(2), Bicubic, false))
	require.ErrorContains(t, s.Err(), "4-D")
	s2 := NewScope()
	defer s2.Close()
	require.Nil(t, s2.Interpolate(s2.Randn(Float32, 1, 1, 3, 4), Sq(2), InterpMode(9), false))
	require.ErrorContains(t, s2.Err(), "unknown interpolation mode")
}

func TestClipGradNormMatchesPyTorch(t *testing.T) {
	for _, c := range loadNNRef(t).Clip {
		normType := math.Inf(1)
		if f, ok := c.NormType.(float64); ok {
			normType = f
		}
		s := NewScope()
		ps := make([]*Tensor, len(c.Params))
		for i, p := range c.Params {
			ps[i] = s.FromFloat32(p.f32(), p.Shape...)
			require.NoError(t, ps[i].SetRequiresGrad(true))
			// Give each parameter exactly the stored gradient: d/dp sum(p·g) = g.
			g := s.FromFloat32(c.Grads[i].f32(), c.Grads[i].Shape...)
			require.NoError(t, s.Sum(s.Mul(ps[i], g), false).Backward())
		}
		require.NoError(t, s.Err())
		total, err := ClipGradNorm(ps, c.MaxNorm, normType)
		require.NoError(t, err)
		require.InDelta(t, c.Total, total, 1e-5*c.Total, "total norm (type %v)", normType)
		for i, p := range ps {
			g, err := p.Grad()
			require.NoError(t, err)
			s.Adopt(g)
			requireCloseTensor(t, c.Clipped[i].Data, g, 1e-6, 1e-5, "clipped gradient")
		}
		s.Close()
	}
	_, err := ClipGradNorm([]*Tensor{nil}, 1, 2)
	require.Error(t, err)
}

// libtorch's own shape checks come back as Go errors naming the op and its
// inputs; later ops of the scope then do nothing.
func TestNNOpsReportLibtorchErrors(t *testing.T) {
	cases := []struct {
		name string
		run  func(s *Scope) *Tensor
		want string
	}{
		{"conv2d channels", func(s *Scope) *Tensor {
			return s.Conv2DEx(s.Randn(Float32, 1, 3, 8, 8), s.Randn(Float32, 4, 2, 3, 3), nil, Conv2DOptions{})
		}, "to have 2 channels, but got 3 channels"},
		{"conv2d groups", func(s *Scope) *Tensor {
			return s.Conv2DEx(s.Randn(Float32, 1, 4, 8, 8), s.Randn(Float32, 4, 2, 3, 3), nil, Conv2DOptions{Groups: 3})
		}, "Groups:3}(float32[1 4 8 8], float32[4 2 3 3], nil): Given groups=3"},
		{"avg_pool2d kernel too large", func(s *Scope) *Tensor {
			return s.AvgPool2D(s.Randn(Float32, 1, 1, 2, 2), AvgPool2DOpts(Sq(5)))
		}, "Output size is too small"},
		{"batch_norm channels", func(s *Scope) *Tensor {
			return s.BatchNorm(s.Randn(Float32, 2, 3, 4, 4), nil, nil, s.Zeros(Float32, 5), s.Zeros(Float32, 5), false, 0.1, 1e-5)
		}, "running_mean should contain 3 elements not 5"},
		{"masked_fill non-bool mask", func(s *Scope) *Tensor {
			return s.MaskedFill(s.Randn(Float32, 2, 2), s.Randn(Float32, 2, 2), 0)
		}, "masked_fill(float32[2 2], float32[2 2]): "}, // libtorch's wording differs between 1.13 and 2.x
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := NewScope()
			defer s.Close()
			require.Nil(t, c.run(s))
			require.ErrorContains(t, s.Err(), c.want)
			require.Nil(t, s.Flatten(s.Randn(Float32, 2, 2), 0, 1), "ops after an error do nothing")
		})
	}
}

// A channels-last copy holds the same values under other strides; convolution
// keeps the layout and gives the row-major result to float32 rounding, and
// gradients flow back to the row-major input.
func TestChannelsLastKeepsValuesAndGradients(t *testing.T) {
	s := NewScope()
	defer s.Close()
	x := s.Randn(Float32, 2, 3, 5, 6)
	require.NoError(t, x.SetRequiresGrad(true))
	w := s.Randn(Float32, 4, 3, 3, 3)
	cl := s.ToMemoryFormat(x, ChannelsLast)
	require.NoError(t, s.Err())
	isCL, err := cl.IsContiguousAs(ChannelsLast)
	require.NoError(t, err)
	isRM, err := cl.IsContiguousAs(RowMajor)
	require.NoError(t, err)
	require.True(t, isCL)
	require.False(t, isRM, "a channels-last copy of a 3-channel 5×6 map is not row-major")
	xv, err := x.Float32s()
	require.NoError(t, err)
	clv, err := cl.Float32s()
	require.NoError(t, err)
	require.Equal(t, xv, clv, "values read back in logical order")

	up := s.Randn(Float32, 2, 4, 5, 6)
	yRM := s.Conv2D(x, w, nil, 1, 1)
	yCL := s.Conv2D(cl, w, nil, 1, 1)
	require.NoError(t, s.Err())
	outCL, err := yCL.IsContiguousAs(ChannelsLast)
	require.NoError(t, err)
	require.True(t, outCL, "conv2d keeps channels-last")
	want, err := yRM.Float64s()
	require.NoError(t, err)
	requireCloseTensor(t, want, yCL, nnAtol, nnRtol, "conv2d output")
	back := s.ToMemoryFormat(yCL, RowMajor)
	rm, err := back.IsContiguousAs(RowMajor)
	require.NoError(t, err)
	require.True(t, rm)

	grad := func(y *Tensor) []float64 {
		require.NoError(t, x.ZeroGrad())
		require.NoError(t, s.Sum(s.Mul(y, up), false).Backward())
		g, err := x.Grad()
		require.NoError(t, err)
		defer g.Close()
		v, err := g.Float64s()
		require.NoError(t, err)
		return v
	}
	gRM := grad(yRM)
	gCL := grad(yCL)
	require.NoError(t, s.Err())
	requireClose(t, gRM, toF32(gCL), nnAtol, nnRtol, "input gradient through channels-last")

	require.Nil(t, s.ToMemoryFormat(s.Randn(Float32, 2, 3, 4), ChannelsLast))
	require.ErrorContains(t, s.Err(), "4-D")
	s2 := NewScope()
	defer s2.Close()
	require.Nil(t, s2.ToMemoryFormat(s2.Randn(Float32, 1, 1, 2, 2), MemoryFormat(7)))
	require.ErrorContains(t, s2.Err(), "unknown memory format 7")
}

func toF32(v []float64) []float32 {
	out := make([]float32, len(v))
	for i, x := range v {
		out[i] = float32(x)
	}
	return out
}
