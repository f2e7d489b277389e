package clip

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/clipagiqa/clipagiqa/internal/reffix"
	"github.com/clipagiqa/clipagiqa/torch"
	"github.com/stretchr/testify/require"
)

// BenchmarkFusedEncodeImage times the fused image encoder on the tiny
// fixture at batch 1 and 32 (the fixture's 8 images repeated).
func BenchmarkFusedEncodeImage(b *testing.B) {
	px, err := reffix.Pixels()
	require.NoError(b, err)
	m, err := Load(reffix.Path("tiny_clip_vit.pt"), Options{})
	require.NoError(b, err)
	defer m.Close()
	ok, err := m.EnableFused()
	require.NoError(b, err)
	require.True(b, ok)
	const img = 3 * 224 * 224
	for _, n := range []int{1, 32} {
		b.Run(fmt.Sprintf("batch=%d", n), func(b *testing.B) {
			data := make([]float32, 0, n*img)
			for len(data) < n*img {
				data = append(data, px.F32[:min(len(px.F32), n*img-len(data))]...)
			}
			s := torch.NewScope().WithGrad(torch.InferenceMode)
			defer s.Close()
			pixels := s.FromFloat32(data, int64(n), 3, 224, 224)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				sub := s.Sub()
				m.EncodeImage(sub, pixels)
				sub.Close()
			}
			require.NoError(b, s.Err())
		})
	}
}

// BenchmarkFusedTextSharedPrefix times CLIP-AGIQA's text path on the tiny
// fixture: 6 prompts sharing SOT + 16 context vectors, forward and backward
// to the context.
func BenchmarkFusedTextSharedPrefix(b *testing.B) {
	m, err := Load(reffix.Path("tiny_clip_vit.pt"), Options{})
	require.NoError(b, err)
	defer m.Close()
	ok, err := m.EnableFused()
	require.NoError(b, err)
	require.True(b, ok)
	d := int64(m.Config.TransformerWidth)
	const p, k, sLen = 17, 6, 60
	rng := rand.New(rand.NewPCG(1, 2))
	prefix, suffix := randFloats(rng, p*int(d), 0.05), randFloats(rng, k*sLen*int(d), 0.05)
	eot := []int64{19, 20, 21, 19, 22, 20}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		s := torch.NewScope()
		pt := s.FromFloat32(prefix, 1, p, d)
		require.NoError(b, pt.SetRequiresGrad(true))
		f := m.EncodeTextSharedPrefix(s, pt, s.FromFloat32(suffix, k, sLen, d), eot)
		require.NoError(b, s.Sum(f, false).Backward())
		require.NoError(b, s.Err())
		s.Close()
	}
}
