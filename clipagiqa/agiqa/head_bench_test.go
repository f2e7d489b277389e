package agiqa

import (
	"testing"

	"github.com/clipagiqa/clipagiqa/clipagiqa/clip"
	"github.com/clipagiqa/clipagiqa/clipagiqa/tokenizer"
	"github.com/clipagiqa/clipagiqa/internal/reffix"
	"github.com/clipagiqa/clipagiqa/torch"
	"github.com/stretchr/testify/require"
)

// BenchmarkInferenceHead measures what computing the head one row at a time
// (batch-invariant scores) costs against one batched product, next to the
// encoder forward of the same batch for scale. Run with
// go test ./clipagiqa/agiqa -run '^$' -bench InferenceHead.
func BenchmarkInferenceHead(b *testing.B) {
	c, err := clip.Load(reffix.Path("tiny_clip_vit_fp16.pt"), clip.Options{})
	require.NoError(b, err)
	defer c.Close()
	_, err = c.EnableFused()
	require.NoError(b, err)
	tok, err := tokenizer.Default()
	require.NoError(b, err)
	ck, err := ReadCheckpoint(reffix.Dir(), 0)
	require.NoError(b, err)
	m, err := FromCheckpoint(c, tok, ck)
	require.NoError(b, err)
	defer m.Close()
	ts := torch.NewScope().WithGrad(torch.InferenceMode)
	defer ts.Close()
	text := m.TextFeatures(ts)
	require.NoError(b, ts.Err())
	const n = 32
	e := int64(c.Config.EmbedDim)
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
			return m.head(s, x, text, false)
		})
	})
	b.Run("by-row", func(b *testing.B) {
		run(b, func(s *torch.Scope, x *torch.Tensor) *torch.Tensor {
			return m.Head(s, x, text, false)
		})
	})
	b.Run("encoder+head", func(b *testing.B) {
		r := int64(c.Config.ImageResolution)
		px := make([]float32, n*3*int(r*r))
		for b.Loop() {
			s := torch.NewScope().WithGrad(torch.InferenceMode)
			if _, err := m.Head(s, m.ImageFeatures(s, s.FromFloat32(px, n, 3, r, r)), text, false).Float32s(); err != nil {
				b.Fatal(err)
			}
			s.Close()
		}
	})
}
