package benchkit

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestExtraTargets(t *testing.T) {
	r := sampleReport()
	r.Encoder[0].Extra = []ExtraRate{ // batch 1, fused 3
		{Name: extraTorch2, Rate: 2.5}, {Name: extraTorch2Compile, Rate: 2.8}, {Name: extraONNX, Rate: 2.6},
	}
	r.Encoder[1].PctFloor = 0.9
	r.Encoder[1].Extra = []ExtraRate{ // batch 32, fused 2.2
		{Name: extraTorch2, Rate: 1.5}, {Name: extraONNX, Rate: 2.0},
	}
	got := map[string]Target{}
	for _, tg := range targets(r) {
		got[tg.Name] = tg
	}
	tests := []struct {
		name  string
		value float64
		met   bool
	}{
		{"image encoder, batch 1, vs ONNX Runtime", 3 / 2.6, true},                              // ≥ 1.1
		{"image encoder, batch 1, vs best PyTorch 2 (PyTorch 2 torch.compile)", 3 / 2.8, false}, // the best of the two
		{"image encoder, batch 32, vs ONNX Runtime", 1.1, false},                                // < 1.2
		{"image encoder, batch 32, vs best PyTorch 2 (PyTorch 2 eager)", 2.2 / 1.5, true},
		{"image encoder, batch 32, share of the matmul floor", 90, true},
	}
	for _, tt := range tests {
		tg, ok := got[tt.name]
		require.True(t, ok, "missing target %q in %v", tt.name, got)
		assert.InDelta(t, tt.value, tg.Value, 1e-9, tt.name)
		assert.Equal(t, tt.met, tg.Met, tt.name)
	}
}

func TestNoExtraTargetsWithoutColumns(t *testing.T) {
	for _, tg := range targets(sampleReport()) {
		assert.NotContains(t, tg.Name, "ONNX")
		assert.NotContains(t, tg.Name, "PyTorch 2")
	}
}

func TestExtraMarkdown(t *testing.T) {
	r := sampleReport()
	r.Extras = []ExtraInfo{{Name: extraTorch2, Version: "2.6.0", RelErr: 1e-6}, {Name: extraONNX, Version: "onnxruntime-node 1.30.0", RelErr: 2e-6}}
	r.ExtraNotes = []string{"torch.compile column absent: boom"}
	r.Encoder[0].Extra = extraRates([]extraRef{{name: extraTorch2}, {name: extraONNX}}, [][]float64{{0.5}, {0.25}}, 1, 3)
	var sb strings.Builder
	r.Markdown(&sb)
	text := sb.String()
	assert.Contains(t, text, "| batch | Go fused | PyTorch 2 eager | fused ÷ that | ONNX Runtime | fused ÷ that |")
	assert.Contains(t, text, "| 1 | 3.00 | 2.00 | 1.50× | 4.00 | 0.75× |")
	assert.Contains(t, text, "| 32 | 2.20 | – | – | – | – |", "a batch without the columns shows dashes")
	assert.Contains(t, text, "- torch.compile column absent: boom")
}

func TestExtraRefMergesFields(t *testing.T) {
	// The fake echoes whether "compiled":true reached it.
	script := filepath.Join(t.TempDir(), "fake.sh")
	require.NoError(t, os.WriteFile(script, []byte(`
while read -r line; do
  case "$line" in
    *'"quit"'*) echo '{"ok": true}'; exit 0 ;;
    *'"compiled":true'*) echo '{"ok": true, "times": [2]}' ;;
    *) echo '{"ok": true, "times": [1]}' ;;
  esac
done
`), 0o755))
	r, err := StartReferenceCommand([]string{"/bin/sh", script}, nil)
	require.NoError(t, err)
	defer r.Close()
	plain, compiled := extraRef{name: "a", ref: r}, extraRef{name: "b", ref: r, req: map[string]any{"compiled": true}}
	req := map[string]any{"op": "encoder", "batch": 1}
	rp, err := plain.call(req)
	require.NoError(t, err)
	rc, err := compiled.call(req)
	require.NoError(t, err)
	assert.Equal(t, []float64{1}, rp.Times)
	assert.Equal(t, []float64{2}, rc.Times)
	assert.NotContains(t, req, "compiled", "the caller's request is not modified")
}

func TestStartReferenceCommandErrors(t *testing.T) {
	_, err := StartReferenceCommand(nil, nil)
	assert.Error(t, err)
	_, err = StartReferenceCommand([]string{"/nonexistent/program"}, nil)
	assert.ErrorContains(t, err, "/nonexistent/program")
}

func TestBestExtra(t *testing.T) {
	row := EncoderRow{Extra: []ExtraRate{{Name: extraTorch2, Rate: 1}, {Name: extraTorch2Compile, Rate: math.NaN()}}}
	v, name := bestExtra(row, "PyTorch 2")
	assert.Equal(t, 1.0, v)
	assert.Equal(t, extraTorch2, name)
	v, _ = bestExtra(row, extraONNX)
	assert.True(t, math.IsNaN(v))
}
