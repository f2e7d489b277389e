package nn

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/clipagiqa/clipagiqa/torch"
)

// Tolerances against PyTorch (float32 both sides, same kernels; only
// summation order differs): |got-want| <= atol + rtol·|want|. Measured: every
// case also passes at 1e-6 except the batch-first attention's gradients.
const atol, rtol = 1e-5, 1e-5

type refTensor struct {
	Shape []int64   `json:"shape"`
	Data  []float64 `json:"data"`
}

func (r refTensor) f32() []float32 {
	out := make([]float32, len(r.Data))
	for i, v := range r.Data {
		out[i] = float32(v)
	}
	return out
}

func (r refTensor) i64() []int64 {
	out := make([]int64, len(r.Data))
	for i, v := range r.Data {
		out[i] = int64(v)
	}
	return out
}

type refState struct {
	Names   []string             `json:"names"`
	Tensors map[string]refTensor `json:"tensors"`
}

type moduleCase struct {
	Name       string                `json:"name"`
	State      refState              `json:"state"`
	Inputs     []refTensor           `json:"inputs"`
	Ints       []refTensor           `json:"ints"`
	Out        refTensor             `json:"out"`
	Upstream   refTensor             `json:"upstream"`
	InputGrads []*refTensor          `json:"input_grads"`
	ParamGrads map[string]*refTensor `json:"param_grads"`
	Attrs      map[string]any        `json:"attrs"`
}

type bnStep struct {
	X                 refTensor `json:"x"`
	Out               refTensor `json:"out"`
	Upstream          refTensor `json:"upstream"`
	XGrad             refTensor `json:"x_grad"`
	WeightGrad        refTensor `json:"weight_grad"`
	BiasGrad          refTensor `json:"bias_grad"`
	RunningMean       refTensor `json:"running_mean"`
	RunningVar        refTensor `json:"running_var"`
	NumBatchesTracked int64     `json:"num_batches_tracked"`
}

type bnCase struct {
	Name       string   `json:"name"`
	Momentum   *float64 `json:"momentum"`
	Eps        float64  `json:"eps"`
	State      refState `json:"state"`
	TrainSteps []bnStep `json:"train_steps"`
	Eval       bnStep   `json:"eval"`
}

type moduleRef struct {
	Cases     []moduleCase `json:"cases"`
	BatchNorm []bnCase     `json:"batch_norm"`
	LNFP16    struct {
		State refState  `json:"state"`
		X     refTensor `json:"x"`
		Out   refTensor `json:"out"`
	} `json:"layer_norm_fp16"`
}

func loadJSON(t *testing.T, path string, dst any) {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, dst))
}

func loadModuleRef(t *testing.T) moduleRef {
	t.Helper()
	var r moduleRef
	loadJSON(t, "testdata/modules.json", &r)
	require.NotEmpty(t, r.Cases)
	return r
}

func (st refState) stateDict(t *testing.T) *torch.StateDict {
	t.Helper()
	sd := torch.NewStateDict()
	for _, n := range st.Names {
		r := st.Tensors[n]
		var x *torch.Tensor
		var err error
		if strings.HasSuffix(n, "num_batches_tracked") {
			x, err = torch.FromInt64(r.i64(), r.Shape...)
		} else {
			x, err = torch.FromFloat32(r.f32(), r.Shape...)
		}
		require.NoError(t, err)
		sd.Set(n, x)
	}
	return sd
}

// load checks that the store holds exactly PyTorch's names in PyTorch's order
// and loads the reference values strictly.
func load(t *testing.T, store *Store, st refState) {
	t.Helper()
	require.NoError(t, store.Err())
	want := st.Names
	if want == nil {
		want = []string{}
	}
	got := store.Names()
	if got == nil {
		got = []string{}
	}
	require.Equal(t, want, got, "state_dict names and order")
	sd := st.stateDict(t)
	defer sd.Close()
	rep, err := store.LoadStateDict(sd, true)
	require.NoError(t, err)
	require.True(t, rep.Empty(), rep.String())
}

func requireClose(t *testing.T, want []float64, got *torch.Tensor, tolA, tolR float64, msg string) {
	t.Helper()
	require.NotNil(t, got, msg)
	v, err := got.Float32s()
	require.NoError(t, err, msg)
	require.Len(t, v, len(want), msg)
	for i := range want {
		d := math.Abs(float64(v[i]) - want[i])
		require.LessOrEqualf(t, d, tolA+tolR*math.Abs(want[i]), "%s: element %d: got %v want %v", msg, i, v[i], want[i])
	}
}

func pair(m map[string]any, k string) torch.Pair {
	v := m[k].([]any)
	return torch.Pair{int64(v[0].(float64)), int64(v[1].(float64))}
}

func num(m map[string]any, k string) int64 { return int64(m[k].(float64)) }

func ints(m map[string]any, k string) []int64 {
	var out []int64
	for _, v := range m[k].([]any) {
		out = append(out, int64(v.(float64)))
	}
	return out
}

// TestModulesAgainstPyTorch builds each module in a store, loads PyTorch's
// state dict, runs forward and backward from sum(out·upstream), and compares
// the output and the gradients of every input and parameter.
func TestModulesAgainstPyTorch(t *testing.T) {
	for _, c := range loadModuleRef(t).Cases {
		t.Run(c.Name, func(t *testing.T) {
			store := NewStore()
			defer store.Close()
			root := store.Root()
			s := torch.NewScope()
			defer s.Close()
			in := make([]*torch.Tensor, len(c.Inputs))
			for i, r := range c.Inputs {
				in[i] = s.FromFloat32(r.f32(), r.Shape...)
				if c.InputGrads[i] != nil {
					require.NoError(t, in[i].SetRequiresGrad(true))
				}
			}
			a := c.Attrs
			var forward func() *torch.Tensor
			var err error
			switch c.Name {
			case "linear", "linear_nobias":
				var m *Linear
				m, err = NewLinear(root, 5, 4, c.Name == "linear")
				forward = func() *torch.Tensor { return m.Forward(s, in[0]) }
			case "layer_norm":
				var m *LayerNorm
				m, err = NewLayerNorm(root, 6, a["eps"].(float64))
				forward = func() *torch.Tensor { return m.Forward(s, in[0]) }
			case "conv2d_stride_pad", "conv2d_groups_dilation":
				var m *Conv2d
				m, err = NewConv2d(root, num(a, "cin"), num(a, "cout"), Conv2dConfig{
					Kernel: pair(a, "kernel"), Stride: pair(a, "stride"), Padding: pair(a, "padding"), Dilation: pair(a, "dilation"),
					Groups: num(a, "groups"), Bias: a["bias"].(bool),
				})
				forward = func() *torch.Tensor { return m.Forward(s, in[0]) }
			case "embedding_padding":
				var m *Embedding
				m, err = NewEmbedding(root, num(a, "num"), num(a, "dim"), num(a, "padding_idx"))
				ids := s.FromInt64(c.Ints[0].i64(), c.Ints[0].Shape...)
				forward = func() *torch.Tensor { return m.Forward(s, ids) }
			case "avg_pool2d":
				m := AvgPool2d{torch.AvgPool2DOptions{Kernel: pair(a, "kernel"), Stride: pair(a, "stride"), Padding: pair(a, "padding"),
					CeilMode: a["ceil_mode"].(bool), CountIncludePad: a["count_include_pad"].(bool)}}
				forward = func() *torch.Tensor { return m.Forward(s, in[0]) }
			case "adaptive_avg_pool2d":
				m := AdaptiveAvgPool2d{pair(a, "size")}
				forward = func() *torch.Tensor { return m.Forward(s, in[0]) }
			case "relu":
				forward = func() *torch.Tensor { return ReLU{}.Forward(s, in[0]) }
			case "mha_packed":
				var m *MultiheadAttention
				m, err = NewMultiheadAttention(root, num(a, "embed"), MultiheadAttentionConfig{Heads: num(a, "heads"), Bias: true})
				kpm := s.Cast(s.FromInt64(ints(a, "kpm"), ints(a, "kpm_shape")...), torch.Bool)
				n := in[0].Shape()[0]
				causal := s.Triu(s.Full(math.Inf(-1), torch.Float32, n, n), 1)
				forward = func() *torch.Tensor { return m.Forward(s, in[0], in[0], in[0], causal, kpm) }
			case "mha_separate":
				var m *MultiheadAttention
				m, err = NewMultiheadAttention(root, num(a, "embed"), MultiheadAttentionConfig{Heads: num(a, "heads"), Layout: SeparateProjWeights,
					KDim: num(a, "kdim"), VDim: num(a, "vdim"), Bias: true})
				mask := s.Cast(s.FromInt64(ints(a, "mask"), ints(a, "mask_shape")...), torch.Bool)
				forward = func() *torch.Tensor { return m.Forward(s, in[0], in[1], in[2], mask, nil) }
			case "mha_batch_first":
				var m *MultiheadAttention
				m, err = NewMultiheadAttention(root, num(a, "embed"), MultiheadAttentionConfig{Heads: num(a, "heads"), BatchFirst: true})
				forward = func() *torch.Tensor { return m.Forward(s, in[0], in[0], in[0], nil, nil) }
			case "attnpool_linears":
				var m *MultiheadAttention
				m, err = NewMultiheadAttention(root, num(a, "embed"), MultiheadAttentionConfig{Heads: num(a, "heads"), Layout: SeparateLinears,
					OutDim: num(a, "out"), Bias: true})
				forward = func() *torch.Tensor {
					return m.Forward(s, s.Narrow(in[0], 0, 0, 1), in[0], in[0], nil, nil)
				}
			case "cross_attn_ipiqa_style":
				var m *MultiheadAttention
				m, err = NewMultiheadAttention(root, num(a, "embed"), MultiheadAttentionConfig{Heads: num(a, "heads"), Layout: SeparateLinears,
					Linears: IPIQACrossAttnLinears, QDim: num(a, "qdim"), OutDim: num(a, "out"), Bias: true, ScaleAfterProduct: true})
				forward = func() *torch.Tensor { return m.Forward(s, in[0], in[1], in[1], nil, nil) }
			default:
				t.Fatalf("no Go mapping for case %q", c.Name)
			}
			require.NoError(t, err)
			load(t, store, c.State)

			out := forward()
			require.NoError(t, s.Err())
			require.Equal(t, c.Out.Shape, out.Shape(), "output shape")
			requireClose(t, c.Out.Data, out, atol, rtol, "forward")

			up := s.FromFloat32(c.Upstream.f32(), c.Upstream.Shape...)
			require.NoError(t, s.Sum(s.Mul(out, up), false).Backward())
			require.NoError(t, s.Err())
			for i, g := range c.InputGrads {
				if g == nil {
					continue
				}
				gt, err := in[i].Grad()
				require.NoError(t, err)
				s.Adopt(gt)
				requireClose(t, g.Data, gt, atol, rtol, fmt.Sprintf("gradient of input %d", i))
			}
			require.Len(t, store.Parameters(), len(c.ParamGrads), "parameters with gradients")
			for _, p := range store.Parameters() {
				want := c.ParamGrads[p.Name]
				require.NotNil(t, want, "PyTorch has no gradient for %s", p.Name)
				gt, err := p.T.Grad()
				require.NoError(t, err)
				s.Adopt(gt)
				requireClose(t, want.Data, gt, atol, rtol, "gradient of "+p.Name)
			}
		})
	}
}

// TestBatchNorm2dTrainAndEval runs three training steps (batch statistics,
// running-stat updates with momentum or the cumulative average, unbiased
// running_var, num_batches_tracked) and an eval forward, forward and backward.
func TestBatchNorm2dTrainAndEval(t *testing.T) {
	for _, c := range loadModuleRef(t).BatchNorm {
		t.Run(c.Name, func(t *testing.T) {
			store := NewStore()
			defer store.Close()
			cfg := BatchNormConfig{Eps: c.Eps}
			if c.Momentum == nil {
				cfg.CumulativeAverage = true
			} else {
				cfg.Momentum = *c.Momentum
			}
			bn, err := NewBatchNorm2d(store.Sub("bn1"), 3, cfg)
			require.NoError(t, err)
			// PyTorch's names are relative to the BatchNorm; ours live under bn1.
			st := refState{Tensors: map[string]refTensor{}}
			for _, n := range c.State.Names {
				st.Names = append(st.Names, "bn1."+n)
				st.Tensors["bn1."+n] = c.State.Tensors[n]
			}
			load(t, store, st)
			require.Len(t, store.Buffers(), 3)

			step := func(t *testing.T, r bnStep, training bool) {
				s := torch.NewScope()
				defer s.Close()
				for _, p := range store.Parameters() {
					require.NoError(t, p.T.ZeroGrad())
				}
				x := s.FromFloat32(r.X.f32(), r.X.Shape...)
				require.NoError(t, x.SetRequiresGrad(true))
				y := bn.Forward(s, x)
				require.NoError(t, s.Err())
				requireClose(t, r.Out.Data, y, atol, rtol, "output")
				up := s.FromFloat32(r.Upstream.f32(), r.Upstream.Shape...)
				require.NoError(t, s.Sum(s.Mul(y, up), false).Backward())
				gx, err := x.Grad()
				require.NoError(t, err)
				s.Adopt(gx)
				requireClose(t, r.XGrad.Data, gx, 1e-5, 1e-5, "input gradient")
				if !training {
					return
				}
				for _, w := range []struct {
					t    *torch.Tensor
					want refTensor
					msg  string
				}{{bn.Weight, r.WeightGrad, "weight gradient"}, {bn.Bias, r.BiasGrad, "bias gradient"}} {
					g, err := w.t.Grad()
					require.NoError(t, err)
					s.Adopt(g)
					requireClose(t, w.want.Data, g, 1e-5, 1e-5, w.msg)
				}
				requireClose(t, r.RunningMean.Data, bn.RunningMean, 1e-6, 1e-6, "running_mean")
				requireClose(t, r.RunningVar.Data, bn.RunningVar, 1e-6, 1e-6, "running_var")
				nb, err := bn.NumBatchesTracked.Int64s()
				require.NoError(t, err)
				require.Equal(t, []int64{r.NumBatchesTracked}, nb, "num_batches_tracked")
			}
			require.True(t, store.Training())
			for i, r := range c.TrainSteps {
				t.Run(fmt.Sprintf("train%d", i+1), func(t *testing.T) { step(t, r, true) })
			}
			store.Train(false)
			before, err := bn.RunningMean.Float32s()
			require.NoError(t, err)
			t.Run("eval", func(t *testing.T) { step(t, c.Eval, false) })
			after, err := bn.RunningMean.Float32s()
			require.NoError(t, err)
			require.Equal(t, before, after, "eval must not touch running_mean")
		})
	}
}

// TestLayerNormFP16ComputesInFloat32 matches CLIP's LayerNorm on fp16 input.
func TestLayerNormFP16ComputesInFloat32(t *testing.T) {
	ref := loadModuleRef(t).LNFP16
	store := NewStore()
	defer store.Close()
	ln, err := NewLayerNorm(store.Root(), 6, 1e-5)
	require.NoError(t, err)
	load(t, store, ref.State)
	s := torch.NewScope().WithGrad(torch.NoGrad)
	defer s.Close()
	x := s.Cast(s.FromFloat32(ref.X.f32(), ref.X.Shape...), torch.Float16)
	y := ln.Forward(s, x)
	require.NoError(t, s.Err())
	require.Equal(t, torch.Float16, y.DType())
	// Both sides round the same fp32 result to fp16: equal up to one fp16 ulp.
	requireClose(t, ref.Out.Data, y, 1e-3, 1e-3, "fp16 layer norm")
}
