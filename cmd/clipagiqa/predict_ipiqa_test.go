package main

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/clipagiqa/clipagiqa/internal/ipiqaref"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// ipiqaScoreAtol is the fixture README's tolerance for the scores after the
// training steps (checkpoint_best.pth's weights).
const ipiqaScoreAtol = 5e-5

var (
	ipiqaCLIP       = ipiqaref.Path("tiny_clip_rn_fp16.pt")
	ipiqaCheckpoint = ipiqaref.Path("checkpoint_best.pth")
)

// ipiqaFixture returns the fixture's prompts (image k has prompt k) and the
// official reload's scores [quality, alignment] per image.
func ipiqaFixture(t *testing.T) (prompts []string, want [][]float64) {
	t.Helper()
	raw, err := os.ReadFile(ipiqaref.Path("expected.json"))
	require.NoError(t, err)
	var f struct {
		Prompts []struct {
			Text string `json:"text"`
		} `json:"prompts"`
		Checkpoint struct {
			Reload struct {
				Scores [][]float64 `json:"scores"`
			} `json:"reload"`
		} `json:"checkpoint"`
	}
	require.NoError(t, json.Unmarshal(raw, &f))
	for _, p := range f.Prompts {
		prompts = append(prompts, p.Text)
	}
	require.Len(t, prompts, ipiqaref.Images)
	require.Len(t, f.Checkpoint.Reload.Scores, ipiqaref.Images)
	return prompts, f.Checkpoint.Reload.Scores
}

// writePromptTable writes image,prompt rows for the fixture images named by
// idx (names relative to the images directory).
func writePromptTable(t *testing.T, prompts []string, idx ...int) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "prompts.csv")
	f, err := os.Create(p)
	require.NoError(t, err)
	w := csv.NewWriter(f)
	require.NoError(t, w.Write([]string{"image", "prompt"}))
	for _, k := range idx {
		require.NoError(t, w.Write([]string{fmt.Sprintf("img_%d.png", k), prompts[k]}))
	}
	w.Flush()
	require.NoError(t, w.Error())
	require.NoError(t, f.Close())
	return p
}

// TestPredictIPIQAReproducesFixtureScores: predict --method ipiqa on the
// official checkpoint_best.pth and the fixture's original images, prompts
// from a table, gives the official reload's quality and alignment (JSON and
// CSV).
func TestPredictIPIQAReproducesFixtureScores(t *testing.T) {
	prompts, want := ipiqaFixture(t)
	table := writePromptTable(t, prompts, 0, 1, 2, 3, 4, 5, 6, 7)
	dir := ipiqaref.Path("images")
	out, stderr, err := run(t, "predict", "--clip", ipiqaCLIP, "--method", "ipiqa", "--checkpoint", ipiqaCheckpoint,
		"--prompts", table, "--batch-size", "3", dir)
	require.NoError(t, err, stderr)
	var got predictOutput
	require.NoError(t, json.Unmarshal([]byte(out), &got))
	require.Len(t, got.Results, ipiqaref.Images)
	assert.Equal(t, "ipiqa", got.Model.Method)
	worst := 0.0
	for k, r := range got.Results {
		assert.Equal(t, filepath.Join(dir, fmt.Sprintf("img_%d.png", k)), r.Image)
		require.NotNil(t, r.Alignment, r.Image)
		worst = math.Max(worst, math.Max(math.Abs(r.Score-want[k][0]), math.Abs(*r.Alignment-want[k][1])))
	}
	t.Logf("max abs error %.2g (tolerance %g)", worst, ipiqaScoreAtol)
	assert.LessOrEqual(t, worst, ipiqaScoreAtol)

	// CSV, one file given with --prompt: the same quality and alignment.
	out, stderr, err = run(t, "predict", "--clip", ipiqaCLIP, "--method", "ipiqa", "--checkpoint", ipiqaCheckpoint,
		"--prompt", prompts[2], "--format", "csv", filepath.Join(dir, "img_2.png"))
	require.NoError(t, err, stderr)
	rows, err := csv.NewReader(strings.NewReader(out)).ReadAll()
	require.NoError(t, err)
	require.Equal(t, []string{"image", "score", "alignment"}, rows[0])
	require.Len(t, rows, 2)
	for j := range 2 {
		v, err := strconv.ParseFloat(rows[1][j+1], 64)
		require.NoError(t, err)
		assert.InDelta(t, want[2][j], v, ipiqaScoreAtol, rows[0][j+1])
	}
}

// TestPredictIPIQABadInputs: every misuse is a clear error, and an image
// without a prompt in the table fails alone.
func TestPredictIPIQABadInputs(t *testing.T) {
	prompts, want := ipiqaFixture(t)
	dir := ipiqaref.Path("images")

	// The table lacks img_5 and img_6: those two are errors, the rest score.
	table := writePromptTable(t, prompts, 0, 1, 2, 3, 4, 7)
	out, stderr, err := run(t, "predict", "--clip", ipiqaCLIP, "--method", "ipiqa", "--checkpoint", ipiqaCheckpoint,
		"--prompts", table, dir)
	require.ErrorContains(t, err, "2 input(s) failed")
	var got predictOutput
	require.NoError(t, json.Unmarshal([]byte(out), &got))
	require.Len(t, got.Results, 6)
	require.Len(t, got.Errors, 2)
	for i, k := range []int{5, 6} {
		assert.Equal(t, filepath.Join(dir, fmt.Sprintf("img_%d.png", k)), got.Errors[i].Image)
		assert.Contains(t, got.Errors[i].Error, "no prompt for this image in "+table)
	}
	assert.Contains(t, stderr, "img_5.png: no prompt")
	assert.InDelta(t, want[7][0], got.Results[5].Score, ipiqaScoreAtol)

	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no prompts", []string{"--clip", ipiqaCLIP, "--checkpoint", ipiqaCheckpoint}, "give --prompts TABLE (CSV image,prompt) or --prompt TEXT"},
		{"both prompt flags", []string{"--clip", ipiqaCLIP, "--checkpoint", ipiqaCheckpoint, "--prompt", "x", "--prompts", table}, "not both"},
		{"empty prompt", []string{"--clip", ipiqaCLIP, "--checkpoint", ipiqaCheckpoint, "--prompt", ""}, "--prompt is empty"},
		{"ViT CLIP", []string{"--clip", tinyCLIPPath, "--checkpoint", ipiqaCheckpoint, "--prompt", "x"}, "needs a ResNet CLIP"},
		{"checkpoint of another CLIP", []string{"--clip", "../../testdata/clipgen/tiny-rn/clip.pt", "--checkpoint", ipiqaCheckpoint, "--prompt", "x"}, "does not fit CLIP"},
		{"no checkpoint", []string{"--clip", ipiqaCLIP, "--prompt", "x"}, "needs a checkpoint"},
		{"prompt table without prompts", []string{"--clip", ipiqaCLIP, "--checkpoint", ipiqaCheckpoint, "--prompts", ipiqaCheckpoint}, "--prompts"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"predict", "--method", "ipiqa"}, tc.args...)
			_, _, err := run(t, append(args, dir)...)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}
