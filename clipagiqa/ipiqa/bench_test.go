package ipiqa

import (
	"fmt"
	"strings"
	"testing"

	"github.com/clipagiqa/clipagiqa/clipagiqa/clip"
	"github.com/clipagiqa/clipagiqa/torch"
	"github.com/clipagiqa/clipagiqa/torch/optim"
)

// rn50StateDict is a CLIP with RN50's geometry (OpenAI's RN50.pt shapes)
// and random weights, for benchmarks.
func rn50StateDict(b *testing.B) *torch.StateDict {
	b.Helper()
	s := torch.NewScope().WithGrad(torch.NoGrad)
	defer s.Close()
	sd := torch.NewStateDict()
	add := func(name string, t *torch.Tensor) { sd.Set(name, s.Keep(t)) }
	w := func(name string, shape ...int64) { add(name, s.MulScalar(s.Randn(torch.Float32, shape...), 0.02)) }
	bn := func(name string, c int64) {
		add(name+".weight", s.Full(1, torch.Float32, c))
		add(name+".bias", s.Zeros(torch.Float32, c))
		add(name+".running_mean", s.Zeros(torch.Float32, c))
		add(name+".running_var", s.Full(1, torch.Float32, c))
	}
	const width, embed, d, txt = 64, 1024, 2048, 512
	w("visual.conv1.weight", width/2, 3, 3, 3)
	bn("visual.bn1", width/2)
	w("visual.conv2.weight", width/2, width/2, 3, 3)
	bn("visual.bn2", width/2)
	w("visual.conv3.weight", width, width/2, 3, 3)
	bn("visual.bn3", width)
	in := int64(width)
	for st, n := range []int{3, 4, 6, 3} {
		p := int64(width << st)
		for i := range n {
			pre := fmt.Sprintf("visual.layer%d.%d.", st+1, i)
			w(pre+"conv1.weight", p, in, 1, 1)
			bn(pre+"bn1", p)
			w(pre+"conv2.weight", p, p, 3, 3)
			bn(pre+"bn2", p)
			w(pre+"conv3.weight", 4*p, p, 1, 1)
			bn(pre+"bn3", 4*p)
			if i == 0 {
				w(pre+"downsample.0.weight", 4*p, in, 1, 1)
				bn(pre+"downsample.1", 4*p)
			}
			in = 4 * p
		}
	}
	w("visual.attnpool.positional_embedding", 50, d)
	for _, n := range []string{"q", "k", "v"} {
		w("visual.attnpool."+n+"_proj.weight", d, d)
		w("visual.attnpool."+n+"_proj.bias", d)
	}
	w("visual.attnpool.c_proj.weight", embed, d)
	w("visual.attnpool.c_proj.bias", embed)
	w("token_embedding.weight", 49408, txt)
	w("positional_embedding", 77, txt)
	for i := range 12 {
		pre := fmt.Sprintf("transformer.resblocks.%d.", i)
		w(pre+"attn.in_proj_weight", 3*txt, txt)
		w(pre+"attn.in_proj_bias", 3*txt)
		w(pre+"attn.out_proj.weight", txt, txt)
		w(pre+"attn.out_proj.bias", txt)
		bn(pre+"ln_1", txt) // weight 1, bias 0 (running_* removed below)
		w(pre+"mlp.c_fc.weight", 4*txt, txt)
		w(pre+"mlp.c_fc.bias", 4*txt)
		w(pre+"mlp.c_proj.weight", txt, 4*txt)
		w(pre+"mlp.c_proj.bias", txt)
		bn(pre+"ln_2", txt)
	}
	bn("ln_final", txt)
	w("text_projection", txt, embed)
	for name, t := range sd.Tensors {
		if strings.Contains(name, "ln_") && (strings.HasSuffix(name, "running_mean") || strings.HasSuffix(name, "running_var")) {
			t.Close()
			delete(sd.Tensors, name)
		}
	}
	if err := s.Err(); err != nil {
		b.Fatal(err)
	}
	return sd
}

func newRN50(b *testing.B) *Model {
	b.Helper()
	sd := rn50StateDict(b)
	defer sd.Close()
	c, err := clip.FromStateDict(sd, clip.Options{})
	if err != nil {
		b.Fatal(err)
	}
	m, err := New(c, Options{})
	if err != nil {
		c.Close()
		b.Fatal(err)
	}
	b.Cleanup(m.Close)
	return m
}

func benchInputs(s *torch.Scope, n int) (*torch.Tensor, []string) {
	prompts := make([]string, n)
	for i := range prompts {
		prompts[i] = fmt.Sprintf("a photo of a cat number %d", i%4)
	}
	return s.Randn(torch.Float32, int64(n), 3, 512, 512), prompts
}

// Scoring at RN50 geometry, 512×512 (eval mode, no autograd).
func BenchmarkScoreRN50(b *testing.B) {
	m := newRN50(b)
	for _, n := range []int{1, 32} {
		b.Run(fmt.Sprintf("batch=%d", n), func(b *testing.B) {
			for b.Loop() {
				s := torch.NewScope().WithGrad(torch.InferenceMode)
				px, prompts := benchInputs(s, n)
				m.Forward(s, px, prompts, false)
				if err := s.Err(); err != nil {
					b.Fatal(err)
				}
				s.Close()
			}
			b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "img/s")
		})
	}
}

// One official training step (train mode, MSE, backward, AdamW) at RN50
// geometry, 512×512.
func BenchmarkTrainStepRN50(b *testing.B) {
	m := newRN50(b)
	opts := optim.AdamWDefaults()
	opts.LR, opts.WeightDecay = 1e-5, 0
	opt, err := optim.NewAdamW(m.ParamGroups(10, 0), opts)
	if err != nil {
		b.Fatal(err)
	}
	defer opt.Close()
	for _, n := range []int{8, 32} {
		b.Run(fmt.Sprintf("batch=%d", n), func(b *testing.B) {
			for b.Loop() {
				s := torch.NewScope()
				px, prompts := benchInputs(s, n)
				scores := m.Forward(s, px, prompts, true)
				loss := s.MSELoss(scores, s.Zeros(torch.Float32, int64(n), 2))
				if err := s.Err(); err != nil {
					b.Fatal(err)
				}
				if err := loss.Backward(); err != nil {
					b.Fatal(err)
				}
				s.Close()
				if err := opt.Step(); err != nil {
					b.Fatal(err)
				}
				if err := opt.ZeroGrad(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
