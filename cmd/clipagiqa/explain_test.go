package main

import (
	"encoding/csv"
	"encoding/json"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/clipagiqa/clipagiqa/clipagiqa/explain"
	"github.com/clipagiqa/clipagiqa/internal/ipiqaref"
	"github.com/clipagiqa/clipagiqa/internal/reffix"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func readExplainIndex(t *testing.T, dir string) explain.Index {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, explain.IndexJSON))
	require.NoError(t, err)
	var idx explain.Index
	require.NoError(t, json.Unmarshal(b, &idx))
	return idx
}

// explain --method ipiqa: prompts from a table (by the path relative to a
// directory argument, or the base name) or --prompt; an image without one
// is an error entry, and the exit status says so.
func TestExplainIPIQA(t *testing.T) {
	imgs := t.TempDir()
	for _, k := range []string{"0", "5"} {
		copyFile(t, ipiqaref.Path("images/img_"+k+".png"), filepath.Join(imgs, "sub", "img_"+k+".png"))
	}
	table := filepath.Join(t.TempDir(), "prompts.csv")
	require.NoError(t, os.WriteFile(table, []byte("image,prompt\nsub/img_0.png,a cat sitting on a red sofa\n"), 0o644))
	out := filepath.Join(t.TempDir(), "explained")
	stdout, stderr, err := run(t, "explain", "--method", "ipiqa", "--clip", ipiqaref.Path("tiny_clip_rn_fp16.pt"),
		"--checkpoint", ipiqaref.Path("checkpoint_best.pth"), "--prompts", table, "--out", out, "--format", "csv", imgs)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "1 image(s) failed")
	assert.Contains(t, stderr, "img_5.png: no prompt for this image")
	rows, err := csv.NewReader(strings.NewReader(stdout)).ReadAll()
	require.NoError(t, err)
	require.Len(t, rows, 3) // header, cross, visual
	assert.Equal(t, []string{"image", "score", "kind", "mean_file", "heads_file"}, rows[0])
	assert.Equal(t, "cross", rows[1][2])
	assert.Equal(t, "visual", rows[2][2])

	idx := readExplainIndex(t, out)
	require.Len(t, idx.Images, 1)
	assert.Equal(t, "a cat sitting on a red sofa", idx.Images[0].Prompt)
	require.Len(t, idx.Errors, 1)
	for _, m := range idx.Images[0].Maps {
		for _, name := range []string{m.MeanFile, m.HeadsFile} {
			f, err := os.Open(filepath.Join(out, name))
			require.NoError(t, err)
			img, err := png.Decode(f)
			f.Close()
			require.NoError(t, err)
			assert.GreaterOrEqual(t, img.Bounds().Dx(), 2*512, name)
		}
	}

	// --prompt covers every image; a rerun into the same directory gives
	// the same bytes.
	again := func() []byte {
		_, _, err := run(t, "explain", "--clip", ipiqaref.Path("tiny_clip_rn_fp16.pt"),
			"--checkpoint", ipiqaref.Path("checkpoint_best.pth"), "--prompt", "man lost in space", "--out", out, "--format", "json",
			filepath.Join(imgs, "sub", "img_5.png"))
		require.NoError(t, err)
		b, err := os.ReadFile(filepath.Join(out, "000_img_5_cross_mean.png"))
		require.NoError(t, err)
		return b
	}
	assert.Equal(t, again(), again())
	idx = readExplainIndex(t, out)
	require.Len(t, idx.Images, 1)
	assert.Equal(t, "man lost in space", idx.Images[0].Prompt)
	assert.Empty(t, idx.Errors)
}

func TestExplainAGIQA(t *testing.T) {
	out := t.TempDir()
	stdout, _, err := run(t, "explain", "--method", "agiqa", "--clip", tinyCLIPPath, "--checkpoint", reffix.Dir(),
		"--colormap", "viridis", "--out", out, fixtureImage(1))
	require.NoError(t, err)
	assert.Contains(t, stdout, "000_img_1_cls_mean.png")
	assert.Contains(t, stdout, "1 image(s) explained, 0 error(s)")
	idx := readExplainIndex(t, out)
	require.Len(t, idx.Images, 1)
	assert.Equal(t, "viridis", idx.Colormap)
	exp, err := reffix.Load()
	require.NoError(t, err)
	assert.InDelta(t, exp.CLIPAGIQA.Scores[1], idx.Images[0].Score, 1e-6)
}

func TestExplainErrors(t *testing.T) {
	rn, ck := ipiqaref.Path("tiny_clip_rn_fp16.pt"), ipiqaref.Path("checkpoint_best.pth")
	out := t.TempDir()
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--clip", rn, "--checkpoint", ck, fixtureImage(0)}, "--out DIR is required"},
		{[]string{"--clip", rn, "--checkpoint", ck, "--out", out}, "no images"},
		{[]string{"--method", "clipiqa", "--clip", rn, "--checkpoint", ck, "--out", out, fixtureImage(0)}, `--method "clipiqa"`},
		{[]string{"--clip", rn, "--checkpoint", ck, "--out", out, "--alpha", "0", fixtureImage(0)}, "--alpha 0"},
		{[]string{"--clip", rn, "--checkpoint", ck, "--out", out, "--colormap", "hot", fixtureImage(0)}, "--colormap"},
		{[]string{"--clip", tinyCLIPPath, "--checkpoint", ck, "--out", out, "--prompt", "x", fixtureImage(0)}, "IP-IQA needs a ResNet CLIP"},
		{[]string{"--method", "agiqa", "--clip", rn, "--checkpoint", reffix.Dir(), "--out", out, fixtureImage(0)}, "is a ResNet"},
		{[]string{"--method", "agiqa", "--clip", tinyCLIPPath, "--checkpoint", reffix.Dir(), "--prompt", "x", "--out", out, fixtureImage(0)}, "are for methods scored with the image's prompt"},
		{[]string{"--clip", rn, "--checkpoint", ck, "--prompts", filepath.Join(out, "none.csv"), "--out", out, fixtureImage(0)}, "--prompts"},
	} {
		_, _, err := run(t, append([]string{"explain"}, c.args...)...)
		require.Error(t, err, c.want)
		assert.Contains(t, err.Error(), c.want)
	}
}
