package clip

import (
	"testing"

	"github.com/clipagiqa/clipagiqa/internal/explainref"
	"github.com/clipagiqa/clipagiqa/internal/ipiqaref"
	"github.com/clipagiqa/clipagiqa/internal/reffix"
	"github.com/clipagiqa/clipagiqa/torch"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The last block's class-token attention equals PyTorch's
// nn.MultiheadAttention weights on the traced archive (make_explain_ref.py),
// and the features that come with it are Encode's.
func TestClassAttentionMatchesPyTorch(t *testing.T) {
	shape, want, err := explainref.Weights("vit_cls_attn")
	require.NoError(t, err)
	px, err := reffix.Pixels()
	require.NoError(t, err)
	for _, archive := range []string{"tiny_clip_vit.pt", "tiny_clip_vit_fp16.pt"} {
		t.Run(archive, func(t *testing.T) {
			m := loadTiny(t, archive)
			s := torch.NewScope().WithGrad(torch.InferenceMode)
			defer s.Close()
			pixels := s.FromFloat32(px.F32, px.Shape...)
			feats, w := m.ClassAttention(s, pixels)
			plain := m.EncodeImage(s, pixels)
			require.NoError(t, s.Err())
			assert.Equal(t, shape, w.Shape())
			got, err := w.Float32s()
			require.NoError(t, err)
			e, err := explainref.MaxAbs(got, want)
			require.NoError(t, err)
			t.Logf("class-token attention: max abs err %.3g (tolerance %.3g)", e, explainref.Tolerance)
			assert.LessOrEqual(t, e, explainref.Tolerance)

			a, err := feats.Float32s()
			require.NoError(t, err)
			b, err := plain.Float32s()
			require.NoError(t, err)
			assert.Equal(t, b, a, "ClassAttention's features are Encode's, bit for bit")
		})
	}
}

// Under EnableFused the weights come from the op-by-op path; the features
// still agree with the fused encoder to float32 rounding.
func TestClassAttentionWithFusedEncoder(t *testing.T) {
	m := loadTiny(t, "tiny_clip_vit.pt")
	ok, err := m.EnableFused()
	require.NoError(t, err)
	require.True(t, ok)
	px, err := reffix.Pixels()
	require.NoError(t, err)
	s := torch.NewScope().WithGrad(torch.InferenceMode)
	defer s.Close()
	pixels := s.FromFloat32(px.F32, px.Shape...)
	feats, w := m.ClassAttention(s, pixels)
	fused := m.EncodeImage(s, pixels)
	require.NoError(t, s.Err())
	assert.Equal(t, []int64{8, 3, 50}, w.Shape())
	a, err := feats.Float32s()
	require.NoError(t, err)
	b, err := fused.Float32s()
	require.NoError(t, err)
	for i := range a {
		assert.InDelta(t, b[i], a[i], 1e-4, "feature %d", i)
	}
}

func TestClassAttentionErrors(t *testing.T) {
	rn, err := Load(ipiqaref.Path("tiny_clip_rn_fp16.pt"), Options{})
	require.NoError(t, err)
	defer rn.Close()
	s := torch.NewScope().WithGrad(torch.InferenceMode)
	defer s.Close()
	rn.ClassAttention(s, s.Zeros(torch.Float32, 1, 3, 224, 224))
	assert.ErrorContains(t, s.Err(), "needs a ViT")

	vit := loadTiny(t, "tiny_clip_vit.pt")
	s2 := torch.NewScope().WithGrad(torch.InferenceMode)
	defer s2.Close()
	vit.ClassAttention(s2, s2.Zeros(torch.Float32, 1, 3, 64, 64))
	assert.ErrorContains(t, s2.Err(), "want [N 3 224 224]")
}

// Repeated calls free everything they make.
func TestClassAttentionKeepsLiveTensorsFlat(t *testing.T) {
	m := loadTiny(t, "tiny_clip_vit.pt")
	var counts []int64
	for range 3 {
		s := torch.NewScope().WithGrad(torch.InferenceMode)
		m.ClassAttention(s, s.Zeros(torch.Float32, 2, 3, 224, 224))
		require.NoError(t, s.Err())
		s.Close()
		counts = append(counts, torch.LiveTensors())
	}
	assert.Equal(t, counts[0], counts[1])
	assert.Equal(t, counts[0], counts[2])
}
