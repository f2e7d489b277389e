package clip

import (
	"fmt"
	"testing"

	"github.com/clipagiqa/clipagiqa/internal/ipiqaref"
	"github.com/clipagiqa/clipagiqa/torch"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Tolerances from testdata/ipiqa-ref/README.md ("Suggested tolerances"):
// ResNet stages and feature map 1e-5 × max abs of the tensor, attnpool
// outputs 2e-5 × max abs, text features atol 1e-5.
const (
	rnMapTol    = 1e-5
	rnPoolTol   = 2e-5
	rnTextAtol  = 1e-5
	rnInterpTol = 1e-6
)

func loadTinyRN(t *testing.T) *Model {
	t.Helper()
	m, err := Load(ipiqaref.Path("tiny_clip_rn_fp16.pt"), Options{})
	require.NoError(t, err)
	t.Cleanup(m.Close)
	return m
}

func TestInferConfigResNet(t *testing.T) {
	exp, err := ipiqaref.Load()
	require.NoError(t, err)
	h := exp.TinyCLIP.Hyper
	m := loadTinyRN(t)
	assert.Equal(t, Config{EmbedDim: h.EmbedDim, ImageResolution: h.ImageResolution, VisionLayers: 4,
		VisionWidth: h.VisionWidth, VisionHeads: exp.TinyCLIP.AttnPool.NumHeads, ContextLength: h.ContextLength,
		VocabSize: h.VocabSize, TransformerWidth: h.TransformerWidth, TransformerHeads: h.TransformerHeads,
		TransformerLayers: h.TransformerLayers, Backbone: BackboneResNet, VisionStages: h.VisionLayers}, m.Config)
	rn, ok := m.Visual.(*ModifiedResNet)
	require.True(t, ok, "visual is %T", m.Visual)
	assert.Equal(t, 224, rn.Resolution())
	for st, layer := range rn.stages() {
		b := (*layer)[0]
		assert.NotNil(t, b.Downsample, "layer%d.0 changes channels", st+1)
		assert.Equal(t, int64(min(st, 1)+1), b.Stride, "layer%d.0", st+1)
	}
	// Weights computing in float32: the fp16 archive's convolutions upcast,
	// BatchNorm statistics kept.
	assert.Equal(t, torch.Float32, rn.Layer1[0].Conv2.DType())
	assert.Equal(t, torch.Float32, rn.BN1.RunningVar.DType())
	assert.Equal(t, torch.Int64, rn.BN1.NumBatchesTracked.DType())
	// A float32 CPU ResNet starts on its fused eval trunk; DisableFused and
	// EnableFused switch it.
	assert.True(t, m.Fused())
	m.DisableFused()
	assert.False(t, m.Fused())
	assert.False(t, rn.FusedEval())
	ok, err = m.EnableFused()
	require.NoError(t, err)
	assert.True(t, ok)
	assert.True(t, m.Fused())
}

// encodeFixture runs f on the fixture's 8 images at side size.
func fixturePixels(t *testing.T, s *torch.Scope, size int) *torch.Tensor {
	t.Helper()
	px, err := ipiqaref.Pixels(size)
	require.NoError(t, err)
	return s.FromFloat32(px, ipiqaref.Images, 3, int64(size), int64(size))
}

func float32s(t *testing.T, x *torch.Tensor) []float32 {
	t.Helper()
	v, err := x.Float32s()
	require.NoError(t, err)
	return v
}

// CLIP's own visual at 224 (7×7 attnpool) = the fixture's Image2Prompt
// "visual_output_eval_before", computed by the official code.
func TestResNetEncodeImageMatchesOfficial(t *testing.T) {
	exp, err := ipiqaref.Load()
	require.NoError(t, err)
	m := loadTinyRN(t)
	live := torch.LiveTensors()
	s := torch.NewScope().WithGrad(torch.InferenceMode)
	got := float32s(t, m.EncodeImage(s, fixturePixels(t, s, 224)))
	require.NoError(t, s.Err())
	s.Close()
	assert.Equal(t, live, torch.LiveTensors(), "the forward frees every intermediate")
	want := ipiqaref.Flatten(exp.Image2Prompt.VisualOutputEvalBefore)
	tol := rnPoolTol * ipiqaref.MaxAbsOf(want)
	e := ipiqaref.MaxAbs(got, want)
	t.Logf("encode_image at 224: max abs err %.3g (tolerance %.3g, max |ref| %.3g)", e, tol, ipiqaref.MaxAbsOf(want))
	assert.LessOrEqual(t, e, tol)
}

// At 512 (IP-IQA's input): every stage, the map before the attnpool, and the
// attnpool with its positional embedding resized bicubically to 16×16.
func TestResNetStagesAndResizedPoolMatchOfficial(t *testing.T) {
	exp, err := ipiqaref.Load()
	require.NoError(t, err)
	m := loadTinyRN(t)
	rn := m.Visual.(*ModifiedResNet)
	s := torch.NewScope().WithGrad(torch.InferenceMode)
	defer s.Close()
	names := []string{"stem", "layer1", "layer2", "layer3"}
	fmap := rn.forward(s, fixturePixels(t, s, 512), func(i int, x *torch.Tensor) {
		if i >= len(names) {
			return
		}
		ref := exp.Eval.ResNetStages[names[i]]
		assert.Equal(t, ref.Shape, x.Shape(), names[i])
		r, what := ref.Compare(float32s(t, x), rnMapTol*max(-ref.Min, ref.Max))
		t.Logf("%s: worst deviation %.3g of tolerance (%s)", names[i], r, what)
		assert.LessOrEqual(t, r, 1.0, "%s: %s", names[i], what)
	})
	require.NoError(t, s.Err())
	require.Equal(t, exp.Eval.FeatureMapShape, fmap.Shape())
	// FeatureMap takes the fused eval trunk (BatchNorm folded); the stage
	// hook forces the op-by-op path. Both must match the official map.
	folds := rn.FusedEvalFolds()
	fused := float32s(t, rn.FeatureMap(s, fixturePixels(t, s, 512)))
	require.NoError(t, s.Err())
	assert.Greater(t, rn.FusedEvalFolds(), folds, "FeatureMap did not take the fused trunk")
	fv := float32s(t, fmap)
	t.Logf("fused trunk vs op by op: relative L2 %.3g", relL2(fused, fv))
	assert.Less(t, relL2(fused, fv), 1e-5)
	per := len(fv) / ipiqaref.Images
	for path, got := range map[string][]float32{"op by op": fv, "fused": fused} {
		for k, ref := range exp.Eval.FeatureMap {
			r, what := ref.Compare(got[k*per:(k+1)*per], rnMapTol*max(-ref.Min, ref.Max))
			if k == 0 {
				t.Logf("feature map img_0, %s: worst deviation %.3g of tolerance (%s)", path, r, what)
			}
			assert.LessOrEqual(t, r, 1.0, "feature map img_%d, %s: %s", k, path, what)
		}
	}

	// interpolate_pos_embed, against the official tensor in init_new_params.pth.
	init, err := torch.LoadStateDict(ipiqaref.Path("init_new_params.pth"))
	require.NoError(t, err)
	defer init.Close()
	pos := InterpolatePositionalEmbedding(s, rn.AttnPool.PositionalEmbedding, 16)
	require.NoError(t, s.Err())
	refPos, err := init.Get("attnpool.positional_embedding").Float64s()
	require.NoError(t, err)
	pv := float32s(t, pos)
	e := ipiqaref.MaxAbs(pv, refPos)
	t.Logf("bicubic positional embedding 7×7 → 16×16: max abs err %.3g (tolerance %.3g)", e, rnInterpTol)
	assert.LessOrEqual(t, e, rnInterpTol)

	got := float32s(t, rn.AttnPool.ForwardWith(s, fmap, pos))
	require.NoError(t, s.Err())
	want := ipiqaref.Flatten(exp.Eval.GlobalVisual)
	tol := rnPoolTol * ipiqaref.MaxAbsOf(want)
	e = ipiqaref.MaxAbs(got, want)
	t.Logf("attnpool at 16×16 (global_visual): max abs err %.3g (tolerance %.3g)", e, tol)
	assert.LessOrEqual(t, e, tol)

	// The 7×7 embedding does not fit a 16×16 map.
	rn.AttnPool.Forward(s, fmap)
	assert.ErrorContains(t, s.Err(), "does not fit positional embedding")
}

func TestResNetTextFeaturesMatchOfficial(t *testing.T) {
	exp, err := ipiqaref.Load()
	require.NoError(t, err)
	m := loadTinyRN(t)
	s := torch.NewScope().WithGrad(torch.InferenceMode)
	defer s.Close()
	ids := make([][]int64, len(exp.Prompts))
	for i, p := range exp.Prompts {
		ids[i] = p.Tokens77
	}
	got := float32s(t, m.EncodeText(s, ids))
	require.NoError(t, s.Err())
	e := ipiqaref.MaxAbs(got, ipiqaref.Flatten(exp.Eval.TextFeatures))
	t.Logf("text features: max abs err %.3g (tolerance %.3g)", e, rnTextAtol)
	assert.LessOrEqual(t, e, rnTextAtol)
}

func TestResNetBadInputs(t *testing.T) {
	m := loadTinyRN(t)
	s := torch.NewScope().WithGrad(torch.InferenceMode)
	defer s.Close()
	m.EncodeImage(s, s.Zeros(torch.Float32, 1, 3, 64, 64))
	assert.ErrorContains(t, s.Err(), "want [N 3 224 224]")

	// A checkpoint missing a shortcut projection, or one with a broken stage.
	for _, c := range []struct {
		drop []string
		want string
	}{
		{[]string{"visual.layer2.0.downsample.0.weight", "visual.layer2.0.downsample.1.weight",
			"visual.layer2.0.downsample.1.bias", "visual.layer2.0.downsample.1.running_mean",
			"visual.layer2.0.downsample.1.running_var", "visual.layer2.0.downsample.1.num_batches_tracked"},
			"visual.layer2.0 has stride 2 and 16→32 channels but no downsample tensors"},
		{[]string{"visual.layer3.0.bn2.running_var"}, "visual.layer3.0.bn2.running_var"},
		{[]string{"visual.attnpool.positional_embedding"}, "missing tensor visual.attnpool.positional_embedding"},
	} {
		sd, err := torch.LoadTorchScript(ipiqaref.Path("tiny_clip_rn_fp16.pt"))
		require.NoError(t, err)
		for _, n := range c.drop {
			require.NotNil(t, sd.Tensors[n], n)
			sd.Tensors[n].Close()
			delete(sd.Tensors, n)
		}
		_, err = FromStateDict(sd, Options{})
		sd.Close()
		require.Error(t, err, c.want)
		assert.Contains(t, err.Error(), c.want)
	}
}

// Train-mode BatchNorm and the backward pass through the whole encoder: the
// fixture's Image2Prompt step (visual at 224 in train mode, cosine embedding
// loss against the prompt embeddings). Tolerances from the README: outputs
// 2e-5 × max abs, loss atol 1e-6, gradients 5e-3 × max abs of each tensor's
// gradient (atol 1e-7 for the ≈0 k_proj.bias), running stats rtol 1e-5.
func TestResNetTrainModeMatchesOfficialImage2Prompt(t *testing.T) {
	exp, err := ipiqaref.Load()
	require.NoError(t, err)
	ref := exp.Image2Prompt
	m := loadTinyRN(t)
	rn := m.Visual.(*ModifiedResNet)
	rn.SetTraining(true)
	require.True(t, rn.Training())
	params := map[string]*torch.Tensor{}
	require.NoError(t, torch.WalkTagged(rn, "", func(f torch.TaggedField) error {
		if !f.Buffer {
			params[f.Name] = *f.Ptr
			return (*f.Ptr).SetRequiresGrad(true)
		}
		return nil
	}))
	require.Len(t, params, len(ref.Grads))

	s := torch.NewScope()
	defer s.Close()
	out := rn.Encode(s, fixturePixels(t, s, 224))
	require.NoError(t, s.Err())
	want := ipiqaref.Flatten(ref.VisualOutputTrainMode)
	got := float32s(t, out)
	e := ipiqaref.MaxAbs(got, want)
	t.Logf("train-mode output: max abs err %.3g (tolerance %.3g)", e, rnPoolTol*ipiqaref.MaxAbsOf(want))
	assert.LessOrEqual(t, e, rnPoolTol*ipiqaref.MaxAbsOf(want))

	target := s.FromFloat32(toF32(ipiqaref.Flatten(ref.PromptEmbeddings)), ipiqaref.Images, int64(len(ref.PromptEmbeddings[0])))
	ones := s.FromFloat32([]float32{1, 1, 1, 1, 1, 1, 1, 1}, ipiqaref.Images)
	loss := s.CosineEmbeddingLoss(out, target, ones, 0)
	require.NoError(t, s.Err())
	lv, err := loss.Item()
	require.NoError(t, err)
	t.Logf("loss %.9g, official %.9g", lv, ref.Loss)
	assert.InDelta(t, ref.Loss, lv, 1e-6)
	require.NoError(t, loss.Backward())
	worst, worstName := 0.0, ""
	for name, sum := range ref.Grads {
		g, err := params[name].Grad()
		require.NoError(t, err, name)
		tol := 5e-3 * max(-sum.Min, sum.Max)
		if name == "attnpool.k_proj.bias" {
			tol = 1e-7
		}
		r, what := sum.Compare(float32s(t, g), tol)
		g.Close()
		if r > worst {
			worst, worstName = r, name+": "+what
		}
		assert.LessOrEqual(t, r, 1.0, "%s: %s", name, what)
	}
	t.Logf("gradients: worst deviation %.3g of tolerance (%s)", worst, worstName)

	bns := map[string]*BatchNorm2d{"bn1": &rn.BN1, "bn2": &rn.BN2, "bn3": &rn.BN3}
	for st, layer := range rn.stages() {
		for i, b := range *layer {
			pre := fmt.Sprintf("layer%d.%d.", st+1, i)
			bns[pre+"bn1"], bns[pre+"bn2"], bns[pre+"bn3"] = &b.BN1, &b.BN2, &b.BN3
			if b.Downsample != nil {
				bns[pre+"downsample.1"] = &b.Downsample.BN
			}
		}
	}
	require.Len(t, bns, len(ref.BNRunningStatsAfter))
	for name, stats := range ref.BNRunningStatsAfter {
		bn := bns[name]
		require.NotNil(t, bn, name)
		for _, c := range []struct {
			key    string
			sum    ipiqaref.Summary
			tensor *torch.Tensor
		}{{"running_mean", stats.RunningMean, bn.RunningMean}, {"running_var", stats.RunningVar, bn.RunningVar}} {
			r, what := c.sum.Compare(float32s(t, c.tensor), 1e-5*max(-c.sum.Min, c.sum.Max))
			assert.LessOrEqual(t, r, 1.0, "%s.%s: %s", name, c.key, what)
		}
		n, err := bn.NumBatchesTracked.Item()
		require.NoError(t, err)
		assert.Equal(t, float64(stats.NumBatchesTracked), n, name)
	}
}

func toF32(v []float64) []float32 {
	out := make([]float32, len(v))
	for i, x := range v {
		out[i] = float32(x)
	}
	return out
}

// FLOPsPerImage against torch.profiler(with_flops=True) on make_clip_rn.py's
// tiny-rn (96×96): conv2d 17,455,104 + addmm 2,768,896 + bmm 10,240.
func TestResNetFLOPsMatchProfiler(t *testing.T) {
	c := Config{Backbone: BackboneResNet, ImageResolution: 96, VisionWidth: 8, VisionStages: []int{1, 2, 1, 1}, EmbedDim: 32}
	assert.InDelta(t, 17455104+2768896+10240, c.FLOPsPerImage(), 1)
}

// The default layout is channels-last in eval mode and row-major in training
// mode; forcing either gives the same feature map to the fixture's
// tolerance, and FeatureMap returns it row-major whatever the layout.
func TestResNetMemoryFormats(t *testing.T) {
	m := loadTinyRN(t)
	rn := m.Visual.(*ModifiedResNet)
	layoutOf := func(train bool) torch.MemoryFormat {
		rn.SetTraining(train)
		defer rn.SetTraining(false)
		s := torch.NewScope().WithGrad(torch.NoGrad)
		defer s.Close()
		got := torch.MemoryFormat(-1)
		rn.forward(s, fixturePixels(t, s, 224), func(i int, x *torch.Tensor) {
			if i != 1 {
				return
			}
			cl, err := x.IsContiguousAs(torch.ChannelsLast)
			require.NoError(t, err)
			rm, err := x.IsContiguousAs(torch.RowMajor)
			require.NoError(t, err)
			require.NotEqual(t, cl, rm, "layer1's %v map is dense in exactly one layout", x.Shape())
			got = torch.RowMajor
			if cl {
				got = torch.ChannelsLast
			}
		})
		require.NoError(t, s.Err())
		return got
	}
	assert.Equal(t, torch.ChannelsLast, layoutOf(false), "eval default")
	// (A training forward moves the running statistics; the two eval maps
	// compared below both see the moved ones.)
	assert.Equal(t, torch.RowMajor, layoutOf(true), "training default")

	featureMap := func(f torch.MemoryFormat) []float32 {
		rn.SetMemoryFormat(f)
		s := torch.NewScope().WithGrad(torch.InferenceMode)
		defer s.Close()
		fm := rn.FeatureMap(s, fixturePixels(t, s, 512))
		require.NoError(t, s.Err())
		rm, err := fm.IsContiguousAs(torch.RowMajor)
		require.NoError(t, err)
		assert.True(t, rm, "FeatureMap in %v is returned row-major", f)
		return float32s(t, fm)
	}
	cl, rm := featureMap(torch.ChannelsLast), featureMap(torch.RowMajor)
	assert.Equal(t, torch.RowMajor, layoutOf(false), "forced row-major")
	rn.SetMemoryFormat(torch.ChannelsLast)
	assert.Equal(t, torch.ChannelsLast, layoutOf(true), "forced channels-last in training")
	want := make([]float64, len(rm))
	for i, v := range rm {
		want[i] = float64(v)
	}
	tol := rnMapTol * ipiqaref.MaxAbsOf(want)
	e := ipiqaref.MaxAbs(cl, want)
	t.Logf("feature map at 512, channels-last vs row-major: max abs diff %.3g (tolerance %.3g)", e, tol)
	assert.LessOrEqual(t, e, tol)
	assert.NotEqual(t, cl, rm, "the two layouts run different kernels (else this test proves nothing)")
}
