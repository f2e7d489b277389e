package devicecheck

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/clipagiqa/clipagiqa/clipagiqa"
	"github.com/clipagiqa/clipagiqa/clipagiqa/clip"
	"github.com/clipagiqa/clipagiqa/clipagiqa/tokenizer"
	"github.com/clipagiqa/clipagiqa/internal/reffix"
	"github.com/clipagiqa/clipagiqa/torch"
)

// Benchmark inputs: CLIP weights ($CLIPAGIQA_BENCH_CLIP, default the tiny
// fixture) and batch sizes ($CLIPAGIQA_BENCH_BATCHES, default "1,8").
const (
	benchCLIPEnv    = "CLIPAGIQA_BENCH_CLIP"
	benchBatchesEnv = "CLIPAGIQA_BENCH_BATCHES"
)

func benchCLIPPath() string {
	if p := os.Getenv(benchCLIPEnv); p != "" {
		return p
	}
	return reffix.Path("tiny_clip_vit_fp16.pt")
}

func benchBatches(b *testing.B) []int {
	spec := os.Getenv(benchBatchesEnv)
	if spec == "" {
		spec = "1,8"
	}
	var out []int
	for _, f := range strings.Split(spec, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			b.Fatalf("%s=%q: want positive integers separated by commas", benchBatchesEnv, spec)
		}
		out = append(out, n)
	}
	return out
}

// BenchmarkEncoder times the image encoder (inference mode) per batch and
// precision; img/s is reported as a metric. fp16 is autocast (CUDA only).
func BenchmarkEncoder(b *testing.B) {
	d := testDevice(b)
	m, err := clip.Load(benchCLIPPath(), clip.Options{Device: d})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	if !isCUDA(d) {
		if _, err := m.EnableFused(); err != nil {
			b.Fatal(err)
		}
	}
	r := int64(m.Config.ImageResolution)
	for _, prec := range []string{"fp32", "fp16"} {
		if prec == "fp16" && !isCUDA(d) {
			continue
		}
		for _, batch := range benchBatches(b) {
			b.Run(fmt.Sprintf("%s/batch=%d", prec, batch), func(b *testing.B) {
				in := torch.NewScope().WithDevice(d)
				defer in.Close()
				px := in.Randn(torch.Float32, int64(batch), 3, r, r)
				if err := in.Err(); err != nil {
					b.Fatal(err)
				}
				run := func() {
					s := torch.NewScope().WithGrad(torch.InferenceMode)
					if prec == "fp16" {
						s = s.WithAutocast(torch.Float16)
					}
					defer s.Close()
					m.EncodeImage(s, px)
					if err := s.Err(); err != nil {
						b.Fatal(err)
					}
					if err := torch.Synchronize(d); err != nil {
						b.Fatal(err)
					}
				}
				run() // warm-up (cuDNN/cuBLAS plans, allocator)
				b.ResetTimer()
				start := time.Now()
				for range b.N {
					run()
				}
				b.ReportMetric(float64(batch*b.N)/time.Since(start).Seconds(), "img/s")
			})
		}
	}
}

// BenchmarkTrainStep times CLIP-AGIQA training steps at batch 32 with the
// image encoder in the loop (feature cache off: a fresh augmentation per
// step), from demo JPEG-free PNGs; steps/s is reported.
func BenchmarkTrainStep(b *testing.B) {
	d := testDevice(b)
	c, err := clip.Load(benchCLIPPath(), clip.Options{Device: d})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	if !isCUDA(d) {
		if _, err := c.EnableFused(); err != nil {
			b.Fatal(err)
		}
	}
	tok, err := tokenizer.Default()
	if err != nil {
		b.Fatal(err)
	}
	m, err := clipagiqa.New(c, tok, clipagiqa.DefaultConfig())
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	ds := demoSetsB(b)
	cfg := clipagiqa.DefaultTrainConfig()
	cfg.Epochs, cfg.BatchSize, cfg.FeatureCache, cfg.OutDir = 1, 32, clipagiqa.CacheOff, b.TempDir()
	var timed int // steps after the first of each run (which includes its start-up)
	var stepTime time.Duration
	b.ResetTimer()
	for range b.N {
		cfg.OutDir = b.TempDir()
		steps, last := 0, time.Now()
		_, err := clipagiqa.Train(context.Background(), m, ds, cfg, clipagiqa.Callbacks{OnStep: func(clipagiqa.StepInfo) {
			now := time.Now()
			if steps > 0 {
				stepTime += now.Sub(last)
				timed++
			}
			steps++
			last = now
		}})
		if err != nil {
			b.Fatal(err)
		}
	}
	if stepTime > 0 {
		b.ReportMetric(float64(timed)/stepTime.Seconds(), "steps/s")
	}
}
