package devicecheck

import (
	"context"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/clipagiqa/clipagiqa/clipagiqa/clip"
	"github.com/clipagiqa/clipagiqa/clipagiqa/ipiqa"
	"github.com/clipagiqa/clipagiqa/clipagiqa/train"
	"github.com/clipagiqa/clipagiqa/clipagiqa/train/ipiqatrain"
	"github.com/clipagiqa/clipagiqa/internal/benchkit"
	"github.com/clipagiqa/clipagiqa/torch"
	"github.com/clipagiqa/clipagiqa/torch/optim"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Mixed-precision IP-IQA training against fp32 on the same device, same
// initial weights, no dropout or flips: per-step train loss relative
// difference (fp16: 10-bit mantissa, bf16: 7-bit; the forward runs in half
// precision, the weights and AdamW stay fp32).
const (
	ipiqaFP16LossRelTol = 2e-2
	ipiqaBF16LossRelTol = 5e-2
	ipiqaSteps          = 6
	ipiqaLR             = 1e-4 // the official 1e-5 barely moves the loss in 6 steps
	ipiqaResolution     = 128
	ipiqaImages         = 8
)

// tinyRNStateDict is a CLIP ResNet state dict of the IP-IQA fixture's
// geometry (one Bottleneck per stage, width 4, text width 64 with 2
// layers, embedding 64) with random weights from a fixed seed: built here
// so the GPU bundle carries no extra weights file.
func tinyRNStateDict(t *testing.T) *torch.StateDict {
	t.Helper()
	require.NoError(t, torch.ManualSeed(11))
	sd, err := benchkit.RandomResNetCLIP(benchkit.ResNetCLIPGeometry{Width: 4, Blocks: []int{1, 1, 1, 1}, Embed: 64, TextWidth: 64, TextLayers: 2, LogitScale: true})
	require.NoError(t, err)
	return sd
}

// ipiqaSamples writes 8 synthetic images (gradients whose direction and
// contrast follow the index) with prompts and [quality, alignment] targets.
func ipiqaSamples(t *testing.T) []ipiqatrain.Sample {
	t.Helper()
	dir := t.TempDir()
	var ss []ipiqatrain.Sample
	for k := range ipiqaImages {
		img := image.NewRGBA(image.Rect(0, 0, 160, 160))
		for y := range 160 {
			for x := range 160 {
				v := (x*(k+1) + y*(8-k)) * (k + 2) / 9
				img.Set(x, y, color.RGBA{uint8(v), uint8(255 - v), uint8((x ^ y) * k), 255})
			}
		}
		name := fmt.Sprintf("img_%d.png", k)
		f, err := os.Create(filepath.Join(dir, name))
		require.NoError(t, err)
		require.NoError(t, png.Encode(f, img))
		require.NoError(t, f.Close())
		ss = append(ss, ipiqatrain.Sample{Name: name, Path: filepath.Join(dir, name),
			Prompt:  fmt.Sprintf("a photo of pattern number %d with stripes", k),
			Targets: []float64{1 + 0.5*float64(k), 4 - 0.3*float64(k)}})
	}
	return ss
}

// trainIPIQA runs ipiqaSteps one-batch epochs of IP-IQA on a tiny random
// ResNet CLIP at prec (fp32 weights; fp16/bf16 under autocast, fp16
// with the loss scaler) and returns the per-step losses and the scaler's
// final scale (0 without one).
func trainIPIQA(t *testing.T, d torch.Device, prec torch.DType) ([]float64, float64) {
	t.Helper()
	sd := tinyRNStateDict(t)
	c, err := clip.FromStateDict(sd, clip.Options{Device: d})
	sd.Close()
	require.NoError(t, err)
	require.NoError(t, torch.ManualSeed(12)) // IP-IQA's new parameters: the same in every run
	m, err := ipiqa.New(c, ipiqa.Options{InputResolution: ipiqaResolution, Outputs: 2, Dropout: 0})
	if err != nil {
		c.Close()
	}
	require.NoError(t, err)
	defer m.Close()
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
	t.Logf("REPORT IP-IQA training, %d steps of %d synthetic images at %d on a tiny random ResNet CLIP, %s, fp32: loss %s", ipiqaSteps, ipiqaImages, ipiqaResolution, d, fmtLosses(ref))
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
