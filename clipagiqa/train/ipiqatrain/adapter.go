// Package ipiqatrain plugs IP-IQA (clipagiqa/ipiqa) into the generic
// trainer: it loads and augments images as the official code does
// (Resize((S, S)) bicubic, RandomHorizontalFlip for training), forwards them
// with BatchNorm in train mode, and writes checkpoints in the official
// layout (ipiqa.SaveOfficial), so official checkpoints resume with their
// AdamW state.
package ipiqatrain

import (
	"context"
	"fmt"
	"runtime"
	"sync"

	"github.com/clipagiqa/clipagiqa/clipagiqa/imageprep"
	"github.com/clipagiqa/clipagiqa/clipagiqa/ipiqa"
	"github.com/clipagiqa/clipagiqa/clipagiqa/train"
	"github.com/clipagiqa/clipagiqa/torch"
	"github.com/clipagiqa/clipagiqa/torch/nn"
	"github.com/clipagiqa/clipagiqa/torch/optim"
	"github.com/clipagiqa/clipagiqa/torch/ptfile"
)

// Sample is one training or evaluation image with its prompt and one
// target per model output (quality, then alignment).
type Sample struct {
	Name, Path, Prompt string
	Targets            []float64
}

// Options tune the data path.
type Options struct {
	// Augment flips each training image horizontally with probability 0.5
	// (the official image_train_processor), drawn from
	// train.SampleSeed(Seed, epoch, index) so it does not depend on batching.
	Augment bool
	Seed    uint64
	// EvalBatch is the evaluation batch size (0: 32).
	EvalBatch int
	// Workers decode images in parallel (0: runtime.NumCPU()).
	Workers int
	// Gather, in data-parallel training, shards evaluation: each rank
	// scores a contiguous block of every part and the blocks are
	// all-gathered (*dist.DataParallel provides it; nil: every rank
	// scores everything).
	Gather Gatherer
	// Autocast runs the training forward under CUDA autocast to Float16 or
	// BFloat16 (0: fp32); the weights stay fp32 (see MixedPrecision).
	Autocast torch.DType
	// Scaler is fp16's loss scaler, saved in the checkpoints' "scaler"
	// field and restored on resume (nil: None).
	Scaler *optim.GradScaler
}

// Gatherer is what sharded evaluation needs from a process group.
type Gatherer interface {
	Rank() int
	WorldSize() int
	// AllGatherFloat32 concatenates equal-length slices of all ranks in rank order.
	AllGatherFloat32(local []float32) ([]float32, error)
}

// Model is IP-IQA as a train.Model (and train.BufferedModel: BatchNorm's
// running statistics are broadcast from rank 0 in data-parallel training).
type Model struct {
	m     *ipiqa.Model
	train []Sample
	parts map[string][]Sample
	prep  imageprep.Options
	opts  Options
}

// New wraps m for training on trainSet, evaluating the named parts. Every
// sample needs one target per model output.
func New(m *ipiqa.Model, trainSet []Sample, parts map[string][]Sample, opts Options) (*Model, error) {
	k := m.Options().Outputs
	check := func(part string, ss []Sample) error {
		for _, s := range ss {
			if len(s.Targets) != k {
				return fmt.Errorf("ipiqa training: %s image %s has %d targets, the model %d outputs", part, s.Name, len(s.Targets), k)
			}
		}
		return nil
	}
	if err := check("training", trainSet); err != nil {
		return nil, err
	}
	for name, ss := range parts {
		if err := check(name, ss); err != nil {
			return nil, err
		}
	}
	if opts.EvalBatch <= 0 {
		opts.EvalBatch = 32
	}
	if opts.Workers <= 0 {
		opts.Workers = runtime.NumCPU()
	}
	return &Model{m: m, train: trainSet, parts: parts, prep: ipiqa.PreprocessOptions(m.Options().InputResolution), opts: opts}, nil
}

// EvalParts are the trainer's evaluation parts in the given order.
func (a *Model) EvalParts(names ...string) []train.EvalPart {
	var out []train.EvalPart
	for _, n := range names {
		ss, ok := a.parts[n]
		if !ok || len(ss) == 0 {
			continue
		}
		t := make([][]float64, len(ss))
		for i, s := range ss {
			t[i] = s.Targets
		}
		out = append(out, train.EvalPart{Name: n, Targets: t})
	}
	return out
}

// Trainable lists IP-IQA's trainable tensors by official name.
func (a *Model) Trainable() []nn.NamedParam { return a.m.Store().Trainable() }

// Buffers lists the BatchNorm buffers.
func (a *Model) Buffers() []nn.NamedParam { return a.m.Store().Buffers() }

// pixels decodes and preprocesses samples ss[idx[j]] in parallel into one
// [n, 3, S, S] buffer; flip(j) says whether image j is mirrored.
func (a *Model) pixels(ctx context.Context, ss []Sample, idx []int, flip func(j int) bool) ([]float32, error) {
	size := a.prep.TensorLen()
	out := make([]float32, len(idx)*size)
	errs := make([]error, len(idx))
	var wg sync.WaitGroup
	next := make(chan int)
	for range min(a.opts.Workers, len(idx)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range next {
				s := ss[idx[j]]
				img, err := imageprep.DecodeFile(s.Path, a.prep.MaxPixels)
				if err == nil {
					err = imageprep.ResizedCropInto(out[j*size:(j+1)*size], img, 0, 0, img.W, img.H, flip(j), a.prep)
				}
				if err != nil {
					errs[j] = fmt.Errorf("image %s: %w", s.Name, err)
				}
			}
		}()
	}
	for j := range idx {
		if ctx.Err() != nil {
			break
		}
		next <- j
	}
	close(next)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

func (a *Model) prompts(ss []Sample, idx []int) ([][]int64, error) {
	p := make([]string, len(idx))
	for j, i := range idx {
		p[j] = ss[i].Prompt
	}
	return a.m.Tokenize(p)
}

func (a *Model) targets(ss []Sample, idx []int) []float32 {
	var t []float32
	for _, i := range idx {
		for _, v := range ss[i].Targets {
			t = append(t, float32(v))
		}
	}
	return t
}

// TrainBatch forwards b's images in training mode: [B, outputs] scores
// and their MOS targets.
func (a *Model) TrainBatch(s *torch.Scope, b train.Batch) (*torch.Tensor, *torch.Tensor) {
	flip := func(j int) bool {
		return a.opts.Augment && train.SampleSeed(a.opts.Seed, b.Epoch, b.Indices[j])&1 == 1
	}
	px, err := a.pixels(context.Background(), a.train, b.Indices, flip)
	if err != nil {
		s.Fail(err)
		return nil, nil
	}
	ids, err := a.prompts(a.train, b.Indices)
	if err != nil {
		s.Fail(err)
		return nil, nil
	}
	n, r, k := int64(len(b.Indices)), int64(a.prep.Size), int64(a.m.Options().Outputs)
	dev := a.m.CLIP().Device()
	if a.opts.Autocast != 0 {
		s.WithAutocast(a.opts.Autocast)
	}
	out := a.m.ForwardIDs(s, s.FromFloat32On(dev, px, n, 3, r, r), ids, true).Scores
	if a.opts.Autocast != 0 { // the loss in fp32, as autocast's mse_loss
		out = s.Cast(out, torch.Float32)
	}
	return out, s.FromFloat32On(dev, a.targets(a.train, b.Indices), n, k)
}

// Predict scores a part in eval mode, EvalBatch images at a time; with
// Options.Gather each rank scores its block and the blocks are gathered.
func (a *Model) Predict(ctx context.Context, part string) ([][]float64, error) {
	ss, ok := a.parts[part]
	if !ok {
		return nil, fmt.Errorf("no evaluation part %q", part)
	}
	g := a.opts.Gather
	if g == nil || g.WorldSize() <= 1 {
		return a.predictRange(ctx, ss, 0, len(ss))
	}
	return a.predictSharded(ctx, ss, g)
}

// predictRange scores ss[lo:hi].
func (a *Model) predictRange(ctx context.Context, ss []Sample, lo, hi int) ([][]float64, error) {
	k := a.m.Options().Outputs
	out := make([][]float64, 0, hi-lo)
	for b := lo; b < hi; b += a.opts.EvalBatch {
		idx := make([]int, 0, a.opts.EvalBatch)
		for i := b; i < min(b+a.opts.EvalBatch, hi); i++ {
			idx = append(idx, i)
		}
		scores, err := a.score(ctx, ss, idx)
		if err != nil {
			return nil, err
		}
		for j := range idx {
			out = append(out, scores[j*k:(j+1)*k])
		}
	}
	return out, nil
}

// span is rank r's contiguous block of n items split w ways.
func span(n, r, w int) (int, int) { return r * n / w, (r + 1) * n / w }

// predictSharded scores this rank's block and all-gathers every rank's.
// Each block carries a status value first, so a rank that failed (an
// unreadable image) still joins the collective and every rank reports it.
func (a *Model) predictSharded(ctx context.Context, ss []Sample, g Gatherer) ([][]float64, error) {
	k, w := a.m.Options().Outputs, g.WorldSize()
	longest := 0
	for r := range w {
		lo, hi := span(len(ss), r, w)
		longest = max(longest, hi-lo)
	}
	lo, hi := span(len(ss), g.Rank(), w)
	mine, err := a.predictRange(ctx, ss, lo, hi)
	block := make([]float32, 1+longest*k)
	if err == nil {
		block[0] = 1
		for i, row := range mine {
			for o, v := range row {
				block[1+i*k+o] = float32(v)
			}
		}
	}
	all, gerr := g.AllGatherFloat32(block)
	if err != nil {
		return nil, err
	}
	if gerr != nil {
		return nil, fmt.Errorf("gathering evaluation scores: %w", gerr)
	}
	if len(all) != w*len(block) {
		return nil, fmt.Errorf("gathered %d evaluation values, want %d", len(all), w*len(block))
	}
	out := make([][]float64, 0, len(ss))
	for r := range w {
		b := all[r*len(block) : (r+1)*len(block)]
		if b[0] != 1 {
			return nil, fmt.Errorf("evaluation failed on rank %d (its log names the image)", r)
		}
		rlo, rhi := span(len(ss), r, w)
		for i := range rhi - rlo {
			row := make([]float64, k)
			for o := range k {
				row[o] = float64(b[1+i*k+o])
			}
			out = append(out, row)
		}
	}
	return out, nil
}

func (a *Model) score(ctx context.Context, ss []Sample, idx []int) ([]float64, error) {
	px, err := a.pixels(ctx, ss, idx, func(int) bool { return false })
	if err != nil {
		return nil, err
	}
	ids, err := a.prompts(ss, idx)
	if err != nil {
		return nil, err
	}
	s := torch.NewScope().WithGrad(torch.InferenceMode)
	defer s.Close()
	r := int64(a.prep.Size)
	out := a.m.ForwardIDs(s, s.FromFloat32On(a.m.CLIP().Device(), px, int64(len(idx)), 3, r, r), ids, false).Scores
	if err := s.Err(); err != nil {
		return nil, err
	}
	return out.Float64s()
}

// SaveCheckpoint writes the official layout (ipiqa.SaveOfficial).
func (a *Model) SaveCheckpoint(path string, opt optim.Optimizer, config *ptfile.Dict, epoch int) error {
	var os ipiqa.OptimizerState
	if opt != nil {
		os = opt
	}
	var scaler *ptfile.Dict
	if a.opts.Scaler != nil {
		scaler = a.opts.Scaler.StateDict()
	}
	var cfg any // a nil *ptfile.Dict would be a typed nil, not None
	if config != nil {
		cfg = config
	}
	return a.m.SaveOfficialScaler(path, os, cfg, scaler, int64(epoch))
}

// LoadCheckpoint reads an official-layout checkpoint (ours or the official
// code's) with its optimizer state.
func (a *Model) LoadCheckpoint(path string, opt optim.Optimizer) (any, int, error) {
	var os ipiqa.OptimizerState
	if opt != nil {
		os = opt
	}
	ck, err := a.m.LoadOfficial(path, os)
	if err != nil {
		return nil, 0, err
	}
	if err := restoreScaler(a.opts.Scaler, ck.Scaler, path); err != nil {
		return nil, 0, err
	}
	return ck.Config, int(ck.Epoch), nil
}

// Schedule are the official optimizer settings (ipiqa.yaml).
type Schedule struct {
	LR, WeightDecay, HeadScale float64
	Beta1, Beta2               float64
}

// OfficialSchedule is ipiqa.yaml's: AdamW lr 1e-5 (constant), betas (0.9,
// 0.999), weight decay 0, head groups at lr × 10.
func OfficialSchedule() Schedule {
	return Schedule{LR: 1e-5, WeightDecay: 0, HeadScale: 10, Beta1: 0.9, Beta2: 0.999}
}

// NewOptimizer is the official Trainer.optimizer: AdamW over
// get_optimizer_params (ipiqa.Model.ParamGroups).
func NewOptimizer(m *ipiqa.Model, sc Schedule) (*optim.Adam, error) {
	o := optim.AdamWDefaults()
	o.LR, o.WeightDecay, o.Betas = sc.LR, sc.WeightDecay, [2]float64{sc.Beta1, sc.Beta2}
	return optim.NewAdamW(m.ParamGroups(sc.HeadScale, sc.WeightDecay), o)
}

// Hyper are the settings a resume must agree with.
func (sc Schedule) Hyper() map[string]float64 {
	return map[string]float64{"lr": sc.LR, "weight_decay": sc.WeightDecay, "head_scale": sc.HeadScale, "beta1": sc.Beta1, "beta2": sc.Beta2}
}

// OfficialConfig is the checkpoint "config" in the official YAML's keys,
// so OptionsFromOfficial (and the official code) read the model settings.
func OfficialConfig(m *ipiqa.Model, sc Schedule, batch, epochs int, seed uint64, task string) *ptfile.Dict {
	o := m.Options()
	model := ptfile.NewDict(ptfile.KindDict)
	model.Set("arch", "ipiqa")
	model.Set("input_resolution", int64(o.InputResolution))
	model.Set("output_dim", int64(o.Outputs))
	model.Set("head_scale", sc.HeadScale)
	model.Set("use_mlp_head", true)
	model.Set("dropout_rate", o.Dropout)
	model.Set("freeze_text", o.Freezing != ipiqa.FreezeNone)
	model.Set("qa_token", !o.FreezeTokenEmbedding)
	run := ptfile.NewDict(ptfile.KindDict)
	run.Set("task", task)
	run.Set("lr_sched", "constant_lr")
	run.Set("init_lr", sc.LR)
	run.Set("weight_decay", sc.WeightDecay)
	run.Set("max_epoch", int64(epochs))
	run.Set("batch_size_train", int64(batch))
	run.Set("seed", int64(seed))
	root := ptfile.NewDict(ptfile.KindDict)
	root.Set("model", model)
	root.Set("run", run)
	return root
}
