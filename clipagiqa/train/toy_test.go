package train

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/clipagiqa/clipagiqa/torch"
	"github.com/clipagiqa/clipagiqa/torch/nn"
	"github.com/clipagiqa/clipagiqa/torch/optim"
	"github.com/clipagiqa/clipagiqa/torch/ptfile"
	"github.com/stretchr/testify/require"
)

// toyModel is linear regression with input dropout (so libtorch's
// generator matters) and a running-mean buffer (so buffers matter): enough
// to exercise every part of the trainer without CLIP.
type toyModel struct {
	store      *nn.Store
	w, b, mean *torch.Tensor
	dim        int
	x          map[string][][]float32 // part ("train", "val", "test") -> features
	y          map[string][]float32
	trainCalls int
}

const toyDim = 8

// toyData draws n samples of y = x·w* + 0.1·noise with a fixed w*.
func toyData(seed uint64, n int) ([][]float32, []float32) {
	r := rand.New(rand.NewPCG(seed, 7))
	wStar := []float32{1, -2, 0.5, 3, 0, -1, 2, 0.25}
	xs := make([][]float32, n)
	ys := make([]float32, n)
	for i := range n {
		xs[i] = make([]float32, toyDim)
		var y float32
		for j := range toyDim {
			xs[i][j] = float32(r.NormFloat64())
			y += xs[i][j] * wStar[j]
		}
		ys[i] = y + 0.1*float32(r.NormFloat64())
	}
	return xs, ys
}

func newToy(t *testing.T) *toyModel {
	t.Helper()
	require.NoError(t, torch.ManualSeed(1))
	st := nn.NewStore()
	root := st.Root()
	m := &toyModel{store: st, dim: toyDim, x: map[string][][]float32{}, y: map[string][]float32{}}
	lin := root.Sub("lin")
	m.w = lin.NewParam("weight", nn.KaimingUniform(toyDim), 1, toyDim)
	m.b = lin.NewParam("bias", nn.KaimingUniform(toyDim), 1)
	z, err := torch.FromFloat32([]float32{0}, 1)
	require.NoError(t, err)
	m.mean = root.AddBuffer("running_mean", z)
	require.NoError(t, st.Err())
	for i, part := range []string{"train", "val", "test"} {
		m.x[part], m.y[part] = toyData(uint64(100+i), []int{64, 32, 32}[i])
	}
	t.Cleanup(st.Close)
	return m
}

func (m *toyModel) Trainable() []nn.NamedParam { return m.store.Trainable() }
func (m *toyModel) Buffers() []nn.NamedParam   { return m.store.Buffers() }

func (m *toyModel) rows(part string, idx []int) ([]float32, []float32) {
	var x, y []float32
	for _, i := range idx {
		x = append(x, m.x[part][i]...)
		y = append(y, m.y[part][i])
	}
	return x, y
}

func (m *toyModel) TrainBatch(s *torch.Scope, b Batch) (*torch.Tensor, *torch.Tensor) {
	m.trainCalls++
	x, y := m.rows("train", b.Indices)
	n := int64(len(b.Indices))
	in := s.Dropout(s.FromFloat32(x, n, toyDim), 0.05, true)
	out := s.Linear(in, m.w, m.b)
	// running_mean ← 0.9·running_mean + 0.1·mean(out), outside autograd.
	ns := s.Sub().WithGrad(torch.NoGrad)
	upd := ns.Add(ns.MulScalar(m.mean, 0.9), ns.MulScalar(ns.Reshape(ns.Mean(ns.Detach(out), false), 1), 0.1))
	if err := ns.Err(); err == nil {
		if err := m.mean.CopyFrom(upd); err != nil {
			s.Fail(err)
		}
	} else {
		s.Fail(err)
	}
	ns.Close()
	return out, s.FromFloat32(y, n, 1)
}

func (m *toyModel) Predict(_ context.Context, part string) ([][]float64, error) {
	s := torch.NewScope().WithGrad(torch.InferenceMode)
	defer s.Close()
	xs := m.x[part]
	idx := make([]int, len(xs))
	for i := range idx {
		idx[i] = i
	}
	x, _ := m.rows(part, idx)
	out := s.Linear(s.FromFloat32(x, int64(len(xs)), toyDim), m.w, m.b)
	if err := s.Err(); err != nil {
		return nil, err
	}
	v, err := out.Float64s()
	if err != nil {
		return nil, err
	}
	pred := make([][]float64, len(v))
	for i := range v {
		pred[i] = []float64{v[i]}
	}
	return pred, nil
}

func (m *toyModel) SaveCheckpoint(path string, opt optim.Optimizer, config *ptfile.Dict, epoch int) error {
	return SaveStore(path, m.store, opt, config, epoch)
}

func (m *toyModel) LoadCheckpoint(path string, opt optim.Optimizer) (any, int, error) {
	return LoadStore(path, m.store, opt)
}

func (m *toyModel) targets(part string) [][]float64 {
	out := make([][]float64, len(m.y[part]))
	for i, y := range m.y[part] {
		out[i] = []float64{float64(y)}
	}
	return out
}

// toyConfig is a short run with momentum SGD (whose state must resume),
// a cosine schedule stepped per step, clipping, and val-chosen epochs.
func toyConfig(t *testing.T, m *toyModel, out string) Config {
	t.Helper()
	opt, err := optim.NewSGD(optim.Single(m.Trainable()), optim.SGDOptions{LR: 0.05, Momentum: 0.9})
	require.NoError(t, err)
	t.Cleanup(opt.Close)
	idx := make([]int, len(m.x["train"]))
	for i := range idx {
		idx[i] = i
	}
	return Config{
		Epochs: 6, BatchSize: 10, Seed: 42, Train: idx,
		Optimizer: opt, Schedule: optim.WarmupCosine{Warmup: 3, StartFactor: 0.1, Total: 36}, Interval: optim.PerStep,
		ClipGradNorm: 5,
		Eval:         []EvalPart{{Name: "val", Targets: m.targets("val")}, {Name: "test", Targets: m.targets("test")}},
		Select:       Selection{Part: "val"},
		OutDir:       out, Plots: true,
		Hyper: map[string]float64{"lr": 0.05, "momentum": 0.9},
	}
}

// storeValues copies every tensor of the store, by name.
func storeValues(t *testing.T, st *nn.Store) map[string][]float32 {
	t.Helper()
	out := map[string][]float32{}
	for _, n := range st.Names() {
		v, err := st.Get(n).Float32s()
		require.NoError(t, err)
		out[n] = v
	}
	return out
}

func momentum(t *testing.T, opt optim.Optimizer) map[string][]float32 {
	t.Helper()
	out := map[string][]float32{}
	sgd := opt.(*optim.SGD)
	for _, p := range sgd.Params() {
		b, err := sgd.MomentumBuffer(p.Name)
		require.NoError(t, err)
		if b == nil {
			continue
		}
		v, err := b.Float32s()
		require.NoError(t, err)
		b.Close()
		out[p.Name] = v
	}
	return out
}

// stripTimes drops the wall-clock field so histories compare exactly.
func stripTimes(h []EpochReport) []EpochReport {
	out := append([]EpochReport(nil), h...)
	for i := range out {
		out[i].Seconds = 0
	}
	return out
}

func fmtHistory(h []EpochReport) string {
	s := ""
	for _, r := range h {
		s += fmt.Sprintf("epoch %d loss %.6g score %.6g best %v\n", r.Epoch, r.TrainLoss, r.Score, r.Best)
	}
	return s
}
