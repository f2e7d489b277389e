package benchkit

import (
	"encoding/json"
	"math"
	"os"
	"strings"
	"testing"

	"github.com/clipagiqa/clipagiqa/clipagiqa/clip"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func sampleReport() *Report {
	return &Report{
		Mode:    "quick",
		Machine: MachineInfo{CPU: "Test CPU", Cores: 2, Threads: 2, LoadAvgStart: 0.1, LoadAvgEnd: 0.2},
		Model:   ModelInfo{Path: "m.pt", Config: clip.Config{ImageResolution: 224, VisionPatchSize: 16, VisionWidth: 768, VisionLayers: 12}, FLOPsPerImage: 35e9},
		Floor:   Floor{N: 768, GoGFLOPS: 140, RefGFLOPS: 150, ImgPerSec: 4},
		Encoder: []EncoderRow{
			{Batch: 1, FusedRate: 3, RefRate: 2, Ratio: 1.5, PlainRatio: math.NaN(), TunedRatio: math.NaN()},
			{Batch: 32, FusedRate: 2.2, RefRate: 2, Ratio: 1.1},
		},
		Scoring:  &ScoringRow{Images: 10, Batch: 32, GoRate: 3, RefRate: 2, Ratio: 1.5, GoPeakKB: 900 << 10, RefPeakKB: 1000 << 10},
		Text:     &TextRow{Go: NewStat([]float64{0.1}), Ref: NewStat([]float64{2}), Ratio: 20},
		Training: &TrainingRow{Images: 2385, StepsPerEpoch: 74, CenterVsPass: 2.6, CenterVsRef: 60},
	}
}

func TestTargets(t *testing.T) {
	got := map[string]Target{}
	for _, tg := range targets(sampleReport()) {
		got[tg.Name] = tg
	}
	for name, met := range map[string]bool{
		"scoring from JPEG, batch 32":                         true,  // 1.5 ≥ 1.2
		"image encoder, batch 1":                              true,  // 1.5
		"image encoder, batch 32":                             false, // 1.1 < 1.2
		"text path (6 prompts, fwd + bwd to ctx)":             true,  // 20 ≥ 10
		"100 epochs `center` ÷ one encoder pass":              false, // 2.6 > 2.5
		"100 epochs `center` vs reference's 100-epoch regime": true,  // 60 ≥ 50
		"peak RSS while scoring":                              true,  // 0.9
	} {
		tg, ok := got[name]
		require.True(t, ok, name)
		assert.Equal(t, met, tg.Met, name)
	}
	assert.InDelta(t, 0.9, got["peak RSS while scoring"].Value, 1e-9)
}

func TestWriteReport(t *testing.T) {
	r := sampleReport()
	r.Targets = targets(r)
	dir := t.TempDir()
	jp, mp, err := r.Write(dir)
	require.NoError(t, err)
	md, err := os.ReadFile(mp)
	require.NoError(t, err)
	text := string(md)
	assert.Contains(t, text, "| 1 | 3.00 | – | 2.00 | 1.50× | – |")
	assert.Contains(t, text, "| image encoder, batch 32 | ≥ 1.2× reference | 1.10 × | no |")
	assert.Contains(t, text, "| (d) peak RSS while scoring | 900 MiB | 1000 MiB | 0.90× |")
	assert.True(t, strings.HasPrefix(text, "# clipagiqa bench (quick)"))

	b, err := os.ReadFile(jp)
	require.NoError(t, err)
	var back map[string]any
	require.NoError(t, json.Unmarshal(b, &back), "NaNs must not break the JSON")
	enc := back["encoder"].([]any)[0].(map[string]any)
	assert.Equal(t, 0.0, enc["plain_ratio"])
	assert.Equal(t, 1.5, enc["ratio"])
}
