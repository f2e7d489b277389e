package main

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/clipagiqa/clipagiqa/clipagiqa/metrics"
	"github.com/clipagiqa/clipagiqa/data"
	"github.com/clipagiqa/clipagiqa/internal/ipiqaref"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A tiny AGIQA-3K-shaped table over the IP-IQA fixture's 8 images (prompt k
// for image k, raw as the fixture has them, one all blanks); the MOS values
// are made up.
var (
	evalFixtureQuality   = []float64{3.1, 1.2, 4.5, 2.2, 3.9, 1.8, 2.7, 4.1}
	evalFixtureAlignment = []float64{2.0, 3.5, 1.1, 4.2, 2.9, 3.3, 1.7, 4.8}
)

// The metrics of the official reload's scores (expected.json
// checkpoint.reload.scores) against those MOS values, computed with scipy
// 1.10.1 (stats.pearsonr, spearmanr, kendalltau) and numpy RMSE.
var evalFixtureWant = map[string]metrics.Report{
	"quality":   {N: 8, PLCC: 0.552550599380449, SRCC: 0.7619047619047621, KRCC: 0.7142857142857142, RMSE: 3.728480990073208},
	"alignment": {N: 8, PLCC: 0.6366060478846756, SRCC: 0.5714285714285715, KRCC: 0.4999999999999999, RMSE: 3.488929974050289},
}

// writeAGIQA3KTable writes data.csv with AGIQA-3K's columns for the images
// named by idx.
func writeAGIQA3KTable(t *testing.T, prompts []string, idx ...int) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "data.csv")
	f, err := os.Create(p)
	require.NoError(t, err)
	w := csv.NewWriter(f)
	require.NoError(t, w.Write([]string{"name", "prompt", "adj1", "adj2", "style", "mos_quality", "std_quality", "mos_align", "std_align"}))
	for _, k := range idx {
		g := func(x float64) string { return strconv.FormatFloat(x, 'g', -1, 64) }
		require.NoError(t, w.Write([]string{fmt.Sprintf("img_%d.png", k), prompts[k], "", "", "",
			g(evalFixtureQuality[k]), "0.5", g(evalFixtureAlignment[k]), "0.5"}))
	}
	w.Flush()
	require.NoError(t, w.Error())
	require.NoError(t, f.Close())
	return p
}

func assertReport(t *testing.T, want, got metrics.Report, what string) {
	t.Helper()
	assert.Equal(t, want.N, got.N, what)
	// Ranks are exact (the closest scores are 4.7e-3 apart, the ported
	// model within 5e-5 of the official); PLCC and RMSE move with the
	// scores' last digits.
	assert.InDelta(t, want.SRCC, got.SRCC, 1e-12, what+" SRCC")
	assert.InDelta(t, want.KRCC, got.KRCC, 1e-12, what+" KRCC")
	assert.InDelta(t, want.PLCC, got.PLCC, 1e-4, what+" PLCC")
	assert.InDelta(t, want.RMSE, got.RMSE, 1e-4, what+" RMSE")
}

// TestEvalIPIQADualMetrics: eval --method ipiqa on an AGIQA-3K table reports
// quality and alignment separately (JSON, CSV, table, predictions CSV),
// whatever --target chose.
func TestEvalIPIQADualMetrics(t *testing.T) {
	prompts, want := ipiqaFixture(t)
	table := writeAGIQA3KTable(t, prompts, 0, 1, 2, 3, 4, 5, 6, 7)
	args := []string{"eval", "--method", "ipiqa", "--clip", ipiqaCLIP, "--checkpoint", ipiqaCheckpoint,
		"--dataset", "agiqa3k", "--root", ipiqaref.Path("images"), "--table", table, "--batch-size", "3"}
	preds := filepath.Join(t.TempDir(), "preds.csv")
	out, stderr, err := run(t, append(args, "--format", "json", "--target", "alignment", "--predictions", preds)...)
	require.NoError(t, err, stderr)
	var got evalOutput
	require.NoError(t, json.Unmarshal([]byte(out), &got))
	assert.Equal(t, "ipiqa", got.Method)
	assert.Equal(t, 8, got.Images)
	assert.Empty(t, got.Errors)
	require.Len(t, got.Outputs, 2)
	for i, name := range []string{"quality", "alignment"} {
		assert.Equal(t, name, got.Outputs[i].Output)
		assertReport(t, evalFixtureWant[name], got.Outputs[i].Report, name)
	}
	assert.Equal(t, got.Outputs[0].Report, got.Metrics, "metrics is the first output's")

	// Per image: both ratings and both scores.
	rows, err := csv.NewReader(strings.NewReader(string(must(os.ReadFile(preds))))).ReadAll()
	require.NoError(t, err)
	require.Equal(t, []string{"image", "mos", "score", "alignment_mos", "alignment", "error"}, rows[0])
	require.Len(t, rows, 9)
	for k, r := range rows[1:] {
		assert.Equal(t, fmt.Sprintf("img_%d.png", k), r[0])
		assert.Equal(t, strconv.FormatFloat(evalFixtureQuality[k], 'g', -1, 64), r[1])
		assert.Equal(t, strconv.FormatFloat(evalFixtureAlignment[k], 'g', -1, 64), r[3])
		for j, col := range []int{2, 4} {
			v, err := strconv.ParseFloat(r[col], 64)
			require.NoError(t, err)
			assert.InDelta(t, want[k][j], v, ipiqaScoreAtol, "%s %s", r[0], rows[0][col])
		}
	}

	out, stderr, err = run(t, append(args, "--format", "csv")...)
	require.NoError(t, err, stderr)
	rows, err = csv.NewReader(strings.NewReader(out)).ReadAll()
	require.NoError(t, err)
	require.Equal(t, []string{"metric", "quality", "alignment"}, rows[0])
	assert.Equal(t, "srcc", rows[4][0])
	for j, name := range []string{"quality", "alignment"} {
		v, err := strconv.ParseFloat(rows[4][j+1], 64)
		require.NoError(t, err)
		assert.InDelta(t, evalFixtureWant[name].SRCC, v, 1e-12)
	}

	out, stderr, err = run(t, args...)
	require.NoError(t, err, stderr)
	assert.Contains(t, out, "ipiqa, checkpoint "+ipiqaCheckpoint+" on agiqa3k-quality: 8 of 8 images")
	assert.Regexp(t, `metric +quality +alignment`, out)
	assert.Regexp(t, fmt.Sprintf(`SRCC +%.4f +%.4f`, evalFixtureWant["quality"].SRCC, evalFixtureWant["alignment"].SRCC), out)
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// TestEvalIPIQABadInputs: a prompt table missing images makes those images
// errors (the rest are scored and reported); a ViT CLIP and a checkpoint of
// another CLIP are clear errors.
func TestEvalIPIQABadInputs(t *testing.T) {
	prompts, _ := ipiqaFixture(t)
	table := writeAGIQA3KTable(t, prompts, 0, 1, 2, 3, 4, 5, 6, 7)
	base := []string{"eval", "--method", "ipiqa", "--checkpoint", ipiqaCheckpoint,
		"--dataset", "agiqa3k", "--root", ipiqaref.Path("images"), "--table", table}

	promptTable := writePromptTable(t, prompts, 0, 1, 2, 3, 4, 7)
	out, stderr, err := run(t, append(base, "--clip", ipiqaCLIP, "--prompts", promptTable, "--format", "json")...)
	require.ErrorContains(t, err, "2 image(s) could not be scored")
	var got evalOutput
	require.NoError(t, json.Unmarshal([]byte(out), &got))
	require.Len(t, got.Errors, 2)
	for i, k := range []int{5, 6} {
		assert.Equal(t, fmt.Sprintf("img_%d.png", k), got.Errors[i].Image)
		assert.Equal(t, "no prompt for this image in "+promptTable, got.Errors[i].Error)
	}
	assert.Contains(t, stderr, "img_5.png: no prompt for this image in")
	require.Len(t, got.Outputs, 2)
	assert.Equal(t, 6, got.Outputs[0].N)
	assert.Equal(t, 6, got.Outputs[1].N)

	// The dataset table without a prompt for an image: the same, per image.
	noPrompt := writeAGIQA3KTable(t, append(append([]string{}, prompts[:7]...), ""), 0, 1, 2, 3, 4, 5, 6, 7)
	_, stderr, err = run(t, "eval", "--method", "ipiqa", "--checkpoint", ipiqaCheckpoint, "--clip", ipiqaCLIP,
		"--dataset", "agiqa3k", "--root", ipiqaref.Path("images"), "--table", noPrompt)
	require.ErrorContains(t, err, "1 image(s) could not be scored")
	assert.Contains(t, stderr, "img_7.png: no prompt for this image in the agiqa3k-quality table")

	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"ViT CLIP", []string{"--clip", tinyCLIPPath}, "needs a ResNet CLIP"},
		{"checkpoint of another CLIP", []string{"--clip", "../../testdata/clipgen/tiny-rn/clip.pt"}, "does not fit CLIP"},
		{"--pair", []string{"--clip", ipiqaCLIP, "--pair", "a|b"}, "--pair is for --method clipiqa"},
		{"absent prompt table", []string{"--clip", ipiqaCLIP, "--prompts", "nope.csv"}, "--prompts"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := run(t, append(base, tc.args...)...)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
	_, _, err = run(t, "eval", "--method", "ipiqa", "--clip", ipiqaCLIP, "--dataset", "agiqa3k", "--root", ipiqaref.Path("images"), "--table", table)
	assert.ErrorContains(t, err, "needs a checkpoint")
	_, _, err = run(t, "eval", "--method", "clipiqa", "--clip", tinyCLIPPath, "--prompts", promptTable, "--dataset", "agiqa3k", "--root", ipiqaref.Path("images"), "--table", table)
	assert.ErrorContains(t, err, "does not score with prompts")
}

// agiqa1kOfficialTable writes the fixture's eight images under AGIQA-1K
// names and a table in the official layout (AIGC_MOS_Zscore.csv) whose last
// row repeats dreamStudio_8_9_1_1.jpg; it returns the image,prompt rows too.
func agiqa1kOfficialTable(t *testing.T) (root, table string, names []string, promptRows string) {
	t.Helper()
	root = t.TempDir()
	names = []string{"deepai_0_0_0_0.jpg", "deepai_0_0_0_1.jpg", "deepai_3_7_1_0.jpg", "dreamStudio_6_2_0_1.jpg",
		"dreamStudio_8_9_1_1.jpg", "deepai_9_6_0_1.jpg", "deepai_11_14_1_1.jpg", "dreamStudio_0_0_1_0.jpg"}
	var b strings.Builder
	b.WriteString("Image,Prompt,MOS\n")
	var prompts strings.Builder
	prompts.WriteString("image,prompt\n")
	for k, n := range names {
		img, err := os.ReadFile(ipiqaref.Path(fmt.Sprintf("images/img_%d.png", k)))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(root, n), img, 0o644))
		p, err := data.AGIQA1KPrompt(n)
		require.NoError(t, err)
		fmt.Fprintf(&b, "%s,\"%s\",%g\n", n, p, evalFixtureQuality[k])
		fmt.Fprintf(&prompts, "%s,\"%s\"\n", n, p)
	}
	fmt.Fprintf(&b, "dreamStudio_8_9_1_1.jpg,\"%s\",9.5\n", must(data.AGIQA1KPrompt("dreamStudio_8_9_1_1.jpg")))
	table = filepath.Join(root, data.AGIQA1KPromptTable)
	require.NoError(t, os.WriteFile(table, []byte(b.String()), 0o644))
	return root, table, names, prompts.String()
}

// eval --method ipiqa on an AGIQA-1K table in the official layout
// (AIGC_MOS_Zscore.csv): prompts from its Prompt column, the repeated row
// kept once and noted, and a 2-output checkpoint judged on quality only
// (AGIQA-1K rates no alignment). The scores are predict's with the same
// prompts.
func TestEvalIPIQAAGIQA1KPromptTable(t *testing.T) {
	root, table, names, promptRows := agiqa1kOfficialTable(t)

	out, stderr, err := run(t, "eval", "--method", "ipiqa", "--clip", ipiqaCLIP, "--checkpoint", ipiqaCheckpoint,
		"--dataset", "agiqa1k", "--root", root, "--table", table, "--batch-size", "1", "--format", "json",
		"--predictions", filepath.Join(root, "preds.csv"))
	require.NoError(t, err, stderr)
	assert.Contains(t, stderr, "note: "+table+":10: dreamStudio_8_9_1_1.jpg repeats line 6")
	var got evalOutput
	require.NoError(t, json.Unmarshal([]byte(out), &got))
	assert.Equal(t, 8, got.Images)
	require.Len(t, got.Notes, 1)
	require.Len(t, got.Outputs, 1, "no alignment MOS in AGIQA-1K")
	assert.Equal(t, "quality", got.Outputs[0].Output)
	assert.Equal(t, 8, got.Outputs[0].N)

	promptTable := filepath.Join(t.TempDir(), "prompts.csv")
	require.NoError(t, os.WriteFile(promptTable, []byte(promptRows), 0o644))
	pout, stderr, err := run(t, "predict", "--method", "ipiqa", "--clip", ipiqaCLIP, "--checkpoint", ipiqaCheckpoint,
		"--prompts", promptTable, "--batch-size", "1", "--format", "csv", root)
	require.NoError(t, err, stderr)
	byImage := map[string]string{}
	rows, err := csv.NewReader(strings.NewReader(pout)).ReadAll()
	require.NoError(t, err)
	for _, r := range rows[1:] {
		byImage[filepath.Base(r[0])] = r[1]
	}
	erows, err := csv.NewReader(strings.NewReader(string(must(os.ReadFile(filepath.Join(root, "preds.csv")))))).ReadAll()
	require.NoError(t, err)
	require.Len(t, erows, 9)
	for k, r := range erows[1:] {
		assert.Equal(t, names[k], r[0])
		assert.Equal(t, byImage[names[k]], r[2], "eval and predict score %s alike", names[k])
		assert.Equal(t, strconv.FormatFloat(evalFixtureQuality[k], 'g', -1, 64), r[1], "the first of the repeated rows is kept")
	}
}

// train says what loading the dataset left out, as eval does: the repeated
// AGIQA-1K row is named on stderr.
func TestTrainPrintsDatasetNotes(t *testing.T) {
	root, table, _, _ := agiqa1kOfficialTable(t)
	_, stderr, err := run(t, "train", "--clip", tinyCLIPPath, "--dataset", "agiqa1k", "--root", root, "--table", table,
		"--protocol", "random", "--test-fraction", "0.25", "--val-fraction", "0.34", "--epochs", "1", "--cache-dir", "-", "--out", t.TempDir())
	require.NoError(t, err, stderr)
	assert.Contains(t, stderr, "clipagiqa train: note: "+table+":10: dreamStudio_8_9_1_1.jpg repeats line 6")

	_, stderr, err = run(t, "train", "--method", "ipiqa", "--clip", ipiqaCLIP, "--dataset", "agiqa1k", "--root", root, "--table", table,
		"--protocol", "random", "--test-fraction", "0.25", "--val-fraction", "0.34", "--epochs", "1", "--input-resolution", "64",
		"--batch-size", "4", "--out", t.TempDir())
	require.NoError(t, err, stderr)
	assert.Contains(t, stderr, "clipagiqa train: note: "+table+":10: dreamStudio_8_9_1_1.jpg repeats line 6")
}
