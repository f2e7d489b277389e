package nn

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/clipagiqa/clipagiqa/torch"
)

type bottleneckRef struct {
	State      refState `json:"state"`
	TrainSteps []struct {
		X          refTensor            `json:"x"`
		Out        refTensor            `json:"out"`
		Upstream   refTensor            `json:"upstream"`
		XGrad      refTensor            `json:"x_grad"`
		ParamGrads map[string]refTensor `json:"param_grads"`
		Buffers    map[string]refTensor `json:"buffers"`
	} `json:"train_steps"`
	Eval struct {
		X   refTensor `json:"x"`
		Out refTensor `json:"out"`
	} `json:"eval"`
}

// bottleneck is CLIP's ModifiedResNet Bottleneck assembled from this
// package's modules, for the composite test.
type bottleneck struct {
	main       Sequential
	downsample Sequential
}

func newBottleneck(t *testing.T, p Path, inplanes, planes, stride int64) *bottleneck {
	t.Helper()
	conv := func(name string, in, out, k, pad int64) *Conv2d {
		c, err := NewConv2d(p.Sub(name), in, out, Conv2dConfig{Kernel: torch.Sq(k), Padding: torch.Sq(pad)})
		require.NoError(t, err)
		return c
	}
	bn := func(path Path, n int64) *BatchNorm2d {
		b, err := NewBatchNorm2d(path, n, BatchNormDefaults)
		require.NoError(t, err)
		return b
	}
	b := &bottleneck{}
	c1 := conv("conv1", inplanes, planes, 1, 0)
	b1 := bn(p.Sub("bn1"), planes)
	c2 := conv("conv2", planes, planes, 3, 1)
	b2 := bn(p.Sub("bn2"), planes)
	c3 := conv("conv3", planes, 4*planes, 1, 0)
	b3 := bn(p.Sub("bn3"), 4*planes)
	pool := AvgPool2d{torch.AvgPool2DOpts(torch.Sq(stride))}
	b.main = Sequential{c1, b1, ReLU{}, c2, b2, ReLU{}, pool, c3, b3}
	ds := p.Sub("downsample")
	dc, err := NewConv2d(ds.Sub("0"), inplanes, 4*planes, Conv2dConfig{Kernel: torch.Sq(1)})
	require.NoError(t, err)
	b.downsample = Sequential{pool, dc, bn(ds.Sub("1"), 4*planes)}
	return b
}

func (b *bottleneck) Forward(s *torch.Scope, x *torch.Tensor) *torch.Tensor {
	return s.Relu(s.Add(b.main.Forward(s, x), b.downsample.Forward(s, x)))
}

// TestBottleneckTrainingMatchesPyTorch composes modules into CLIP's
// Bottleneck and runs two training steps (batch statistics, running-stat
// updates of four BatchNorms) and an eval forward against PyTorch.
func TestBottleneckTrainingMatchesPyTorch(t *testing.T) {
	var ref struct {
		Bottleneck bottleneckRef `json:"bottleneck"`
	}
	loadJSON(t, "testdata/modules.json", &ref)
	r := ref.Bottleneck
	store := NewStore()
	defer store.Close()
	blk := newBottleneck(t, store.Root(), 4, 2, 2)
	load(t, store, r.State)
	for i, st := range r.TrainSteps {
		t.Run(fmt.Sprintf("train%d", i+1), func(t *testing.T) {
			s := torch.NewScope()
			defer s.Close()
			for _, p := range store.Trainable() {
				require.NoError(t, p.T.ZeroGrad())
			}
			x := s.FromFloat32(st.X.f32(), st.X.Shape...)
			require.NoError(t, x.SetRequiresGrad(true))
			y := blk.Forward(s, x)
			require.NoError(t, s.Err())
			requireClose(t, st.Out.Data, y, atol, rtol, "output")
			up := s.FromFloat32(st.Upstream.f32(), st.Upstream.Shape...)
			require.NoError(t, s.Sum(s.Mul(y, up), false).Backward())
			gx, err := x.Grad()
			require.NoError(t, err)
			s.Adopt(gx)
			requireClose(t, st.XGrad.Data, gx, atol, rtol, "input gradient")
			require.Len(t, store.Trainable(), len(st.ParamGrads))
			for _, p := range store.Trainable() {
				g, err := p.T.Grad()
				require.NoError(t, err)
				s.Adopt(g)
				requireClose(t, st.ParamGrads[p.Name].Data, g, atol, rtol, "gradient of "+p.Name)
			}
			require.Len(t, store.Buffers(), len(st.Buffers))
			for _, b := range store.Buffers() {
				requireClose(t, st.Buffers[b.Name].Data, b.T, 1e-6, 1e-6, b.Name)
			}
		})
	}
	store.Train(false)
	s := torch.NewScope().WithGrad(torch.InferenceMode)
	defer s.Close()
	y := blk.Forward(s, s.FromFloat32(r.Eval.X.f32(), r.Eval.X.Shape...))
	require.NoError(t, s.Err())
	requireClose(t, r.Eval.Out.Data, y, atol, rtol, "eval output")
}
