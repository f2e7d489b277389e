package ipiqa

import (
	"testing"

	"github.com/clipagiqa/clipagiqa/internal/explainref"
	"github.com/clipagiqa/clipagiqa/torch"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// AttentionMaps equals, on the fixture's initial model, the weights PyTorch
// gives (make_explain_ref.py): F.multi_head_attention_forward for CLIP's
// attnpool (q scaled before q·kᵀ) and the official cross-attention formula
// (scaled after) for txt_attnpool. The ResNet runs row-major, as the
// reference did: the attention formulas are under test here, the layouts'
// agreement in clip's TestResNetMemoryFormats (channels-last moves these
// weights by up to 1.2e-5).
func TestAttentionMapsMatchPyTorch(t *testing.T) {
	f := loadFixture(t)
	m := newFixtureModel(t, 2)
	m.rn.SetMemoryFormat(torch.RowMajor)
	s := torch.NewScope().WithGrad(torch.InferenceMode)
	defer s.Close()
	px, ids := fixtureInputs(t, s, f)
	vis, txt := m.AttentionMaps(s, px, ids)
	require.NoError(t, s.Err())
	for _, c := range []struct {
		name string
		got  *torch.Tensor
	}{{"ipiqa_visual_attn", vis}, {"ipiqa_text_attn", txt}} {
		shape, want, err := explainref.Weights(c.name)
		require.NoError(t, err)
		assert.Equal(t, shape, c.got.Shape(), c.name)
		e, err := explainref.MaxAbs(values(t, c.got), want)
		require.NoError(t, err)
		t.Logf("%s: max abs err %.3g (tolerance %.3g)", c.name, e, explainref.Tolerance)
		assert.LessOrEqual(t, e, explainref.Tolerance, c.name)
	}
}
