package serve

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clipagiqa/clipagiqa/clipagiqa"
	"github.com/clipagiqa/clipagiqa/internal/reffix"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestPercentile(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		out := make([]time.Duration, len(v))
		for i, x := range v {
			out[i] = time.Duration(x) * time.Millisecond
		}
		return out
	}
	// Nearest rank: the ceil(p·n)-th smallest value.
	tests := []struct {
		values []time.Duration
		p      float64
		want   time.Duration
	}{
		{nil, 0.5, 0},
		{ms(7), 0.99, 7 * time.Millisecond},
		{ms(1, 2, 3, 4), 0.5, 2 * time.Millisecond},
		{ms(1, 2, 3, 4, 5), 0.5, 3 * time.Millisecond},
		{ms(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 0.99, 10 * time.Millisecond},
		{ms(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 0.9, 9 * time.Millisecond},
	}
	for _, tc := range tests {
		assert.Equal(t, tc.want, percentile(tc.values, tc.p), "%v p%v", tc.values, tc.p)
	}
}

// A short run of the whole bench-serve path; the numbers are not checked,
// only that every request succeeded and the table was written.
// The window is long enough that a loaded CI machine still completes requests.
func TestBenchWritesTable(t *testing.T) {
	imgs, err := SyntheticJPEGs(2, 64, 48)
	require.NoError(t, err)
	out := t.TempDir()
	rep, err := Bench(context.Background(), BenchConfig{
		CLIP: reffix.Path("tiny_clip_vit_fp16.pt"), Checkpoint: reffix.Dir(),
		Concurrency: []int{1, 3}, Duration: 2 * time.Second, Out: out, Images: imgs,
		Scorer: []clipagiqa.ScorerOption{clipagiqa.WithMaxBatch(4)},
		Server: Config{Logger: quietLogger()},
	})
	require.NoError(t, err)
	require.Len(t, rep.Results, 2)
	for _, r := range rep.Results {
		assert.Positive(t, r.Requests)
		assert.Zero(t, r.Errors, "codes %v", r.Codes)
		assert.GreaterOrEqual(t, r.MeanBatch, 1.0)
		assert.LessOrEqual(t, r.MeanBatch, 4.0)
		assert.LessOrEqual(t, r.P50, r.P99)
		assert.Equal(t, max(1, int(r.MeanBatch+0.5)), r.OfflineBatch)
		assert.Positive(t, r.OfflineRate)
		assert.InDelta(t, r.Throughput/r.OfflineRate, r.RateRatio, 1e-9)
		assert.Positive(t, r.CPURatio)
		assert.Positive(t, r.BatchTime)
		assert.InDelta(t, float64(r.P99)/float64(r.BatchTime), r.P99OverBatch, 1e-9)
		assert.Positive(t, r.DecodeTime)
	}
	assert.Positive(t, rep.Results[0].P50OverSingle, "measured at one client")
	assert.Zero(t, rep.Results[1].P50OverSingle, "only at one client")
	assert.Equal(t, filepath.Join(out, "serve-tiny_clip_vit_fp16.md"), rep.Path)
	b, err := os.ReadFile(rep.Path)
	require.NoError(t, err)
	md := string(b)
	assert.Contains(t, md, "| concurrency | requests | errors | throughput (img/s) | p50 (ms) | p99 (ms) | mean batch | batch fill |")
	tables := strings.Split(md, "Against the engine")
	require.Len(t, tables, 2, "a table of ratios follows the load table")
	for _, tab := range tables {
		lines := strings.Split(strings.TrimSpace(tab), "\n")
		assert.True(t, strings.HasPrefix(lines[len(lines)-2], "| 1 |"), lines[len(lines)-2])
		assert.True(t, strings.HasPrefix(lines[len(lines)-1], "| 3 |"), lines[len(lines)-1])
	}
	assert.Contains(t, md, "throughput / offline (≥ 0.90)")
}

func TestSyntheticJPEGsDeterministic(t *testing.T) {
	a, err := SyntheticJPEGs(2, 32, 24)
	require.NoError(t, err)
	b, err := SyntheticJPEGs(2, 32, 24)
	require.NoError(t, err)
	assert.Equal(t, a, b)
	assert.NotEqual(t, a[0], a[1])
}
