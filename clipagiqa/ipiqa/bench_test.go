package ipiqa_test

import (
	"fmt"
	"testing"

	"github.com/clipagiqa/clipagiqa/clipagiqa/ipiqa"
	"github.com/clipagiqa/clipagiqa/clipagiqa/train/ipiqatrain"
	"github.com/clipagiqa/clipagiqa/internal/benchkit"
	"github.com/clipagiqa/clipagiqa/torch"
)

// These are the Go side of `clipagiqa bench --only ipiqa` without the
// reference (which bench/ipiqa_reference.py provides there): full-size RN50
// IP-IQA at 512×512, random weights, official settings.

func newRN50(b *testing.B) *ipiqa.Model {
	b.Helper()
	m, err := benchkit.NewRN50IPIQA()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(m.Close)
	return m
}

// distinctPrompts gives every image its own prompt, as in a shuffled
// AGIQA-3K batch (no sharing of text features within the batch).
func distinctPrompts(n int) []string {
	p := make([]string, n)
	for i := range p {
		p[i] = fmt.Sprintf("a watercolor painting of a lighthouse at sunset, number %d", i)
	}
	return p
}

// Scoring at RN50 geometry, 512×512 (eval mode, inference mode).
func BenchmarkScoreRN50(b *testing.B) {
	m := newRN50(b)
	for _, n := range []int{1, 32} {
		b.Run(fmt.Sprintf("batch=%d", n), func(b *testing.B) {
			s := torch.NewScope().WithGrad(torch.InferenceMode)
			defer s.Close()
			px, prompts := s.Randn(torch.Float32, int64(n), 3, 512, 512), distinctPrompts(n)
			for b.Loop() {
				sub := s.Sub()
				m.Forward(sub, px, prompts, false)
				if err := sub.Err(); err != nil {
					b.Fatal(err)
				}
				sub.Close()
			}
			b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "img/s")
		})
	}
}

// One official training step (train mode, MSE, backward, AdamW over the
// official parameter groups) at RN50 geometry, 512×512.
func BenchmarkTrainStepRN50(b *testing.B) {
	m := newRN50(b)
	opt, err := ipiqatrain.NewOptimizer(m, ipiqatrain.OfficialSchedule())
	if err != nil {
		b.Fatal(err)
	}
	defer opt.Close()
	for _, n := range []int{8, 32} {
		b.Run(fmt.Sprintf("batch=%d", n), func(b *testing.B) {
			s := torch.NewScope().WithGrad(torch.NoGrad)
			defer s.Close()
			px, y := s.Randn(torch.Float32, int64(n), 3, 512, 512), s.Full(3, torch.Float32, int64(n), 2)
			if err := s.Err(); err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				if err := benchkit.IPIQAStep(m, opt, px, y, distinctPrompts(n)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
