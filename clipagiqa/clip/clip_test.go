package clip

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/clipagiqa/clipagiqa/internal/reffix"
	"github.com/clipagiqa/clipagiqa/torch"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Tolerance for features: relative L2 error ‖ours−ref‖/‖ref‖ (issue: 1e-4).
const featureRelTol = 1e-4

func loadTiny(t *testing.T, name string) *Model {
	t.Helper()
	m, err := Load(reffix.Path(name), Options{})
	require.NoError(t, err)
	t.Cleanup(m.Close)
	return m
}

func TestInferConfigMatchesReference(t *testing.T) {
	m := loadTiny(t, "tiny_clip_vit_fp16.pt")
	assert.Equal(t, Config{EmbedDim: 512, ImageResolution: 224, VisionLayers: 3, VisionWidth: 192, VisionHeads: 3,
		VisionPatchSize: 32, ContextLength: 77, VocabSize: 49408, TransformerWidth: 64, TransformerHeads: 1,
		TransformerLayers: 3, Backbone: "ViT"}, m.Config)
}

func TestImageAndTextFeaturesMatchReference(t *testing.T) {
	exp, err := reffix.Load()
	require.NoError(t, err)
	px, err := reffix.Pixels()
	require.NoError(t, err)
	for _, archive := range []string{"tiny_clip_vit_fp16.pt", "tiny_clip_vit.pt"} {
		t.Run(archive, func(t *testing.T) {
			m := loadTiny(t, archive)
			s := torch.NewScope().WithGrad(torch.InferenceMode)
			defer s.Close()
			img := m.EncodeImage(s, s.FromFloat32(px.F32, px.Shape...))
			txt := m.EncodeText(s, exp.CLIPIQA.Tokenized)
			require.NoError(t, s.Err())
			iv, err := img.Float32s()
			require.NoError(t, err)
			tv, err := txt.Float32s()
			require.NoError(t, err)
			ie := reffix.RelErr(iv, reffix.Flatten(exp.CLIPAGIQA.ImageFeaturesRaw))
			te := reffix.RelErr(tv, reffix.Flatten(exp.CLIPIQA.TextFeaturesRaw))
			t.Logf("image features rel err %.3g, max abs %.3g; text features rel err %.3g", ie,
				reffix.MaxAbs(iv, reffix.Flatten(exp.CLIPAGIQA.ImageFeaturesRaw)), te)
			assert.Less(t, ie, featureRelTol)
			assert.Less(t, te, featureRelTol)
		})
	}
}

// The fp32 archive's own traced encode_image/encode_text, run by libtorch's
// TorchScript interpreter, are a second reference.
func TestMatchesTracedGraph(t *testing.T) {
	exp, err := reffix.Load()
	require.NoError(t, err)
	px, err := reffix.Pixels()
	require.NoError(t, err)
	mod, err := torch.LoadModule(reffix.Path("tiny_clip_vit.pt"))
	require.NoError(t, err)
	defer mod.Close()
	m := loadTiny(t, "tiny_clip_vit.pt")
	s := torch.NewScope().WithGrad(torch.NoGrad)
	defer s.Close()
	pixels := s.FromFloat32(px.F32[:3*224*224*3], 3, 3, 224, 224)
	ids := s.Cast(s.FromInt64(reffix.FlattenInts(exp.CLIPIQA.Tokenized), 2, 77), torch.Int32)
	require.NoError(t, s.Err())
	refImg, err := mod.RunMethod("encode_image", pixels)
	require.NoError(t, err)
	defer refImg.Close()
	refTxt, err := mod.RunMethod("encode_text", ids)
	require.NoError(t, err)
	defer refTxt.Close()
	ours := m.EncodeImage(s, pixels)
	oursTxt := m.EncodeText(s, exp.CLIPIQA.Tokenized)
	require.NoError(t, s.Err())
	for _, pair := range [][2]*torch.Tensor{{ours, refImg}, {oursTxt, refTxt}} {
		a, err := pair[0].Float32s()
		require.NoError(t, err)
		b, err := pair[1].Float64s()
		require.NoError(t, err)
		assert.Less(t, reffix.RelErr(a, b), featureRelTol)
	}
}

func TestBadArchives(t *testing.T) {
	dir := t.TempDir()
	junk := filepath.Join(dir, "junk.pt")
	require.NoError(t, os.WriteFile(junk, []byte("hello"), 0o644))
	for _, p := range []string{filepath.Join(dir, "missing.pt"), junk, reffix.Path("prompt_learner/model.pth.tar-100")} {
		_, err := Load(p, Options{})
		require.Error(t, err, p)
		assert.Contains(t, err.Error(), p)
	}
	// A CLIP archive with a block removed reports the missing tensors.
	sd, err := torch.LoadTorchScript(reffix.Path("tiny_clip_vit_fp16.pt"))
	require.NoError(t, err)
	defer sd.Close()
	for _, n := range []string{"transformer.resblocks.1.mlp.c_fc.weight", "ln_final.bias"} {
		sd.Tensors[n].Close()
		delete(sd.Tensors, n)
	}
	_, err = FromStateDict(sd, Options{})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "ln_final.bias")
	assert.Contains(t, err.Error(), "transformer.resblocks.1.mlp.c_fc.weight")
}

func TestFP16NeedsCUDA(t *testing.T) {
	if torch.CUDAAvailable() {
		t.Skip("CUDA present")
	}
	_, err := Load(reffix.Path("tiny_clip_vit_fp16.pt"), Options{Precision: torch.Float16})
	require.ErrorContains(t, err, "needs a CUDA device")
}
