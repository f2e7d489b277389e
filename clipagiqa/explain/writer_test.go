package explain

import (
	"encoding/json"
	"errors"
	"image"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestWriterFilesAndIndex(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "out", "sub")
	w, err := NewWriter(dir, Header{Method: "ipiqa", CLIP: "rn.pt", Checkpoint: "ck.pth"}, RenderOptions{})
	require.NoError(t, err)
	e := testExplanation(2)
	require.NoError(t, w.Add(e))
	require.NoError(t, w.AddError("broken.png", errors.New("cannot decode")))
	e2 := testExplanation(2)
	e2.Image = "other/a b.png" // same base name: the number keeps files apart
	require.NoError(t, w.Add(e2))

	b, err := os.ReadFile(filepath.Join(dir, IndexJSON))
	require.NoError(t, err)
	var idx Index
	require.NoError(t, json.Unmarshal(b, &idx))
	assert.Equal(t, "ipiqa", idx.Method)
	assert.Equal(t, "jet", idx.Colormap)
	assert.Equal(t, 0.5, idx.Alpha)
	require.Len(t, idx.Images, 2)
	require.Len(t, idx.Errors, 1)
	assert.Equal(t, IndexError{"broken.png", "cannot decode"}, idx.Errors[0])
	first := idx.Images[0]
	assert.Equal(t, "dir/a b.png", first.Image)
	assert.Equal(t, 3.25, first.Score)
	assert.Equal(t, map[string]float64{"quality": 3.25, "alignment": 2.5}, first.Scores)
	require.Len(t, first.Maps, 1)
	m := first.Maps[0]
	assert.Equal(t, "000_a_b_cross_mean.png", m.MeanFile)
	assert.Equal(t, "000_a_b_cross_heads.png", m.HeadsFile)
	assert.Equal(t, "002_a_b_cross_mean.png", idx.Images[1].Maps[0].MeanFile)
	assert.Equal(t, 2, m.Heads)
	assert.InDelta(t, 0.2, m.Token0Weight, 1e-7)
	assert.InDelta(t, (0.2+0.6/15)/2, m.MaxGridWeight, 1e-7) // each head peaks at its own cell

	for _, name := range []string{m.MeanFile, m.HeadsFile} {
		f, err := os.Open(filepath.Join(dir, name))
		require.NoError(t, err)
		img, err := png.Decode(f)
		f.Close()
		require.NoError(t, err, name)
		assert.Greater(t, img.Bounds().Dx(), 2*e.Size)
	}
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	for _, ent := range ents {
		assert.False(t, strings.Contains(ent.Name(), ".tmp-"), "leftover %s", ent.Name())
	}
	assert.Len(t, ents, 2*2+2) // two images × two panels, two index files

	page, err := os.ReadFile(filepath.Join(dir, IndexHTML))
	require.NoError(t, err)
	html := string(page)
	assert.Contains(t, html, `src="000_a_b_cross_mean.png"`)
	assert.Contains(t, html, "a &lt;b&gt; &amp; c", "prompts are escaped")
	assert.Contains(t, html, "broken.png: cannot decode")
}

func TestWriterRefusesBadMaps(t *testing.T) {
	w, err := NewWriter(t.TempDir(), Header{}, RenderOptions{})
	require.NoError(t, err)
	e := testExplanation(1)
	e.Maps[0].Heads[0] = e.Maps[0].Heads[0][:5]
	assert.ErrorContains(t, w.Add(e), "has 5 weights, want 1+4²")
	e = testExplanation(1)
	e.Pixels = e.Pixels[:7]
	assert.ErrorContains(t, w.Add(e), "7 pixel values")
	_, err = NewWriter(t.TempDir(), Header{}, RenderOptions{Alpha: 2})
	assert.ErrorContains(t, err, "alpha")
}

func TestStem(t *testing.T) {
	assert.Equal(t, "007_x_y", stem(7, "/a/b/x y.jpeg"))
	assert.Equal(t, "012_", stem(12, "../.png"))
	assert.Len(t, stem(1, strings.Repeat("a", 300)+".png"), 4+60)
}

func TestInputImageBounds(t *testing.T) {
	img, err := InputImage(make([]float32, 3*4), 2, [3]float32{}, [3]float32{1, 1, 1})
	require.NoError(t, err)
	assert.Equal(t, image.Rect(0, 0, 2, 2), img.Bounds())
}
