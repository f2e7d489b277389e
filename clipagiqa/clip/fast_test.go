package clip

import (
	"fmt"
	"testing"

	"github.com/clipagiqa/clipagiqa/internal/reffix"
	"github.com/clipagiqa/clipagiqa/torch"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fusedRelTol bounds ‖fused − plain‖/‖plain‖: both compute in float32 with
// the same kernels except layer norm, the patch embedding and the order of
// bias additions, so they differ by rounding only.
const fusedRelTol = 1e-5

func encodeBoth(t *testing.T, m *Model, px []float32, n int64) (plain, fused []float32) {
	t.Helper()
	s := torch.NewScope().WithGrad(torch.InferenceMode)
	defer s.Close()
	pixels := s.FromFloat32(px[:n*3*224*224], n, 3, 224, 224)
	m.DisableFused()
	p := m.EncodeImage(s, pixels)
	ok, err := m.EnableFused()
	require.NoError(t, err)
	require.True(t, ok)
	f := m.EncodeImage(s, pixels)
	require.NoError(t, s.Err())
	plain, err = p.Float32s()
	require.NoError(t, err)
	fused, err = f.Float32s()
	require.NoError(t, err)
	return plain, fused
}

func toF64(v []float32) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(x)
	}
	return out
}

func TestFusedMatchesPlain(t *testing.T) {
	exp, err := reffix.Load()
	require.NoError(t, err)
	px, err := reffix.Pixels()
	require.NoError(t, err)
	prevThreads := torch.NumThreads()
	defer func() { require.NoError(t, torch.SetNumThreads(prevThreads)) }()
	for _, archive := range []string{"tiny_clip_vit.pt", "tiny_clip_vit_fp16.pt"} {
		m := loadTiny(t, archive)
		start := torch.LiveTensors()
		for _, threads := range []int{1, 2, 3} {
			require.NoError(t, torch.SetNumThreads(threads))
			for _, n := range []int64{1, 3, 8} {
				t.Run(fmt.Sprintf("%s/threads=%d/n=%d", archive, threads, n), func(t *testing.T) {
					plain, fused := encodeBoth(t, m, px.F32, n)
					require.Len(t, fused, int(n)*m.Config.EmbedDim)
					e := reffix.RelErr(fused, toF64(plain))
					t.Logf("fused vs plain rel err %.3g", e)
					assert.Less(t, e, fusedRelTol)
					// And against the Python reference's features (first n images).
					want := reffix.Flatten(exp.CLIPAGIQA.ImageFeaturesRaw)[:len(fused)]
					assert.Less(t, reffix.RelErr(fused, want), featureRelTol)
				})
			}
		}
		m.DisableFused()
		assert.Equal(t, start, torch.LiveTensors(), "tensor handles leaked")
		assert.False(t, m.Fused())
	}
}

// Repeated calls reuse the buffers: the same batch gives identical results,
// also after the buffers grew and after Trim.
func TestFusedRepeatable(t *testing.T) {
	px, err := reffix.Pixels()
	require.NoError(t, err)
	m := loadTiny(t, "tiny_clip_vit.pt")
	ok, err := m.EnableFused()
	require.NoError(t, err)
	require.True(t, ok)
	fe := m.Visual.(*FusedEncoder)
	run := func(n int64) []float32 {
		s := torch.NewScope().WithGrad(torch.NoGrad)
		defer s.Close()
		out, err := m.EncodeImage(s, s.FromFloat32(px.F32[:n*3*224*224], n, 3, 224, 224)).Float32s()
		require.NoError(t, err)
		require.NoError(t, s.Err())
		return out
	}
	a := run(2)
	b1 := fe.BufferBytes()
	assert.Positive(t, b1)
	c := run(8)
	assert.Greater(t, fe.BufferBytes(), b1)
	// BLAS kernels may round a row differently inside a larger product.
	assert.Less(t, reffix.RelErr(c[:len(a)], toF64(a)), fusedRelTol, "rows must not depend on the batch they are in")
	assert.Equal(t, a, run(2), "a smaller batch in the grown buffers")
	fe.Trim()
	assert.Zero(t, fe.BufferBytes())
	assert.Equal(t, a, run(2))
}

func TestFusedRejectsBadInput(t *testing.T) {
	m := loadTiny(t, "tiny_clip_vit.pt")
	ok, err := m.EnableFused()
	require.NoError(t, err)
	require.True(t, ok)
	s := torch.NewScope().WithGrad(torch.NoGrad)
	defer s.Close()
	m.EncodeImage(s, s.Zeros(torch.Float32, 2, 3, 64, 64))
	require.ErrorContains(t, s.Err(), "want [N 3 224 224]")

	// Pixels that need gradients take the plain, differentiable path.
	g := torch.NewScope()
	defer g.Close()
	px := g.Zeros(torch.Float32, 1, 3, 224, 224)
	require.NoError(t, px.SetRequiresGrad(true))
	out := m.EncodeImage(g, px)
	require.NoError(t, g.Err())
	assert.True(t, out.RequiresGrad())

	_, err = torch.NewFusedViT(nil, 2, 3)
	require.ErrorContains(t, err, "0 weights for 2 layers")
}

func BenchmarkEncodeImageTiny(b *testing.B) {
	px, err := reffix.Pixels()
	require.NoError(b, err)
	for _, fused := range []bool{false, true} {
		b.Run(fmt.Sprintf("fused=%v", fused), func(b *testing.B) {
			m, err := Load(reffix.Path("tiny_clip_vit.pt"), Options{})
			require.NoError(b, err)
			defer m.Close()
			if fused {
				_, err := m.EnableFused()
				require.NoError(b, err)
			}
			s := torch.NewScope().WithGrad(torch.InferenceMode)
			defer s.Close()
			pixels := s.FromFloat32(px.F32, 8, 3, 224, 224)
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
