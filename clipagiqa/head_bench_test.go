package clipagiqa

import (
	"testing"

	"github.com/clipagiqa/clipagiqa/internal/reffix"
	"github.com/clipagiqa/clipagiqa/torch"
	"github.com/stretchr/testify/require"
)

// BenchmarkInferenceHead measures what computing the head one row at a time
// (batch-invariant scores) costs against one batched product, next to the
// encoder forward of the same batch for scale. Run with
// go test ./clipagiqa -run '^$' -bench InferenceHead.
func BenchmarkInferenceHead(b *testing.B) {
	sc, err := LoadScorer(reffix.Path("tiny_clip_vit_fp16.pt"), reffix.Dir(), WithFused(true))
	require.NoError(b, err)
	defer sc.Close()
	const n = 32
	e := int64(sc.clip.Config.EmbedDim)
	feats := make([]float32, n*int(e))
	for i := range feats {
		feats[i] = float32(i%97) / 97
	}
	run := func(b *testing.B, f func(s *torch.Scope, x *torch.Tensor) *torch.Tensor) {
		for b.Loop() {
			s := torch.NewScope().WithGrad(torch.InferenceMode)
			if _, err := f(s, s.FromFloat32(feats, n, e)).Float32s(); err != nil {
				b.Fatal(err)
			}
			s.Close()
		}
	}
	b.Run("batched", func(b *testing.B) {
		run(b, func(s *torch.Scope, x *torch.Tensor) *torch.Tensor {
			return sc.head.(*agiqaHead).m.head(s, x, sc.text, false)
		})
	})
	b.Run("by-row", func(b *testing.B) {
		run(b, func(s *torch.Scope, x *torch.Tensor) *torch.Tensor {
			return sc.head.(*agiqaHead).m.Head(s, x, sc.text, false)
		})
	})
	b.Run("encoder+head", func(b *testing.B) {
		px := make([]float32, n*sc.per)
		for b.Loop() {
			if _, err := sc.forward(px, n, nil); err != nil {
				b.Fatal(err)
			}
		}
	})
}
