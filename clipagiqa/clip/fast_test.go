package clip

import (
	"fmt"
	"math/rand/v2"
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

	_, err = torch.NewFusedBlocks(nil, 2)
	require.ErrorContains(t, err, "no weights")
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

// randomCLIP builds a small CLIP with random weights whose text tower has
// two heads (the fixture's has one), to cover multi-head attention.
func randomCLIP(t *testing.T, textWidth, textLayers int64) *Model {
	t.Helper()
	require.NoError(t, torch.ManualSeed(3))
	s := torch.NewScope().WithGrad(torch.NoGrad)
	defer s.Close()
	sd := torch.NewStateDict()
	defer sd.Close()
	put := func(name string, std float64, shape ...int64) {
		sd.Set(name, s.Keep(s.MulScalar(s.Randn(torch.Float32, shape...), std)))
	}
	ln := func(prefix string, w int64) {
		sd.Set(prefix+".weight", s.Keep(s.AddScalar(s.MulScalar(s.Randn(torch.Float32, w), 0.1), 1)))
		put(prefix+".bias", 0.05, w)
	}
	block := func(prefix string, w int64) {
		put(prefix+".attn.in_proj_weight", 0.05, 3*w, w)
		put(prefix+".attn.in_proj_bias", 0.02, 3*w)
		put(prefix+".attn.out_proj.weight", 0.05, w, w)
		put(prefix+".attn.out_proj.bias", 0.02, w)
		ln(prefix+".ln_1", w)
		put(prefix+".mlp.c_fc.weight", 0.05, 4*w, w)
		put(prefix+".mlp.c_fc.bias", 0.02, 4*w)
		put(prefix+".mlp.c_proj.weight", 0.03, w, 4*w)
		put(prefix+".mlp.c_proj.bias", 0.02, w)
		ln(prefix+".ln_2", w)
	}
	const vw, embed = 64, 32
	put("visual.conv1.weight", 0.05, vw, 3, 32, 32)
	put("visual.class_embedding", 0.1, vw)
	put("visual.positional_embedding", 0.1, 5, vw)
	ln("visual.ln_pre", vw)
	block("visual.transformer.resblocks.0", vw)
	ln("visual.ln_post", vw)
	put("visual.proj", 0.1, vw, embed)
	put("token_embedding.weight", 0.02, 49408, textWidth)
	put("positional_embedding", 0.01, 77, textWidth)
	for i := int64(0); i < textLayers; i++ {
		block(fmt.Sprintf("transformer.resblocks.%d", i), textWidth)
	}
	ln("ln_final", textWidth)
	put("text_projection", 0.1, textWidth, embed)
	require.NoError(t, s.Err())
	m, err := FromStateDict(sd, Options{})
	require.NoError(t, err)
	t.Cleanup(m.Close)
	return m
}

// textRun computes Σ features·V of the shared-prefix text path and the
// gradients to both inputs.
func textRun(t *testing.T, m *Model, prefix, suffix []float32, pShape, sShape []int64, eot []int64, v []float32) (feat, gp, gs []float32) {
	t.Helper()
	s := torch.NewScope()
	defer s.Close()
	p := s.FromFloat32(prefix, pShape...)
	x := s.FromFloat32(suffix, sShape...)
	require.NoError(t, p.SetRequiresGrad(true))
	require.NoError(t, x.SetRequiresGrad(true))
	f := m.EncodeTextSharedPrefix(s, p, x, eot)
	loss := s.Sum(s.Mul(f, s.FromFloat32(v, f.Shape()...)), false)
	require.NoError(t, s.Err())
	require.NoError(t, loss.Backward())
	var err error
	feat, err = f.Float32s()
	require.NoError(t, err)
	for i, in := range []*torch.Tensor{p, x} {
		g, err := in.Grad()
		require.NoError(t, err)
		require.NotNil(t, g, "input %d has no gradient", i)
		vals, err := g.Float32s()
		g.Close()
		require.NoError(t, err)
		if i == 0 {
			gp = vals
		} else {
			gs = vals
		}
	}
	return feat, gp, gs
}

func randFloats(rng *rand.Rand, n int, std float32) []float32 {
	out := make([]float32, n)
	for i := range out {
		out[i] = std * float32(rng.NormFloat64())
	}
	return out
}

// The fused text path (forward and hand-written backward) gives the plain
// autograd path's features and input gradients.
func TestFusedTextMatchesPlain(t *testing.T) {
	models := map[string]*Model{
		"fixture-1-head":  loadTiny(t, "tiny_clip_vit.pt"),
		"random-2-heads":  randomCLIP(t, 128, 2),
		"random-3-layers": randomCLIP(t, 64, 3),
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for name, m := range models {
		t.Run(name, func(t *testing.T) {
			d := int64(m.Config.TransformerWidth)
			const p, k, sLen = 17, 4, 60 // SOT + 16 context; 4 prompts
			eot := []int64{19, 17, 22, 18}
			prefix := randFloats(rng, p*int(d), 0.05)
			suffix := randFloats(rng, k*sLen*int(d), 0.05)
			v := randFloats(rng, k*m.Config.EmbedDim, 1)
			start := torch.LiveTensors()
			m.DisableFused()
			f1, gp1, gs1 := textRun(t, m, prefix, suffix, []int64{1, p, d}, []int64{k, sLen, d}, eot, v)
			ok, err := m.EnableFused()
			require.NoError(t, err)
			require.True(t, ok)
			f2, gp2, gs2 := textRun(t, m, prefix, suffix, []int64{1, p, d}, []int64{k, sLen, d}, eot, v)
			fe, pe, se := reffix.RelErr(f2, toF64(f1)), reffix.RelErr(gp2, toF64(gp1)), reffix.RelErr(gs2, toF64(gs1))
			t.Logf("rel err: features %.3g, prefix grad %.3g, suffix grad %.3g", fe, pe, se)
			assert.Less(t, fe, fusedRelTol)
			assert.Less(t, pe, 1e-4)
			assert.Less(t, se, 1e-4)
			// Positions after the last EOT get no gradient.
			for i := 0; i < k; i++ {
				for j := 23 - p; j < sLen; j++ {
					row := gs2[(i*sLen+j)*int(d) : (i*sLen+j+1)*int(d)]
					require.Equal(t, make([]float32, d), row, "prompt %d position %d", i, j)
				}
			}
			// Without grad the same features come out (to rounding: training
			// may use transposed weights with another product kernel).
			s := torch.NewScope().WithGrad(torch.InferenceMode)
			f3 := m.EncodeTextSharedPrefix(s, s.FromFloat32(prefix, 1, p, d), s.FromFloat32(suffix, k, sLen, d), eot)
			require.NoError(t, s.Err())
			v3, err := f3.Float32s()
			require.NoError(t, err)
			s.Close()
			assert.Less(t, reffix.RelErr(v3, toF64(f2)), fusedRelTol)
			m.DisableFused()
			assert.Equal(t, start, torch.LiveTensors(), "tensor handles leaked")
		})
	}
}

func TestFusedTextRejectsBadInput(t *testing.T) {
	m := loadTiny(t, "tiny_clip_vit.pt")
	ok, err := m.EnableFused()
	require.NoError(t, err)
	require.True(t, ok)
	s := torch.NewScope()
	defer s.Close()
	prefix, suffix := s.Zeros(torch.Float32, 1, 17, 64), s.Zeros(torch.Float32, 2, 10, 64)
	m.EncodeTextSharedPrefix(s, prefix, suffix, []int64{18, 30})
	require.ErrorContains(t, s.Err(), "not in the suffix")
	s2 := torch.NewScope()
	defer s2.Close()
	m.text.ForwardSharedPrefix(s2, s2.Zeros(torch.Float32, 1, 17, 32), suffix)
	require.ErrorContains(t, s2.Err(), "want [1 P 64]")
	s3 := torch.NewScope()
	defer s3.Close()
	m.text.Forward(s3, s3.Zeros(torch.Float32, 2, 5, 32))
	require.ErrorContains(t, s3.Err(), "want [N L 64]")
}

// blockWeights is t's block weights by name, as newFusedBlocks passes them.
func blockWeights(t *testing.T, tr *Transformer) map[string]*torch.Tensor {
	t.Helper()
	ws := map[string]*torch.Tensor{}
	require.NoError(t, torch.WalkTagged(tr, "", func(f torch.TaggedField) error {
		ws[f.Name] = *f.Ptr
		return nil
	}))
	return ws
}

// The weights are found by name: a missing, unknown or misshapen one is
// refused with its name.
func TestFusedBlocksWeightNames(t *testing.T) {
	m := loadTiny(t, "tiny_clip_vit.pt")
	heads := m.Transformer.Heads
	ws := blockWeights(t, &m.Transformer)
	require.Len(t, ws, 12*len(m.Transformer.Blocks))
	f, err := torch.NewFusedBlocks(ws, heads)
	require.NoError(t, err)
	assert.Equal(t, len(m.Transformer.Blocks), f.Layers())
	f.Close()
	assert.Zero(t, f.Layers())

	last := len(m.Transformer.Blocks) - 1
	edit := func(fn func(map[string]*torch.Tensor)) map[string]*torch.Tensor {
		c := map[string]*torch.Tensor{}
		for k, v := range ws {
			c[k] = v
		}
		fn(c)
		return c
	}
	for _, c := range []struct {
		name  string
		ws    map[string]*torch.Tensor
		heads int
		want  string
	}{
		{"missing", edit(func(c map[string]*torch.Tensor) { delete(c, fmt.Sprintf("resblocks.%d.ln_2.bias", last)) }), heads,
			fmt.Sprintf("missing weight resblocks.%d.ln_2.bias", last)},
		{"gap", edit(func(c map[string]*torch.Tensor) {
			c[fmt.Sprintf("resblocks.%d.ln_2.bias", last+3)] = ws["resblocks.0.ln_2.bias"]
		}), heads,
			fmt.Sprintf("missing weight resblocks.%d.attn.in_proj_weight", last+1)},
		{"unexpected", edit(func(c map[string]*torch.Tensor) { c["resblocks.0.attn.bias_k"] = ws["resblocks.0.ln_1.bias"] }), heads,
			"unexpected weight resblocks.0.attn.bias_k"},
		{"outside", edit(func(c map[string]*torch.Tensor) { c["ln_final.weight"] = m.LNFinal.Weight }), heads,
			"unexpected weight ln_final.weight"},
		{"shape", edit(func(c map[string]*torch.Tensor) {
			c["resblocks.0.mlp.c_fc.bias"] = ws["resblocks.0.ln_1.bias"]
		}), heads, "resblocks.0.mlp.c_fc.bias has shape"},
		{"heads", ws, 5, "not divisible by 5 heads"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := torch.NewFusedBlocks(c.ws, c.heads)
			require.ErrorContains(t, err, c.want)
		})
	}
}

// The block-stack op gives the plain blocks' output (Transformer.forward,
// unmasked as in the ViT) on random activations, for the fixture's vision
// and text towers and a multi-head random one; every row is the same
// whichever batch it is in.
func TestFusedBlocksForwardMatchesPlain(t *testing.T) {
	tiny := loadTiny(t, "tiny_clip_vit.pt")
	towers := map[string]*Transformer{
		"vision":          &tiny.Visual.(*VisionTransformer).Transformer,
		"text":            &tiny.Transformer,
		"random-2-heads":  &randomCLIP(t, 128, 2).Transformer,
		"random-3-layers": &randomCLIP(t, 64, 3).Transformer,
	}
	rng := rand.New(rand.NewPCG(5, 6))
	for name, tr := range towers {
		t.Run(name, func(t *testing.T) {
			f, err := torch.NewFusedBlocks(blockWeights(t, tr), tr.Heads)
			require.NoError(t, err)
			defer f.Close()
			w := tr.Blocks[0].LN1.Weight.Shape()[0]
			const n, l = 3, 50
			x := randFloats(rng, n*l*int(w), 0.5)
			start := torch.LiveTensors()
			s := torch.NewScope().WithGrad(torch.InferenceMode)
			in := s.FromFloat32(x, n, l, w)
			plain, err := tr.forward(s, in, nil, torch.Float32).Float32s()
			require.NoError(t, err)
			fused, err := f.Forward(s, in).Float32s()
			require.NoError(t, err)
			one, err := f.Forward(s, s.FromFloat32(x[:l*int(w)], 1, l, w)).Float32s()
			require.NoError(t, err)
			require.NoError(t, s.Err())
			s.Close()
			e := reffix.RelErr(fused, toF64(plain))
			t.Logf("fused blocks vs plain rel err %.3g", e)
			assert.Less(t, e, fusedRelTol)
			assert.Equal(t, fused[:len(one)], one, "a row depends on its batch")
			assert.Equal(t, start, torch.LiveTensors(), "tensor handles leaked")
		})
	}
}

// The shared-prefix op gives the plain op-by-op shared-prefix blocks' output
// and input gradients.
func TestFusedBlocksSharedPrefixMatchesPlain(t *testing.T) {
	models := map[string]*Model{
		"fixture-1-head": loadTiny(t, "tiny_clip_vit.pt"),
		"random-2-heads": randomCLIP(t, 128, 2),
	}
	rng := rand.New(rand.NewPCG(7, 8))
	for name, m := range models {
		t.Run(name, func(t *testing.T) {
			f, err := torch.NewFusedBlocks(blockWeights(t, &m.Transformer), m.Transformer.Heads)
			require.NoError(t, err)
			defer f.Close()
			d := int64(m.Config.TransformerWidth)
			const p, k, l = 9, 3, 7
			xp, xs := randFloats(rng, p*int(d), 0.5), randFloats(rng, k*l*int(d), 0.5)
			v := randFloats(rng, k*l*int(d), 1)
			start := torch.LiveTensors()
			run := func(fused bool) (out, gp, gs []float32) {
				s := torch.NewScope()
				defer s.Close()
				a, b := s.FromFloat32(xp, 1, p, d), s.FromFloat32(xs, k, l, d)
				require.NoError(t, a.SetRequiresGrad(true))
				require.NoError(t, b.SetRequiresGrad(true))
				var y *torch.Tensor
				if fused {
					y = f.ForwardSharedPrefix(s, a, b)
				} else {
					y = m.sharedPrefixBlocks(s, a, b)
				}
				loss := s.Sum(s.Mul(y, s.FromFloat32(v, k, l, d)), false)
				require.NoError(t, s.Err())
				require.NoError(t, loss.Backward())
				out, err := y.Float32s()
				require.NoError(t, err)
				var gs2 [2][]float32
				for i, in := range []*torch.Tensor{a, b} {
					g, err := in.Grad()
					require.NoError(t, err)
					require.NotNil(t, g)
					gs2[i], err = g.Float32s()
					g.Close()
					require.NoError(t, err)
				}
				return out, gs2[0], gs2[1]
			}
			o1, p1, s1 := run(false)
			o2, p2, s2 := run(true)
			oe, pe, se := reffix.RelErr(o2, toF64(o1)), reffix.RelErr(p2, toF64(p1)), reffix.RelErr(s2, toF64(s1))
			t.Logf("rel err: output %.3g, prefix grad %.3g, suffix grad %.3g", oe, pe, se)
			assert.Less(t, oe, fusedRelTol)
			assert.Less(t, pe, 1e-4)
			assert.Less(t, se, 1e-4)
			assert.Equal(t, start, torch.LiveTensors(), "tensor handles leaked")
		})
	}
}

// The stem's fused ops give the plain ops' values: the patch embedding
// conv2d (stride = kernel) and layer norm, with every image's tokens the
// same whichever batch it is in.
func TestFusedStemOpsMatchPlain(t *testing.T) {
	m := loadTiny(t, "tiny_clip_vit.pt")
	v := m.Visual.(*VisionTransformer)
	px, err := reffix.Pixels()
	require.NoError(t, err)
	start := torch.LiveTensors()
	s := torch.NewScope().WithGrad(torch.InferenceMode)
	const n = 3
	pixels := s.FromFloat32(px.F32[:n*3*224*224], n, 3, 224, 224)
	plainEmbed, err := v.patchEmbed(s, pixels, n, false).Float32s()
	require.NoError(t, err)
	fusedT := v.patchEmbed(s, pixels, n, true)
	fusedEmbed, err := fusedT.Float32s()
	require.NoError(t, err)
	one, err := s.FusedPatchEmbed(s.FromFloat32(px.F32[2*3*224*224:n*3*224*224], 1, 3, 224, 224), v.Conv1).Float32s()
	require.NoError(t, err)
	plainLN, err := layerNorm(s, fusedT, v.LNPre, torch.Float32).Float32s()
	require.NoError(t, err)
	fusedLN, err := s.FusedLayerNorm(fusedT, v.LNPre.Weight, v.LNPre.Bias, 1e-5).Float32s()
	require.NoError(t, err)
	require.NoError(t, s.Err())
	assert.Equal(t, fusedT.Shape(), []int64{n, 49, int64(v.cfg.VisionWidth)})
	s.Close()
	ee, le := reffix.RelErr(fusedEmbed, toF64(plainEmbed)), reffix.RelErr(fusedLN, toF64(plainLN))
	t.Logf("rel err: patch embed %.3g, layer norm %.3g", ee, le)
	assert.Less(t, ee, fusedRelTol)
	assert.Less(t, le, fusedRelTol)
	assert.Equal(t, fusedEmbed[len(fusedEmbed)-len(one):], one, "an image's tokens depend on its batch")
	assert.Equal(t, start, torch.LiveTensors(), "tensor handles leaked")

	bad := torch.NewScope()
	defer bad.Close()
	bad.FusedPatchEmbed(bad.Zeros(torch.Float32, 1, 3, 50, 50), v.Conv1)
	require.ErrorContains(t, bad.Err(), "with P dividing R")
	bad2 := torch.NewScope()
	defer bad2.Close()
	bad2.FusedLayerNorm(bad2.Zeros(torch.Float32, 2, 5), v.LNPre.Weight, v.LNPre.Bias, 1e-5)
	require.ErrorContains(t, bad2.Err(), "want [... W]")
}
