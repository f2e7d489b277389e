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

// Fixtures made by testdata/gen/make_clip.py: archives traced from an
// independent PyTorch CLIP (patch 32 and patch 16, multi-head vision, batch 1
// and 17, EOT at every kind of position) with outputs of their traced methods.
type genRef struct {
	Hyper       Config `json:"hyper"`
	EncodeImage []struct {
		Pixels, Features string
	} `json:"encode_image"`
	EncodeText []struct {
		IDs      string  `json:"ids"`
		EOTIndex []int64 `json:"eot_index"`
		Features string  `json:"features"`
	} `json:"encode_text"`
	FromEmbeddings struct {
		Embeddings  string  `json:"embeddings"`
		EOTIndex    string  `json:"eot_index"`
		Features    string  `json:"features"`
		LossWeights string  `json:"loss_weights"`
		Loss        float64 `json:"loss"`
		Grad        string  `json:"grad_embeddings"`
	} `json:"text_features_from_embeddings"`
}

func TestGeneratedArchives(t *testing.T) {
	for _, cfg := range []string{"tiny-p32", "tiny-p16"} {
		t.Run(cfg, func(t *testing.T) {
			dir := filepath.Join("..", "..", "testdata", "clipgen", cfg)
			b, err := os.ReadFile(filepath.Join(dir, "reference.json"))
			require.NoError(t, err)
			var ref genRef
			require.NoError(t, json.Unmarshal(b, &ref))
			arr := func(name string) *npy.Array {
				a, err := npy.ReadFile(filepath.Join(dir, name+".npy"))
				require.NoError(t, err)
				return a
			}
			m, err := Load(filepath.Join(dir, "clip.pt"), Options{})
			require.NoError(t, err)
			defer m.Close()
			want := ref.Hyper
			want.VisionHeads = max(1, want.VisionWidth/64)
			assert.Equal(t, want, m.Config)

			s := torch.NewScope().WithGrad(torch.NoGrad)
			defer s.Close()
			for _, c := range ref.EncodeImage {
				px := arr(c.Pixels)
				got, err := m.EncodeImage(s, s.FromFloat32(px.F32, px.Shape...)).Float32s()
				require.NoError(t, err, c.Pixels)
				e := reffix.RelErr(got, arr(c.Features).F64OrF32())
				t.Logf("%s: image features rel err %.3g", c.Pixels, e)
				assert.Less(t, e, featureRelTol, c.Pixels)
			}
			for _, c := range ref.EncodeText {
				ids := arr(c.IDs)
				rows := make([][]int64, ids.Shape[0])
				for i := range rows {
					rows[i] = ids.I64[int64(i)*ids.Shape[1] : int64(i+1)*ids.Shape[1]]
				}
				assert.Equal(t, c.EOTIndex, EOTIndices(rows))
				got, err := m.EncodeText(s, rows).Float32s()
				require.NoError(t, err, c.IDs)
				e := reffix.RelErr(got, arr(c.Features).F64OrF32())
				t.Logf("%s: text features rel err %.3g", c.IDs, e)
				assert.Less(t, e, featureRelTol, c.IDs)
			}

			// Prompt-learning path: features and the gradient to the embeddings.
			fe := ref.FromEmbeddings
			embA, eotA, wA := arr(fe.Embeddings), arr(fe.EOTIndex), arr(fe.LossWeights)
			g := torch.NewScope()
			defer g.Close()
			emb := g.FromFloat32(embA.F32, embA.Shape...)
			require.NoError(t, emb.SetRequiresGrad(true))
			feats := m.EncodeTextEmbeddings(g, emb, eotA.I64)
			loss := g.Sum(g.Mul(feats, g.FromFloat32(wA.F32, wA.Shape...)), false)
			require.NoError(t, g.Err())
			lv, err := loss.Item()
			require.NoError(t, err)
			assert.InDelta(t, fe.Loss, lv, 1e-5*abs(fe.Loss))
			require.NoError(t, loss.Backward())
			fv, err := feats.Float32s()
			require.NoError(t, err)
			assert.Less(t, reffix.RelErr(fv, arr(fe.Features).F64OrF32()), featureRelTol)
			grad, err := emb.Grad()
			require.NoError(t, err)
			defer grad.Close()
			gv, err := grad.Float32s()
			require.NoError(t, err)
			ge := reffix.RelErr(gv, arr(fe.Grad).F64OrF32())
			t.Logf("embedding gradient rel err %.3g", ge)
			assert.Less(t, ge, 1e-4)
		})
	}
}

func abs(x float64) float64 {
	if x < 0 {
		return -x
	}
	return x
}
