package devicecheck

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/clipagiqa/clipagiqa/clipagiqa/clip"
	"github.com/clipagiqa/clipagiqa/clipagiqa/ipiqa"
	"github.com/clipagiqa/clipagiqa/clipagiqa/train"
	"github.com/clipagiqa/clipagiqa/clipagiqa/train/ipiqatrain"
	"github.com/clipagiqa/clipagiqa/internal/ipiqaref"
	"github.com/clipagiqa/clipagiqa/torch"
	"github.com/clipagiqa/clipagiqa/torch/optim"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// IPIQARefEnv overrides the IP-IQA fixture directory (the GPU bundle
// carries its files; default: testdata/ipiqa-ref in the source tree).
const IPIQARefEnv = "CLIPAGIQA_IPIQAREF_DIR"

// Mixed-precision IP-IQA training against fp32 on the same device, same
// initial weights, no dropout or flips: per-step train loss relative
// difference (fp16: 10-bit mantissa, bf16: 7-bit; the forward runs in half
// precision, the weights and AdamW stay fp32).
const (
	ipiqaFP16LossRelTol = 2e-2
	ipiqaBF16LossRelTol = 5e-2
	ipiqaSteps          = 6
	ipiqaLR             = 1e-4 // the official 1e-5 barely moves the loss in 6 steps
)

func ipiqaRefPath(name string) string {
	if d := os.Getenv(IPIQARefEnv); d != "" {
		return filepath.Join(d, name)
	}
	return ipiqaref.Path(name)
}

// ipiqaSamples are the fixture's 8 images (uint8 PNGs at 512), prompts and
// [quality, alignment] targets.
func ipiqaSamples(t *testing.T) []ipiqatrain.Sample {
	t.Helper()
	b, err := os.ReadFile(ipiqaRefPath("expected.json"))
	require.NoError(t, err)
	var f struct {
		Prompts []ipiqaref.Prompt `json:"prompts"`
		Train   struct {
			Targets [][]float64 `json:"targets_score"`
		} `json:"train"`
	}
	require.NoError(t, json.Unmarshal(b, &f))
	var ss []ipiqatrain.Sample
	for k, p := range f.Prompts {
		name := fmt.Sprintf("img_%d_512.png", k)
		ss = append(ss, ipiqatrain.Sample{Name: name, Path: ipiqaRefPath(filepath.Join("resized", name)), Prompt: p.Text, Targets: f.Train.Targets[k]})
	}
	require.Len(t, ss, ipiqaref.Images)
	return ss
}

// trainIPIQA runs ipiqaSteps one-batch epochs of IP-IQA on the fixture's
// tiny ResNet CLIP at prec (fp32 weights; fp16/bf16 under autocast, fp16
// with the loss scaler) and returns the per-step losses and the scaler's
// final scale (0 without one).
func trainIPIQA(t *testing.T, d torch.Device, prec torch.DType) ([]float64, float64) {
	t.Helper()
	c, err := clip.Load(ipiqaRefPath("tiny_clip_rn_fp16.pt"), clip.Options{Device: d})
	require.NoError(t, err)
	m, err := ipiqa.New(c, ipiqa.Options{Outputs: 2, Dropout: 0})
	if err != nil {
		c.Close()
	}
	require.NoError(t, err)
	defer m.Close()
	require.NoError(t, m.LoadState(ipiqaRefPath("init_new_params.pth")))
	autocast, scaler, err := ipiqatrain.MixedPrecision(prec)
	require.NoError(t, err)
	ss := ipiqaSamples(t)
	a, err := ipiqatrain.New(m, ss, nil, ipiqatrain.Options{Autocast: autocast, Scaler: scaler})
	require.NoError(t, err)
	sc := ipiqatrain.OfficialSchedule()
	sc.LR = ipiqaLR
	opt, err := ipiqatrain.NewOptimizer(m, sc)
	require.NoError(t, err)
	defer opt.Close()
	idx := make([]int, len(ss))
	for i := range idx {
		idx[i] = i
	}
	cfg := train.Config{Epochs: ipiqaSteps, BatchSize: len(ss), Seed: 42, Train: idx, Optimizer: opt}
	if scaler != nil {
		cfg.Scaler = scaler
	}
	var losses []float64
	_, err = train.Run(context.Background(), a, cfg, train.Callbacks{OnStep: func(s train.StepInfo) { losses = append(losses, s.Loss) }})
	require.NoError(t, err)
	require.Len(t, losses, ipiqaSteps)
	scale := 0.0
	if scaler != nil {
		scale = scaler.Scale()
	}
	return losses, scale
}

// IP-IQA trains under fp16 and bf16 autocast (PyTorch AMP: fp32 master
// weights and AdamW state, fp16 with the dynamic loss scaler) close to its
// fp32 run on the same device: losses finite, falling, within the stated
// relative tolerances per step. The fp32 run also goes on the CPU (the
// dry run); the autocast runs need CUDA.
func TestIPIQAMixedPrecisionTraining(t *testing.T) {
	d := testDevice(t)
	ref, _ := trainIPIQA(t, d, torch.Float32)
	for _, l := range ref {
		require.False(t, math.IsNaN(l) || math.IsInf(l, 0), "fp32 losses %v", ref)
	}
	assert.Less(t, ref[ipiqaSteps-1], ref[0], "fp32: the loss falls")
	t.Logf("REPORT IP-IQA training, %d steps of the 8 fixture images at 512 on %s, fp32: loss %s", ipiqaSteps, d, fmtLosses(ref))
	for _, c := range []struct {
		name string
		prec torch.DType
		tol  float64
	}{{"fp16", torch.Float16, ipiqaFP16LossRelTol}, {"bf16", torch.BFloat16, ipiqaBF16LossRelTol}} {
		t.Run(c.name, func(t *testing.T) {
			if !isCUDA(d) {
				t.Skip("skipped: needs CUDA (autocast is CUDA-only; the CPU trains in fp32)")
			}
			got, scale := trainIPIQA(t, d, c.prec)
			worst := 0.0
			for i, l := range got {
				require.False(t, math.IsNaN(l) || math.IsInf(l, 0), "%s losses %v", c.name, got)
				worst = math.Max(worst, math.Abs(l-ref[i])/math.Abs(ref[i]))
			}
			extra := ""
			if c.prec == torch.Float16 {
				extra = fmt.Sprintf(", loss scale after %d steps %g (init %g)", ipiqaSteps, scale, optim.DefaultInitScale)
			}
			t.Logf("REPORT IP-IQA training under %s autocast on %s: loss %s vs fp32 %s, worst rel %.3g (tolerance %.0e)%s",
				c.name, d, fmtLosses(got), fmtLosses(ref), worst, c.tol, extra)
			assert.Less(t, worst, c.tol)
			assert.Less(t, got[ipiqaSteps-1], got[0], "%s: the loss falls", c.name)
		})
	}
}
