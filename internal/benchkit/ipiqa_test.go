package benchkit

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The fusion (txt_attnpool + head) and text-tower FLOP formulas against
// torch.profiler(with_flops=True) on bench/ipiqa_reference.py's own modules
// (the visual part is clip.Config.FLOPsPerImage, checked in clipagiqa/clip).
// The profiler also counts a few element-wise ops the formulas leave out
// (< 0.1 %).
func TestIPIQAFLOPsMatchProfiler(t *testing.T) {
	py := "/usr/bin/python3"
	if err := exec.Command(py, "-c", "import torch").Run(); err != nil {
		t.Skipf("no python3-torch: %v", err)
	}
	script := `
import sys, json, contextlib; sys.path.insert(0, "../../bench")
import torch, ipiqa_reference as r
from torch.profiler import profile
torch.set_num_threads(1)
# torch 2.x: the profiler counts no FLOPs inside nn.MultiheadAttention's
# fast path or the fused SDPA kernels, so attention runs op by op here.
if hasattr(torch.backends, "mha"):
    torch.backends.mha.set_fastpath_enabled(False)
try:
    from torch.nn.attention import sdpa_kernel, SDPBackend
    math_attention = lambda: sdpa_kernel(SDPBackend.MATH)
except ImportError:
    math_attention = contextlib.nullcontext
tp, head = r.TextAttentionPool2d(16, 2048, 1024, 32, 1024), r.MLPHead(2048, 2, 0.5).eval()
tx = r.Transformer(512, 12, 8, torch.empty(77, 77).fill_(float("-inf")).triu_(1)).eval()
proj = torch.randn(512, 1024)
out = {}
with torch.no_grad(), math_attention():
    x, t = torch.randn(1, 2048, 16, 16), torch.randn(1, 1024)
    with profile(with_flops=True) as p:
        o = tp(x, t); head(torch.cat([o, o], 1))
    out["fusion"] = sum(e.flops for e in p.key_averages())
    h = torch.randn(77, 1, 512)
    with profile(with_flops=True) as p:
        tx(h)[-1] @ proj
    out["text"] = sum(e.flops for e in p.key_averages())
print(json.dumps(out))
`
	cmd := exec.Command(py, "-c", script)
	cmd.Env = append(os.Environ(), "PYTHONDONTWRITEBYTECODE=1") // no bench/__pycache__ in the tree
	b, err := cmd.Output()
	require.NoError(t, err)
	var want struct{ Fusion, Text float64 }
	require.NoError(t, json.Unmarshal(b, &want))
	got := ipiqaFLOPs([]int64{9})
	assert.InEpsilon(t, want.Fusion, got.Fusion, 1e-3, "txt_attnpool + head")
	assert.InEpsilon(t, want.Text, got.Text77, 1e-3, "text tower at 77 positions")
	assert.InEpsilon(t, want.Text*10/77, got.TextPrompts, 0.05, "text tower at 10 positions ≈ 10/77 of it")
	assert.InDelta(t, 3*(got.Visual+got.Fusion)+2*got.Text77, got.TrainStep, 1)
	// RN50 at 512: about (512/224)² × CLIP RN50's 11.6 GFLOP at 224.
	visual := ipiqaFLOPs(nil).Visual
	assert.Greater(t, visual, 55e9)
	assert.Less(t, visual, 65e9)
}

func TestMemoryGuardRefusesWhatDoesNotFit(t *testing.T) {
	avail, err := memAvailableKB()
	if err != nil {
		t.Skip(err)
	}
	row := &IPIQARow{Batch: 2, GoIdleKB: 1 << 20, RefIdleKB: 1 << 20}
	row.GoPeakKB = row.GoIdleKB + avail // batch 2 alone took all there is: batch 8 cannot fit
	why := memoryGuard(row, 8, -1)
	assert.Contains(t, why, "batch 8 needs about")
	row.GoPeakKB, row.RefPeakKB = row.GoIdleKB+1024, row.RefIdleKB+2048 // 2 MiB growth: fits
	assert.Empty(t, memoryGuard(row, 8, 0))
	// Each side alone fits, but the Go side's host cache keeps its growth
	// while the reference runs: together they do not.
	row.GoPeakKB, row.RefPeakKB = row.GoIdleKB+avail/6, row.RefIdleKB+avail/6 // ×4 ×1.15 = 0.77 of avail each
	assert.Empty(t, memoryGuard(row, 8, -1), "no host cache: one side at a time")
	assert.Contains(t, memoryGuard(row, 8, 0), "host cache keeps")
	assert.Empty(t, memoryGuard(row, 8, 1024), "a 1 MiB cap keeps almost nothing")
}

func TestProjectionScalesTheMeasuredStep(t *testing.T) {
	r := &IPIQAReport{Machine: MachineInfo{Threads: 2}, FLOPs: IPIQAFLOPs{Visual: 60e9, Fusion: 4e9, Text77: 6e9, TrainStep: 200e9}, Rows: []IPIQARow{
		{What: "score", Batch: 1, GoRate: 0.5, RefRate: 0.4},
		// CPU seconds = 2 threads × wall: the idle-machine estimate equals the wall figure.
		{What: "score", Batch: 32, GoRate: 2, RefRate: 1, GoCPU: Stat{Median: 32}, RefCPU: Stat{Median: 64}},
		{What: "train_step", Batch: 4, Go: Stat{Median: 1}, Ref: Stat{Median: 1}, GoCPU: Stat{Median: 2}, RefCPU: Stat{Median: 2}},
		{What: "train_step", Batch: 8, Go: Stat{Median: 10}, Ref: Stat{Median: 20}, GoCPU: Stat{Median: 20}, RefCPU: Stat{Median: 40}},
		{What: "train_step", Batch: 32, Skipped: "memory"},
	}}
	p := project(r)
	require.NotNil(t, p)
	assert.Equal(t, 74, p.StepsPerEpoch) // 2385 // 32
	assert.Equal(t, 8, p.StepBatch)      // the measured batch nearest 32
	assert.Equal(t, 597, p.TestImages)
	// 100 epochs × 74 steps × (10 s × 32/8) = 82.2 h; + 100 × 597 images at 2 img/s.
	assert.InDelta(t, 100*74*40.0/3600, p.GoTrainHours, 1e-9)
	assert.InDelta(t, 100*74*40.0/3600+100*597/2.0/3600, p.GoHours, 1e-9)
	assert.InDelta(t, 100*74*80.0/3600+100*597/1.0/3600, p.RefHours, 1e-9)
	assert.InDelta(t, 100*(74*32*200e9+597*70e9)/1e15, p.PFLOP, 1e-9)
	assert.InDelta(t, p.GoHours, p.GoCPUHours, 1e-9)
	assert.InDelta(t, p.RefHours, p.RefCPUHours, 1e-9)
}

// The Go child's protocol: requests before a load fail with a reason and
// the process goes on; unknown ops and bad JSON too; quit ends it.
func TestServeIPIQAProtocolErrors(t *testing.T) {
	in := strings.Join([]string{
		`{"op":"score","batch":1}`,
		`{"op":"status"}`,
		`not json`,
		`{"op":"reset_hwm"}`,
		`{"op":"quit"}`,
		`{"op":"status"}`, // after quit: not answered
	}, "\n")
	var out bytes.Buffer
	require.NoError(t, ServeIPIQA(context.Background(), strings.NewReader(in), &out))
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	require.Len(t, lines, 5)
	var reps []RefReply
	for _, l := range lines {
		var r RefReply
		require.NoError(t, json.Unmarshal([]byte(l), &r), l)
		reps = append(reps, r)
	}
	assert.False(t, reps[0].OK)
	assert.Contains(t, reps[0].Error, "no model loaded")
	assert.True(t, reps[1].OK)
	assert.Positive(t, reps[1].RSSKB)
	assert.False(t, reps[2].OK)
	assert.True(t, reps[3].OK)
	_, statErr := os.Stat("/proc/self/clear_refs")
	assert.Equal(t, statErr == nil, reps[3].HWMReset)
	assert.True(t, reps[4].OK)
}

func TestIPIQAPromptsAreDistinct(t *testing.T) {
	p := ipiqaPrompts(64)
	seen := map[string]bool{}
	for _, s := range p {
		assert.False(t, seen[s], s)
		seen[s] = true
		assert.LessOrEqual(t, len(strings.Fields(s)), 40)
	}
}

func TestSideOrderRunsEveryOrder(t *testing.T) {
	for _, n := range []int{2, 3} {
		seen := map[string]bool{}
		first := map[int]int{}
		for r := range 2 * n {
			first[sideOrder(n, r, 0)]++
			var order []int
			used := map[int]bool{}
			for k := range n {
				i := sideOrder(n, r, k)
				require.False(t, used[i], "round %d runs side %d twice", r, i)
				used[i] = true
				order = append(order, i)
			}
			seen[fmt.Sprint(order)] = true
		}
		want := map[int]int{2: 2, 3: 6}[n]
		assert.Len(t, seen, want, "%d sides: every order in %d rounds", n, 2*n)
		for i := range n {
			assert.Equal(t, 2, first[i], "%d sides: side %d goes first twice in %d rounds", n, i, 2*n)
		}
	}
}
