package train

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/clipagiqa/clipagiqa/clipagiqa/metrics"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// An epoch whose selected part could not be scored (a tiny validation part
// with constant predictions) has no selection value: it is written as
// "score": null, read back as NaN, and neither metrics.jsonl, a summary
// holding the report nor the plots fail on it.
func TestEpochWithoutSelectionValueIsWritten(t *testing.T) {
	test := metrics.Report{N: 9, PLCC: 0.7, SRCC: 0.6, KRCC: 0.5, RMSE: 0.2}
	h := EpochReport{Epoch: 1, LR: 1e-3, TrainLoss: 0.5, Score: math.NaN(), Parts: map[string]PartReport{
		"val":  {Error: "metrics: constant predictions"},
		"test": {Outputs: map[string]metrics.Report{"quality": test}},
	}}
	out := t.TempDir()
	require.NoError(t, writeMetrics(out, []string{"val", "test"}, []string{"quality"}, []EpochReport{h}))
	line, err := os.ReadFile(filepath.Join(out, MetricsJSON))
	require.NoError(t, err)
	assert.Contains(t, string(line), `"score":null`)
	assert.Equal(t, 1, strings.Count(string(line), `"score"`), "one score field, not the embedded one too")

	got, err := ReadMetrics(filepath.Join(out, MetricsJSON))
	require.NoError(t, err)
	require.Len(t, got, 1)
	assert.True(t, math.IsNaN(got[0].Score))
	assert.Equal(t, "metrics: constant predictions", got[0].Parts["val"].Error)
	assert.Equal(t, test, got[0].Parts["test"].Outputs["quality"])
	assert.Equal(t, 0.5, got[0].TrainLoss)

	// A finite score round-trips as itself.
	h2 := h
	h2.Score = 0.8125
	b, err := json.Marshal(struct{ Best *EpochReport }{&h2}) // as in IP-IQA's summary.json
	require.NoError(t, err)
	var back struct{ Best *EpochReport }
	require.NoError(t, json.Unmarshal(b, &back))
	assert.Equal(t, 0.8125, back.Best.Score)

	csv, err := os.ReadFile(filepath.Join(out, MetricsCSV))
	require.NoError(t, err)
	assert.Contains(t, string(csv), "NaN", "metrics.csv keeps NaN as strconv writes it")

	// The validation part unscored in every epoch: no metrics plot for it,
	// and no error; the test part is still drawn.
	require.NoError(t, writePlots(out, []string{"val"}, []string{"quality"}, []EpochReport{h}))
	assert.FileExists(t, filepath.Join(out, LossPlot))
	assert.NoFileExists(t, filepath.Join(out, MetricsPlot))
	require.NoError(t, writePlots(out, []string{"val", "test"}, []string{"quality"}, []EpochReport{h}))
	assert.FileExists(t, filepath.Join(out, MetricsPlot))
}
