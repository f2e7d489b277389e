package train

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/clipagiqa/clipagiqa/clipagiqa/metrics"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// An undefined metric (SRCC of constant predictions on a tiny part) is
// written as 0 and named in the part's Error instead of failing the run;
// the other parts and values are kept as they are.
func TestUndefinedMetricsAreWrittenAndNamed(t *testing.T) {
	h := EpochReport{Epoch: 1, LR: 1e-3, TrainLoss: 0.5, Score: math.NaN(), Parts: map[string]PartReport{
		"val":  {Outputs: map[string]metrics.Report{"quality": {N: 2, PLCC: math.NaN(), SRCC: math.NaN(), KRCC: math.Inf(1), RMSE: 0.3}}},
		"test": {Outputs: map[string]metrics.Report{"quality": {N: 9, PLCC: 0.7, SRCC: 0.6, KRCC: 0.5, RMSE: 0.2}}},
	}}
	out := t.TempDir()
	require.NoError(t, writeMetrics(out, []string{"val", "test"}, []string{"quality"}, []EpochReport{h}))
	got, err := ReadMetrics(filepath.Join(out, MetricsJSON))
	require.NoError(t, err)
	require.Len(t, got, 1)
	val := got[0].Parts["val"]
	assert.Equal(t, "undefined (written as 0): quality krcc, quality plcc, quality srcc", val.Error)
	assert.Equal(t, 0.0, val.Outputs["quality"].SRCC)
	assert.Equal(t, 0.3, val.Outputs["quality"].RMSE)
	assert.Equal(t, 0.0, got[0].Score)
	assert.Equal(t, metrics.Report{N: 9, PLCC: 0.7, SRCC: 0.6, KRCC: 0.5, RMSE: 0.2}, got[0].Parts["test"].Outputs["quality"])
	assert.Empty(t, got[0].Parts["test"].Error)
	assert.True(t, math.IsNaN(h.Parts["val"].Outputs["quality"].SRCC), "the caller's report is not changed")

	csv, err := os.ReadFile(filepath.Join(out, MetricsCSV))
	require.NoError(t, err)
	assert.Contains(t, string(csv), "NaN", "the CSV keeps NaN as written by strconv")

	// A pointer to a report (as in summaries) encodes the same way.
	_, err = json.Marshal(struct{ Best *EpochReport }{&h})
	assert.NoError(t, err)

	// SRCC undefined in every epoch: no metrics plot, and no error.
	require.NoError(t, writePlots(out, []string{"val"}, []string{"quality"}, []EpochReport{h}))
	assert.FileExists(t, filepath.Join(out, LossPlot))
	assert.NoFileExists(t, filepath.Join(out, MetricsPlot))
}
