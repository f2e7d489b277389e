package explain

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/clipagiqa/clipagiqa/clipagiqa/clip"
	"github.com/clipagiqa/clipagiqa/clipagiqa/ipiqa"
	"github.com/clipagiqa/clipagiqa/internal/explainref"
	"github.com/clipagiqa/clipagiqa/internal/ipiqaref"
	"github.com/clipagiqa/clipagiqa/internal/reffix"
	"github.com/clipagiqa/clipagiqa/torch"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Score tolerances, as the models' own fixture tests use.
const (
	ipiqaScoreAtol = 2e-5
	agiqaScoreAtol = 1e-6
)

// OpenIPIQA on the fixture's official checkpoint scores each original image
// with its prompt as the official reload did, and its maps are the pools'
// softmax weights (rows sum to 1) on the 16×16 grid.
func TestIPIQAExplainsFixture(t *testing.T) {
	b, err := os.ReadFile(ipiqaref.Path("expected.json"))
	require.NoError(t, err)
	var f struct {
		Prompts    []struct{ Text string } `json:"prompts"`
		Checkpoint struct {
			Reload struct {
				Scores [][]float64 `json:"scores"`
			} `json:"reload"`
		} `json:"checkpoint"`
	}
	require.NoError(t, json.Unmarshal(b, &f))
	m, err := OpenIPIQA(ipiqaref.Path("tiny_clip_rn_fp16.pt"), ipiqaref.Path("checkpoint_best.pth"), Options{})
	require.NoError(t, err)
	defer m.Close()
	assert.True(t, m.NeedsPrompt())
	before := torch.LiveTensors()
	for _, k := range []int{0, 6} { // an upscaled RGB image, an RGBA one
		px, err := m.Preprocess(ipiqaref.Path(fmt.Sprintf("images/img_%d.png", k)))
		require.NoError(t, err)
		e, err := m.Explain(px, f.Prompts[k].Text)
		require.NoError(t, err)
		require.Len(t, e.Scores, 2)
		for j, s := range e.Scores {
			assert.InDelta(t, f.Checkpoint.Reload.Scores[k][j], s.Value, ipiqaScoreAtol, "image %d %s", k, s.Name)
		}
		assert.Equal(t, "quality", e.Scores[0].Name)
		assert.Equal(t, 512, e.Size)
		require.Len(t, e.Maps, 2)
		assert.Equal(t, []string{KindCross, KindVisual}, []string{e.Maps[0].Kind, e.Maps[1].Kind})
		for _, mp := range e.Maps {
			assert.Equal(t, 16, mp.Grid)
			require.Len(t, mp.Heads, 2)
			for _, h := range mp.Heads {
				require.Len(t, h, 257)
				sum := 0.0
				for _, v := range h {
					sum += float64(v)
				}
				assert.InDelta(t, 1, sum, 1e-5)
			}
		}
		require.NoError(t, e.check())
	}
	assert.Equal(t, before, torch.LiveTensors(), "Explain frees what it makes")
}

// FromIPIQA on the fixture's initial model (archive + init_new_params.pth)
// reproduces the python3-torch reference maps of image 3 (512×512, so the
// preprocessing changes nothing).
func TestIPIQAMapsMatchReference(t *testing.T) {
	exp, err := ipiqaref.Load()
	require.NoError(t, err)
	c, err := clip.Load(ipiqaref.Path("tiny_clip_rn_fp16.pt"), clip.Options{})
	require.NoError(t, err)
	im, err := ipiqa.New(c, ipiqa.Options{})
	if err != nil {
		c.Close()
	}
	require.NoError(t, err)
	defer im.Close()
	require.NoError(t, im.LoadState(ipiqaref.Path("init_new_params.pth")))
	x := FromIPIQA(im, 0)
	defer x.Close() // leaves im to the deferred im.Close
	const k = 3
	px, err := x.Preprocess(ipiqaref.Path(fmt.Sprintf("images/img_%d.png", k)))
	require.NoError(t, err)
	// Both trunks: the fused eval one (BatchNorm folded into the
	// convolutions, the scoring default) and the official op-by-op order.
	rn := c.Visual.(*clip.ModifiedResNet)
	for _, path := range []struct {
		name  string
		fused bool
		tol   float64
	}{{"op by op", false, explainref.Tolerance}, {"fused trunk", true, explainref.Tolerance}} {
		rn.SetFusedEval(path.fused)
		e, err := x.Explain(px, exp.Prompts[k].Text)
		require.NoError(t, err)
		for i, name := range []string{"ipiqa_text_attn", "ipiqa_visual_attn"} {
			shape, want, err := explainref.Weights(name)
			require.NoError(t, err)
			h, l := int(shape[1]), int(shape[2])
			var got []float32
			for _, row := range e.Maps[i].Heads {
				got = append(got, row...)
			}
			d, err := explainref.MaxAbs(got, want[k*h*l:(k+1)*h*l])
			require.NoError(t, err)
			t.Logf("%s, %s image %d: max abs err %.3g (tolerance %.3g)", path.name, name, k, d, path.tol)
			assert.LessOrEqual(t, d, path.tol, "%s, %s", path.name, name)
		}
	}
}

// OpenAGIQA on the official CLIP-AGIQA fixture scores as the original code
// and shows the class-token map of the reference.
func TestAGIQAExplainsFixture(t *testing.T) {
	exp, err := reffix.Load()
	require.NoError(t, err)
	_, want, err := explainref.Weights("vit_cls_attn")
	require.NoError(t, err)
	m, err := OpenAGIQA(reffix.Path("tiny_clip_vit_fp16.pt"), reffix.Dir(), Options{})
	require.NoError(t, err)
	defer m.Close()
	assert.False(t, m.NeedsPrompt())
	before := torch.LiveTensors()
	for _, k := range []int{1, 7} {
		px, err := m.Preprocess(reffix.Path(fmt.Sprintf("img_%d.png", k)))
		require.NoError(t, err)
		e, err := m.Explain(px, "ignored")
		require.NoError(t, err)
		require.Len(t, e.Scores, 1)
		assert.InDelta(t, exp.CLIPAGIQA.Scores[k], e.Scores[0].Value, agiqaScoreAtol, "image %d", k)
		require.Len(t, e.Maps, 1)
		mp := e.Maps[0]
		assert.Equal(t, KindClass, mp.Kind)
		assert.Equal(t, TokenClass, mp.Token0)
		assert.Equal(t, 7, mp.Grid)
		var got []float32
		for _, row := range mp.Heads {
			got = append(got, row...)
		}
		d, err := explainref.MaxAbs(got, want[k*3*50:(k+1)*3*50])
		require.NoError(t, err)
		t.Logf("cls attention image %d: max abs err %.3g (tolerance %.3g)", k, d, explainref.Tolerance)
		assert.LessOrEqual(t, d, explainref.Tolerance)
	}
	assert.Equal(t, before, torch.LiveTensors(), "Explain frees what it makes")
}

func TestOpenRefusesWrongBackbones(t *testing.T) {
	_, err := OpenAGIQA(ipiqaref.Path("tiny_clip_rn_fp16.pt"), reffix.Dir(), Options{})
	assert.ErrorContains(t, err, "is a ResNet")
	_, err = OpenIPIQA(reffix.Path("tiny_clip_vit.pt"), ipiqaref.Path("checkpoint_best.pth"), Options{})
	assert.ErrorContains(t, err, "IP-IQA needs a ResNet CLIP")
	_, err = OpenAGIQA(reffix.Path("tiny_clip_vit.pt"), "", Options{})
	assert.ErrorContains(t, err, "needs a checkpoint")
}

// Run records unreadable images and missing prompts as errors and goes on.
func TestRunKeepsGoing(t *testing.T) {
	m, err := OpenIPIQA(ipiqaref.Path("tiny_clip_rn_fp16.pt"), ipiqaref.Path("checkpoint_best.pth"), Options{})
	require.NoError(t, err)
	defer m.Close()
	dir := t.TempDir()
	w, err := NewWriter(dir, Header{Method: "ipiqa"}, RenderOptions{})
	require.NoError(t, err)
	bad := filepath.Join(dir, "bad.png")
	require.NoError(t, os.WriteFile(bad, []byte("not an image"), 0o644))
	inputs := []Input{
		{Image: ipiqaref.Path("images/img_0.png"), Prompt: "a cat", HasPrompt: true},
		{Image: ipiqaref.Path("images/img_1.png")},
		{Image: bad, HasPrompt: true},
		{Image: "gone.png", Err: "no such file"},
	}
	var calls []int
	failed, err := Run(m, w, inputs, func(done, total int) { calls = append(calls, done); assert.Equal(t, 4, total) })
	require.NoError(t, err)
	assert.Equal(t, 3, failed)
	assert.Equal(t, []int{1, 2, 3, 4}, calls)
	idx := w.Index()
	require.Len(t, idx.Images, 1)
	assert.Equal(t, "a cat", idx.Images[0].Prompt)
	require.Len(t, idx.Errors, 3)
	assert.Equal(t, ErrNoPrompt.Error(), idx.Errors[0].Error)
	assert.Contains(t, idx.Errors[1].Error, "bad.png")
	assert.Equal(t, "no such file", idx.Errors[2].Error)
}
