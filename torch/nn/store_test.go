package nn

import (
	"math"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/clipagiqa/clipagiqa/torch"
)

// twoTowers is a small IP-IQA-like model: a visual tower that trains and a
// text tower that is frozen and kept in eval mode.
type twoTowers struct {
	store    *Store
	conv     *Conv2d
	bn       *BatchNorm2d
	head     *Linear
	textEmb  *Embedding
	textDrop *Dropout
	textLN   *LayerNorm
}

func newTwoTowers(t *testing.T) *twoTowers {
	t.Helper()
	st := NewStore()
	m := &twoTowers{store: st}
	var err error
	visual := st.Sub("visual")
	m.conv, err = NewConv2d(visual.Sub("conv1"), 3, 4, Conv2dConfig{Kernel: torch.Sq(3), Padding: torch.Sq(1)})
	require.NoError(t, err)
	m.bn, err = NewBatchNorm2d(visual.Sub("bn1"), 4, BatchNormDefaults)
	require.NoError(t, err)
	m.head, err = NewLinear(visual.Sub("head"), 4, 2, true)
	require.NoError(t, err)
	text := st.Sub("text")
	m.textEmb, err = NewEmbedding(text.Sub("token_embedding"), 10, 4, -1)
	require.NoError(t, err)
	m.textDrop, err = NewDropout(text.Sub("drop"), 0.5)
	require.NoError(t, err)
	m.textLN, err = NewLayerNorm(text.Sub("ln_final"), 4, 1e-5)
	require.NoError(t, err)
	return m
}

func names(ps []NamedParam) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.Name
	}
	return out
}

func TestStoreNamesOrderAndKinds(t *testing.T) {
	m := newTwoTowers(t)
	defer m.store.Close()
	require.Equal(t, []string{
		"visual.conv1.weight",
		"visual.bn1.weight", "visual.bn1.bias", "visual.bn1.running_mean", "visual.bn1.running_var", "visual.bn1.num_batches_tracked",
		"visual.head.weight", "visual.head.bias",
		"text.token_embedding.weight", "text.ln_final.weight", "text.ln_final.bias",
	}, m.store.Names())
	require.Equal(t, []string{"visual.bn1.running_mean", "visual.bn1.running_var", "visual.bn1.num_batches_tracked"}, names(m.store.Buffers()))
	require.Equal(t, []string{"visual.conv1.weight", "visual.bn1.weight", "visual.bn1.bias", "visual.head.weight", "visual.head.bias"},
		names(m.store.Sub("visual").Parameters()))
	k, ok := m.store.KindOf("visual.bn1.running_var")
	require.True(t, ok)
	require.Equal(t, Buffer, k)
	_, ok = m.store.KindOf("visual.bn1")
	require.False(t, ok, "a module path is not a tensor")
	require.Same(t, m.head.Weight, m.store.Get("visual.head.weight"))
	require.True(t, m.head.Weight.RequiresGrad())
	require.False(t, m.bn.RunningMean.RequiresGrad())
	require.Equal(t, torch.Int64, m.bn.NumBatchesTracked.DType())
	// "visual" must not match a sibling sharing its first letters.
	require.Empty(t, m.store.Sub("vis").Names())
}

func TestStoreFreezeAndPinEval(t *testing.T) {
	m := newTwoTowers(t)
	defer m.store.Close()
	text := m.store.Sub("text")
	require.NoError(t, text.SetTrainable(false))
	text.PinEval(true)
	require.Equal(t, names(m.store.Sub("visual").Parameters()), names(m.store.Trainable()))
	require.False(t, m.textLN.Weight.RequiresGrad())
	require.Len(t, m.store.Parameters(), 8, "frozen parameters are still parameters")

	m.store.Train(true) // as a training loop calls model.train() every epoch
	require.True(t, m.store.Sub("visual").Sub("bn1").Training())
	require.False(t, text.Sub("drop").Training(), "pinned sub-tree stays in eval")
	text.Train(true)
	require.False(t, text.Training(), "Train on a pinned sub-tree does not unpin it")

	// Dropout in the pinned tower is the identity even though the store trains.
	s := torch.NewScope()
	defer s.Close()
	x := s.Randn(torch.Float32, 64)
	y := m.textDrop.Forward(s, x)
	require.NoError(t, s.Err())
	xv, _ := x.Float32s()
	yv, _ := y.Float32s()
	require.Equal(t, xv, yv)

	text.PinEval(false)
	require.True(t, text.Training(), "unpinned: the last Train call on text (true) holds")
	m.store.Sub("visual").Eval()
	require.False(t, m.store.Sub("visual").Sub("head").Training())
	m.store.Train(true)
	require.True(t, m.store.Sub("visual").Sub("head").Training(), "store.Train clears sub-tree modes")
	m.store.Train(false)
	require.False(t, text.Training())
	require.False(t, m.store.Training())
}

func TestDropoutTrainingZeroesAndScales(t *testing.T) {
	st := NewStore()
	defer st.Close()
	d, err := NewDropout(st.Sub("drop"), 0.25)
	require.NoError(t, err)
	s := torch.NewScope()
	defer s.Close()
	x := s.AddScalar(s.Rand(torch.Float32, 4000), 1) // all in [1, 2): none is 0
	y := d.Forward(s, x)
	require.NoError(t, s.Err())
	xv, _ := x.Float32s()
	yv, _ := y.Float32s()
	zeros := 0
	for i := range xv {
		if yv[i] == 0 {
			zeros++
			continue
		}
		require.InDelta(t, xv[i]/0.75, yv[i], 1e-5)
	}
	require.InDelta(t, 0.25, float64(zeros)/4000, 0.04, "fraction dropped")
	_, err = NewDropout(st.Sub("bad"), 1.5)
	require.ErrorContains(t, err, "outside [0, 1]")
}

func TestStoreStateDictRoundTrip(t *testing.T) {
	a := newTwoTowers(t)
	defer a.store.Close()
	// Move the running stats away from their init, as training does.
	s := torch.NewScope()
	a.bn.Forward(s, s.Randn(torch.Float32, 2, 4, 3, 3))
	require.NoError(t, s.Err())
	s.Close()

	path := filepath.Join(t.TempDir(), "model.pt")
	require.NoError(t, a.store.Save(path))
	b := newTwoTowers(t)
	defer b.store.Close()
	rep, err := b.store.Load(path, true)
	require.NoError(t, err)
	require.True(t, rep.Empty())
	for _, n := range a.store.Names() {
		av, err := a.store.Get(n).Float64s()
		require.NoError(t, err)
		bv, err := b.store.Get(n).Float64s()
		require.NoError(t, err)
		require.Equal(t, av, bv, n)
	}
	nb, err := b.bn.NumBatchesTracked.Int64s()
	require.NoError(t, err)
	require.Equal(t, []int64{1}, nb)

	// StateDict hands out detached handles that share the store's storage.
	sd, err := a.store.StateDict()
	require.NoError(t, err)
	defer sd.Close()
	require.Equal(t, a.store.Names(), sd.Names)
	require.False(t, sd.Get("visual.head.weight").RequiresGrad())
}

func TestLoadStateDictReportsAndRefuses(t *testing.T) {
	m := newTwoTowers(t)
	defer m.store.Close()
	sd, err := m.store.StateDict()
	require.NoError(t, err)
	defer sd.Close()
	full, err := sd.Get("visual.head.bias").Float32s()
	require.NoError(t, err)
	// A copy with one tensor missing, an extra one, a changed value, and no
	// num_batches_tracked (optional, as in old checkpoints).
	mod := torch.NewStateDict()
	defer mod.Close()
	for _, n := range sd.Names {
		switch n {
		case "text.ln_final.bias", "visual.bn1.num_batches_tracked":
			continue
		case "visual.head.bias":
			x, err := torch.FromFloat32([]float32{7, 8}, 2)
			require.NoError(t, err)
			mod.Set(n, x)
		default:
			x, err := sd.Get(n).Detach()
			require.NoError(t, err)
			mod.Set(n, x)
		}
	}
	extra, err := torch.FromFloat32([]float32{1}, 1)
	require.NoError(t, err)
	mod.Set("visual.proj", extra)

	rep, err := m.store.LoadStateDict(mod, true)
	require.ErrorContains(t, err, "strict")
	require.Equal(t, []string{"text.ln_final.bias"}, rep.Missing)
	require.Equal(t, []string{"visual.proj"}, rep.Unexpected)
	got, _ := m.head.Bias.Float32s()
	require.Equal(t, full, got, "a refused load changes nothing")

	rep, err = m.store.LoadStateDict(mod, false)
	require.NoError(t, err)
	require.Equal(t, []string{"text.ln_final.bias"}, rep.Missing)
	got, _ = m.head.Bias.Float32s()
	require.Equal(t, []float32{7, 8}, got, "non-strict load copies what matches")

	bad, err := torch.FromFloat32([]float32{1, 2, 3}, 3)
	require.NoError(t, err)
	mod.Set("visual.head.bias", bad)
	_, err = m.store.LoadStateDict(mod, false)
	require.ErrorContains(t, err, "size mismatch for visual.head.bias: checkpoint [3], model [2]")
	got, _ = m.head.Bias.Float32s()
	require.Equal(t, []float32{7, 8}, got)
}

func TestStoreRegistrationErrorsAreSticky(t *testing.T) {
	st := NewStore()
	defer st.Close()
	_, err := NewLinear(st.Sub("fc"), 2, 3, true)
	require.NoError(t, err)
	_, err = NewLinear(st.Sub("fc"), 2, 3, true)
	require.ErrorContains(t, err, "register parameter fc.weight: the name is taken")
	require.Error(t, st.Err())
	_, err = NewLayerNorm(st.Sub("ln"), 3, 1e-5)
	require.Error(t, err, "the first error sticks")
	require.Len(t, st.Names(), 2)

	st2 := NewStore()
	defer st2.Close()
	require.Nil(t, st2.Root().NewParam("", Zeros, 2))
	require.ErrorContains(t, st2.Err(), "bad name")

	_, err = NewLinear(Path{}, 2, 3, true)
	require.ErrorIs(t, err, errStore)
	_, err = NewConv2d(NewStore().Root(), 3, 4, Conv2dConfig{Kernel: torch.Sq(1), Groups: 2})
	require.ErrorContains(t, err, "not divisible by 2 groups")
}

func TestInitialisers(t *testing.T) {
	st := NewStore()
	defer st.Close()
	lin, err := NewLinear(st.Sub("fc"), 100, 50, true)
	require.NoError(t, err)
	w, _ := lin.Weight.Float32s()
	bound := 1 / math.Sqrt(100)
	lo, hi := 0.0, 0.0
	for _, v := range w {
		require.LessOrEqual(t, math.Abs(float64(v)), bound)
		lo, hi = math.Min(lo, float64(v)), math.Max(hi, float64(v))
	}
	require.Less(t, lo, -0.9*bound, "uniform init spans the range")
	require.Greater(t, hi, 0.9*bound)
	emb, err := NewEmbedding(st.Sub("emb"), 5, 3, 2)
	require.NoError(t, err)
	ev, _ := emb.Weight.Float32s()
	require.Equal(t, []float32{0, 0, 0}, ev[6:9], "padding row is zero")
	require.NotEqual(t, []float32{0, 0, 0}, ev[3:6])
	_, err = NewEmbedding(st.Sub("emb2"), 5, 3, 5)
	require.ErrorContains(t, err, "padding index")
	mha, err := NewMultiheadAttention(st.Sub("attn"), 8, MultiheadAttentionConfig{Heads: 2, Bias: true})
	require.NoError(t, err)
	ob, _ := mha.Weights.OutProjBias.Float32s()
	require.Equal(t, make([]float32, 8), ob, "out_proj.bias starts at zero, as in PyTorch")
	_, err = NewMultiheadAttention(st.Sub("attn2"), 8, MultiheadAttentionConfig{Heads: 3})
	require.ErrorContains(t, err, "not divisible by 3 heads")
	_, err = NewMultiheadAttention(st.Sub("attn3"), 8, MultiheadAttentionConfig{Heads: 2, KDim: 4})
	require.ErrorContains(t, err, "need separate projections")
	_, err = NewMultiheadAttention(st.Sub("attn4"), 8, MultiheadAttentionConfig{Heads: 2, Layout: SeparateLinears,
		Linears: []LinearProj{{QueryProj, "q"}, {QueryProj, "q2"}}})
	require.ErrorContains(t, err, `projection "q2" has an unknown or repeated role`)
	_, err = NewMultiheadAttention(st.Sub("attn5"), 8, MultiheadAttentionConfig{Heads: 2, QDim: 4})
	require.ErrorContains(t, err, "need the SeparateLinears layout")
}

// A CLIP-style tagged struct registered under a prefix: names follow the
// tags, buffers are buffers, loading through the store updates the struct.
type taggedBN struct {
	Weight      *torch.Tensor `torch:"weight"`
	Bias        *torch.Tensor `torch:"bias"`
	RunningMean *torch.Tensor `torch:"running_mean,buffer"`
}

type taggedBlock struct {
	Conv *torch.Tensor `torch:"conv1.weight"`
	BN1  taggedBN      `torch:"bn1"`
	Proj *torch.Tensor `torch:"proj,optional"`
}

func TestRegisterTagged(t *testing.T) {
	base := torch.LiveTensors()
	mk := func(v ...float32) *torch.Tensor {
		x, err := torch.FromFloat32(v, int64(len(v)))
		require.NoError(t, err)
		return x
	}
	blk := &taggedBlock{Conv: mk(1, 2), BN1: taggedBN{Weight: mk(3), Bias: mk(4), RunningMean: mk(5)}}
	st := NewStore()
	require.NoError(t, st.Sub("visual").Sub("layer1").Sub("0").RegisterTagged(blk))
	require.Equal(t, []string{"visual.layer1.0.conv1.weight", "visual.layer1.0.bn1.weight", "visual.layer1.0.bn1.bias", "visual.layer1.0.bn1.running_mean"}, st.Names())
	require.Equal(t, []string{"visual.layer1.0.bn1.running_mean"}, names(st.Buffers()))
	require.True(t, blk.Conv.RequiresGrad(), "registered as a parameter")

	sd := torch.NewStateDict()
	for _, n := range st.Names() {
		sd.Set(n, mk(9))
	}
	sd.Tensors["visual.layer1.0.conv1.weight"].Close()
	sd.Tensors["visual.layer1.0.conv1.weight"] = mk(9, 9)
	_, err := st.LoadStateDict(sd, true)
	require.NoError(t, err)
	sd.Close()
	v, _ := blk.BN1.RunningMean.Float32s()
	require.Equal(t, []float32{9}, v, "the struct sees the loaded value")

	st.Close()
	v, err = blk.Conv.Float32s()
	require.NoError(t, err, "the struct's tensors outlive the store")
	require.Equal(t, []float32{9, 9}, v)
	torch.CloseAll(blk)
	require.Equal(t, base, torch.LiveTensors())

	type badTag struct {
		W *torch.Tensor `torch:"w,nonsense"`
	}
	st2 := NewStore()
	defer st2.Close()
	require.ErrorContains(t, st2.Root().RegisterTagged(&badTag{}), "nonsense")
}

// TestForwardLoopKeepsLiveTensorsFlat trains a few steps of a small model and
// checks that handles do not accumulate; Close frees the store.
func TestForwardLoopKeepsLiveTensorsFlat(t *testing.T) {
	base := torch.LiveTensors()
	m := newTwoTowers(t)
	attn, err := NewMultiheadAttention(m.store.Sub("pool"), 4, MultiheadAttentionConfig{Heads: 2, Layout: SeparateLinears, Bias: true, OutDim: 2})
	require.NoError(t, err)
	var after1 int64
	for i := range 4 {
		s := torch.NewScope()
		for _, p := range m.store.Trainable() {
			require.NoError(t, p.T.ZeroGrad())
		}
		x := s.Randn(torch.Float32, 2, 3, 5, 5)
		h := m.bn.Forward(s, m.conv.Forward(s, x))
		pooled := s.Flatten(s.AdaptiveAvgPool2D(ReLU{}.Forward(s, h), torch.Sq(1)), 1, 3) // [2, 4]
		tokens := s.Unsqueeze(pooled, 0)                                                  // [1, 2, 4]
		y := s.Add(m.head.Forward(s, pooled), s.Squeeze(attn.Forward(s, tokens, tokens, tokens, nil, nil), 0))
		require.NoError(t, s.Sum(s.Square(y), false).Backward())
		require.NoError(t, s.Err())
		s.Close()
		if i == 0 {
			after1 = torch.LiveTensors()
		}
	}
	require.Equal(t, after1, torch.LiveTensors(), "no handles accumulate across steps")
	m.store.Close()
	require.Equal(t, base, torch.LiveTensors(), "Close frees every stored tensor")
}

// The store's trainable parameters feed an optimizer; frozen ones stay put.
func TestTrainableFeedsOptimizer(t *testing.T) {
	m := newTwoTowers(t)
	defer m.store.Close()
	require.NoError(t, m.store.Sub("text").SetTrainable(false))
	opt, err := torch.NewSGD(Tensors(m.store.Trainable()), torch.SGDOptions{LR: 0.05})
	require.NoError(t, err)
	defer opt.Close()
	textBefore, _ := m.textLN.Weight.Float32s()
	loss := func() float64 {
		s := torch.NewScope()
		defer s.Close()
		x := s.FromFloat32([]float32{
			0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9,
			0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1,
			0.5, 0.5, 0.5, 0.1, 0.1, 0.1, 0.9, 0.9, 0.9,
		}, 1, 3, 3, 3)
		h := s.Flatten(s.AdaptiveAvgPool2D(ReLU{}.Forward(s, m.conv.Forward(s, x)), torch.Sq(1)), 1, 3)
		l := s.Sum(s.Square(s.AddScalar(m.head.Forward(s, h), -1)), false)
		require.NoError(t, s.Err())
		require.NoError(t, opt.ZeroGrad())
		require.NoError(t, l.Backward())
		v, err := l.Item()
		require.NoError(t, err)
		return v
	}
	first := loss()
	for range 20 {
		require.NoError(t, opt.Step())
		loss()
	}
	require.Less(t, loss(), first/2, "training the visual tower lowers the loss")
	textAfter, _ := m.textLN.Weight.Float32s()
	require.Equal(t, textBefore, textAfter, "the frozen tower is untouched")
}

func TestForwardErrorsNameTheModule(t *testing.T) {
	st := NewStore()
	defer st.Close()
	bn, err := NewBatchNorm2d(st.Sub("visual").Sub("bn1"), 3, BatchNormDefaults)
	require.NoError(t, err)
	s := torch.NewScope()
	defer s.Close()
	require.Nil(t, bn.Forward(s, s.Randn(torch.Float32, 2, 3)))
	require.ErrorContains(t, s.Err(), `batch norm "visual.bn1": expected a 4-D input, got [2 3]`)
	nb, err := bn.NumBatchesTracked.Int64s()
	require.NoError(t, err)
	require.Equal(t, []int64{0}, nb, "a refused batch is not counted")

	s2 := torch.NewScope()
	defer s2.Close()
	mha, err := NewMultiheadAttention(st.Sub("attn"), 4, MultiheadAttentionConfig{Heads: 2})
	require.NoError(t, err)
	x := s2.Randn(torch.Float32, 3, 4)
	require.Nil(t, mha.Forward(s2, x, x, x, nil, nil))
	require.ErrorContains(t, s2.Err(), "want 3-D query")
}
