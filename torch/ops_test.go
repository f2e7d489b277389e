package torch

import (
	"encoding/json"
	"math"
	"os"
	"testing"

	"github.com/stretchr/testify/require"
)

type refTensor struct {
	Shape []int64   `json:"shape"`
	Data  []float64 `json:"data"`
}

type refCase struct {
	Name   string         `json:"name"`
	Inputs []refTensor    `json:"inputs"`
	IDs    *refTensor     `json:"ids"`
	Out    refTensor      `json:"out"`
	Attrs  map[string]any `json:"attrs"`
}

type refSGD struct {
	W0, C0, X, Y, W, C, BufW refTensor
	LR                       float64   `json:"lr"`
	Momentum                 float64   `json:"momentum"`
	WeightDecay              float64   `json:"weight_decay"`
	Losses                   []float64 `json:"losses"`
	GradsW                   []refTensor
}

type refFile struct {
	Cases []refCase `json:"cases"`
	SGD   refSGD    `json:"sgd"`
}

func loadRef(t *testing.T) refFile {
	t.Helper()
	b, err := os.ReadFile("testdata/ops.json")
	require.NoError(t, err)
	var f refFile
	require.NoError(t, json.Unmarshal(b, &f))
	require.NotEmpty(t, f.Cases)
	return f
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

func attrF(c refCase, k string) float64 { return c.Attrs[k].(float64) }
func attrI(c refCase, k string) int64   { return int64(c.Attrs[k].(float64)) }
func attrInts(c refCase, k string) []int64 {
	var out []int64
	for _, v := range c.Attrs[k].([]any) {
		out = append(out, int64(v.(float64)))
	}
	return out
}

// requireClose compares with a relative+absolute float32 tolerance.
func requireClose(t *testing.T, want []float64, got []float32, atol, rtol float64, msg string) {
	t.Helper()
	require.Len(t, got, len(want), msg)
	for i := range want {
		d := math.Abs(float64(got[i]) - want[i])
		require.LessOrEqualf(t, d, atol+rtol*math.Abs(want[i]), "%s: element %d: got %v want %v", msg, i, got[i], want[i])
	}
}

// TestOpsAgainstPyTorch runs every op on the inputs stored by
// testdata/gen/ops.py and compares with PyTorch's eager outputs.
func TestOpsAgainstPyTorch(t *testing.T) {
	ref := loadRef(t)
	for _, c := range ref.Cases {
		t.Run(c.Name, func(t *testing.T) {
			s := NewScope()
			defer s.Close()
			in := make([]*Tensor, len(c.Inputs))
			for i, r := range c.Inputs {
				in[i] = s.FromFloat32(r.f32(), r.Shape...)
			}
			var ids *Tensor
			if c.IDs != nil {
				ids = s.FromInt64(c.IDs.i64(), c.IDs.Shape...)
			}
			var out *Tensor
			switch c.Name {
			case "add":
				out = s.Add(in[0], in[1])
			case "minus":
				out = s.Minus(in[0], in[1])
			case "mul":
				out = s.Mul(in[0], in[1])
			case "div":
				out = s.Div(in[0], in[1])
			case "add_scalar":
				out = s.AddScalar(in[0], attrF(c, "v"))
			case "mul_scalar":
				out = s.MulScalar(in[0], attrF(c, "v"))
			case "relu":
				out = s.Relu(in[0])
			case "gelu":
				out = s.Gelu(in[0])
			case "quick_gelu":
				out = s.QuickGelu(in[0])
			case "sigmoid":
				out = s.Sigmoid(in[0])
			case "exp":
				out = s.Exp(in[0])
			case "softmax", "softmax0":
				out = s.Softmax(in[0], attrI(c, "dim"))
			case "log_softmax":
				out = s.LogSoftmax(in[0], attrI(c, "dim"))
			case "layer_norm":
				out = s.LayerNorm(in[0], in[1], in[2], attrF(c, "eps"))
			case "layer_norm_noaffine":
				out = s.LayerNorm(in[0], nil, nil, attrF(c, "eps"))
			case "matmul":
				out = s.MatMul(in[0], in[1])
			case "bmm":
				out = s.BMM(in[0], in[1])
			case "baddbmm":
				out = s.BAddBMM(in[0], in[1], in[2], attrF(c, "beta"), attrF(c, "alpha"))
			case "linear":
				out = s.Linear(in[0], in[1], in[2])
			case "linear_nobias":
				out = s.Linear(in[0], in[1], nil)
			case "conv2d":
				out = s.Conv2D(in[0], in[1], nil, attrI(c, "stride"), attrI(c, "padding"))
			case "cat", "cat1":
				out = s.Cat(attrI(c, "dim"), in[0], in[1])
			case "stack":
				out = s.Stack(attrI(c, "dim"), in[0], in[1])
			case "reshape":
				out = s.Reshape(in[0], attrInts(c, "shape")...)
			case "permute":
				out = s.Contiguous(s.Permute(in[0], attrInts(c, "dims")...))
			case "transpose":
				out = s.Contiguous(s.Transpose(in[0], attrI(c, "d0"), attrI(c, "d1")))
			case "embedding":
				out = s.Embedding(in[0], ids)
			case "index_select":
				out = s.IndexSelect(in[0], attrI(c, "dim"), ids)
			case "gather":
				out = s.Gather(in[0], attrI(c, "dim"), ids)
			case "argmax":
				out = s.Argmax(in[0], attrI(c, "dim"), false)
			case "normalize":
				out = s.Normalize(in[0], attrI(c, "dim"))
			case "mse_loss":
				out = s.MSELoss(in[0], in[1])
			case "sum_all":
				out = s.Sum(in[0], false)
			case "mean_dim":
				out = s.Mean(in[0], false, attrInts(c, "dims")...)
			case "triu":
				out = s.Triu(in[0], attrI(c, "diagonal"))
			case "narrow":
				out = s.Narrow(in[0], attrI(c, "dim"), attrI(c, "start"), attrI(c, "length"))
			case "select":
				out = s.Select(in[0], attrI(c, "dim"), attrI(c, "index"))
			case "attention", "attention_causal":
				var mask *Tensor
				if c.Attrs["causal"].(bool) {
					n := in[0].Shape()[2]
					mask = s.Triu(s.Full(math.Inf(-1), Float32, n, n), 1)
				}
				out = s.Attention(in[0], in[1], in[2], mask)
			case "cast_fp16":
				out = s.Cast(s.Cast(in[0], Float16), Float32)
			case "cast_bf16":
				out = s.Cast(s.Cast(in[0], BFloat16), Float32)
			default:
				t.Fatalf("no Go mapping for case %q", c.Name)
			}
			require.NoError(t, s.Err())
			require.Equal(t, c.Out.Shape, out.Shape(), "shape")
			got, err := out.Float32s()
			require.NoError(t, err)
			requireClose(t, c.Out.Data, got, 1e-5, 1e-5, c.Name)
		})
	}
}

func TestSGDMatchesPyTorch(t *testing.T) {
	ref := loadRef(t).SGD
	w, err := FromFloat32(ref.W0.f32(), ref.W0.Shape...)
	require.NoError(t, err)
	defer w.Close()
	c, err := FromFloat32(ref.C0.f32(), ref.C0.Shape...)
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, w.SetRequiresGrad(true))
	require.NoError(t, c.SetRequiresGrad(true))
	opt, err := NewSGD([]*Tensor{w, c}, SGDOptions{LR: ref.LR, Momentum: ref.Momentum, WeightDecay: ref.WeightDecay})
	require.NoError(t, err)
	defer opt.Close()
	for step := range 3 {
		s := NewScope()
		require.NoError(t, opt.ZeroGrad())
		x := s.FromFloat32(ref.X.f32(), ref.X.Shape...)
		y := s.FromFloat32(ref.Y.f32(), ref.Y.Shape...)
		loss := s.MSELoss(s.Linear(x, w, c), y)
		require.NoError(t, s.Err())
		lv, err := loss.Item()
		require.NoError(t, err)
		require.InDelta(t, ref.Losses[step], lv, 1e-5*math.Abs(ref.Losses[step])+1e-7, "loss at step %d", step)
		require.NoError(t, loss.Backward())
		g, err := w.Grad()
		require.NoError(t, err)
		gv, err := g.Float32s()
		require.NoError(t, err)
		g.Close()
		requireClose(t, ref.GradsW[step].Data, gv, 1e-6, 1e-5, "grad W")
		require.NoError(t, opt.Step())
		s.Close()
	}
	wv, err := w.Float32s()
	require.NoError(t, err)
	requireClose(t, ref.W.Data, wv, 1e-6, 1e-5, "W after 3 steps")
	cv, err := c.Float32s()
	require.NoError(t, err)
	requireClose(t, ref.C.Data, cv, 1e-6, 1e-5, "c after 3 steps")
	buf, err := opt.MomentumBuffer(0)
	require.NoError(t, err)
	defer buf.Close()
	bv, err := buf.Float32s()
	require.NoError(t, err)
	requireClose(t, ref.BufW.Data, bv, 1e-6, 1e-5, "momentum buffer of W")
}
