package clip

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/clipagiqa/clipagiqa/internal/npy"
	"github.com/clipagiqa/clipagiqa/internal/reffix"
	"github.com/clipagiqa/clipagiqa/torch"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Relative L2 tolerances for the generated ResNet archive (float32 against
// float32 PyTorch on a 430k-parameter model; see testdata/gen/README.md).
const (
	genRNFeatureRel = 1e-5
	genRNGradRel    = 1e-4
)

// The second, independent ResNet check: testdata/gen/make_clip_rn.py's own
// ModifiedResNet (layers 1 2 1 1, width 8: 4 attnpool heads, 96×96 input),
// traced into OpenAI's archive layout, with its outputs.
type genRNRef struct {
	Hyper       Config `json:"hyper"`
	EncodeImage []struct {
		Pixels     string `json:"pixels"`
		Features   string `json:"features"`
		FeatureMap string `json:"feature_map"`
	} `json:"encode_image"`
	EncodeText struct {
		IDs      string  `json:"ids"`
		EOTIndex []int64 `json:"eot_index"`
		Features string  `json:"features"`
	} `json:"encode_text"`
	Resized struct {
		Grid                int    `json:"grid"`
		Pixels              string `json:"pixels"`
		PositionalEmbedding string `json:"positional_embedding"`
		Features            string `json:"features"`
	} `json:"resized"`
	Grad struct {
		Pixels      string  `json:"pixels"`
		LossWeights string  `json:"loss_weights"`
		Loss        float64 `json:"loss"`
		GradPixels  string  `json:"grad_pixels"`
	} `json:"grad"`
}

func TestGeneratedResNetArchive(t *testing.T) {
	dir := filepath.Join("..", "..", "testdata", "clipgen", "tiny-rn")
	b, err := os.ReadFile(filepath.Join(dir, "reference.json"))
	require.NoError(t, err)
	var ref genRNRef
	require.NoError(t, json.Unmarshal(b, &ref))
	arr := func(name string) *npy.Array {
		a, err := npy.ReadFile(filepath.Join(dir, name+".npy"))
		require.NoError(t, err)
		return a
	}
	archive := filepath.Join(dir, "clip.pt")
	m, err := Load(archive, Options{})
	require.NoError(t, err)
	defer m.Close()
	assert.Equal(t, ref.Hyper, m.Config)
	rn := m.Visual.(*ModifiedResNet)
	require.Len(t, rn.Layer2, 2)
	assert.Nil(t, rn.Layer2[1].Downsample, "layer2.1 keeps stride 1 and 64 channels")
	traced, err := torch.LoadModule(archive)
	require.NoError(t, err)
	defer traced.Close()

	s := torch.NewScope().WithGrad(torch.NoGrad)
	defer s.Close()
	check := func(what string, got *torch.Tensor, want []float64, tol float64) {
		t.Helper()
		v, err := got.Float32s()
		require.NoError(t, err, what)
		e := reffix.RelErr(v, want)
		t.Logf("%s: rel err %.3g (tolerance %.3g), max abs %.3g", what, e, tol, reffix.MaxAbs(v, want))
		assert.Less(t, e, tol, what)
	}
	for _, c := range ref.EncodeImage {
		pa := arr(c.Pixels)
		px := s.FromFloat32(pa.F32, pa.Shape...)
		check(c.Features, m.EncodeImage(s, px), arr(c.Features).F64OrF32(), genRNFeatureRel)
		check(c.FeatureMap, rn.FeatureMap(s, px), arr(c.FeatureMap).F64OrF32(), genRNFeatureRel)
		// libtorch's TorchScript interpreter running the archive's traced graph.
		out, err := traced.RunMethod("encode_image", px)
		require.NoError(t, err)
		want, err := out.Float64s()
		out.Close()
		require.NoError(t, err)
		check(c.Features+" vs traced graph", m.EncodeImage(s, px), want, genRNFeatureRel)
	}

	ids := arr(ref.EncodeText.IDs)
	rows := make([][]int64, ids.Shape[0])
	for i := range rows {
		rows[i] = ids.I64[int64(i)*ids.Shape[1] : int64(i+1)*ids.Shape[1]]
	}
	assert.Equal(t, ref.EncodeText.EOTIndex, EOTIndices(rows))
	check(ref.EncodeText.Features, m.EncodeText(s, rows), arr(ref.EncodeText.Features).F64OrF32(), genRNFeatureRel)

	// Another input size with the positional embedding resized bicubically.
	pos := InterpolatePositionalEmbedding(s, rn.AttnPool.PositionalEmbedding, ref.Resized.Grid)
	pv, err := pos.Float32s()
	require.NoError(t, err)
	wantPos := arr(ref.Resized.PositionalEmbedding).F64OrF32()
	t.Logf("resized positional embedding: max abs err %.3g", reffix.MaxAbs(pv, wantPos))
	assert.Less(t, reffix.MaxAbs(pv, wantPos), 1e-6)
	pa := arr(ref.Resized.Pixels)
	fmap := rn.FeatureMap(s, s.FromFloat32(pa.F32, pa.Shape...))
	check(ref.Resized.Features, rn.AttnPool.ForwardWith(s, fmap, pos), arr(ref.Resized.Features).F64OrF32(), genRNFeatureRel)
	require.NoError(t, s.Err())

	// Backward through the eval-mode encoder to the pixels.
	g := torch.NewScope()
	defer g.Close()
	pa = arr(ref.Grad.Pixels)
	px := g.FromFloat32(pa.F32, pa.Shape...)
	require.NoError(t, px.SetRequiresGrad(true))
	wa := arr(ref.Grad.LossWeights)
	loss := g.Sum(g.Mul(m.EncodeImage(g, px), g.FromFloat32(wa.F32, wa.Shape...)), false)
	require.NoError(t, g.Err())
	lv, err := loss.Item()
	require.NoError(t, err)
	assert.InDelta(t, ref.Grad.Loss, lv, 1e-5*abs(ref.Grad.Loss))
	require.NoError(t, loss.Backward())
	grad, err := px.Grad()
	require.NoError(t, err)
	defer grad.Close()
	check("pixel gradient", grad, arr(ref.Grad.GradPixels).F64OrF32(), genRNGradRel)
}
