package agiqa

import (
	"fmt"
	"sort"
	"strings"

	"github.com/clipagiqa/clipagiqa/torch"
	"github.com/clipagiqa/clipagiqa/torch/optim"
	"github.com/clipagiqa/clipagiqa/torch/ptfile"
)

// Optimizer is the official pair of SGD optimisers (Dassl builds one per
// registered module): one over the prompt learner's ctx, one over the
// regressor, with the same hyper-parameters and schedule.
type Optimizer struct {
	ctx *optim.SGD
	reg *optim.SGD
}

// Module prefixes of the two official optimisers.
const (
	promptLearnerPrefix = "prompt_learner."
	regressionPrefix    = "regression."
)

// NamedParams are the trainable tensors under the official CustomCLIP names
// (the model owns them).
func (m *Model) NamedParams() []optim.Param {
	return []optim.Param{
		{Name: "prompt_learner.ctx", T: m.Ctx},
		{Name: "regression.1.weight", T: m.W1},
		{Name: "regression.1.bias", T: m.B1},
		{Name: "regression.4.weight", T: m.W2},
		{Name: "regression.4.bias", T: m.B2},
	}
}

func withPrefix(ps []optim.Param, prefix string) []optim.Param {
	var out []optim.Param
	for _, p := range ps {
		if strings.HasPrefix(p.Name, prefix) {
			out = append(out, p)
		}
	}
	return out
}

// NewOptimizer creates SGD(lr, momentum, weight decay) over m's parameters.
func NewOptimizer(m *Model, lr, momentum, weightDecay float64) (*Optimizer, error) {
	opts := optim.SGDOptions{LR: lr, Momentum: momentum, WeightDecay: weightDecay}
	ps := m.NamedParams()
	c, err := optim.NewSGD(optim.Single(withPrefix(ps, promptLearnerPrefix)), opts)
	if err != nil {
		return nil, fmt.Errorf("prompt learner optimiser: %w", err)
	}
	r, err := optim.NewSGD(optim.Single(withPrefix(ps, regressionPrefix)), opts)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("regression optimiser: %w", err)
	}
	return &Optimizer{ctx: c, reg: r}, nil
}

// SetLR sets the learning rate of both optimisers.
func (o *Optimizer) SetLR(lr float64) {
	o.ctx.SetLR(0, lr)
	o.reg.SetLR(0, lr)
}

// LR is the current learning rate.
func (o *Optimizer) LR() float64 { return o.ctx.LR(0) }

// ZeroGrad clears all gradients.
func (o *Optimizer) ZeroGrad() error {
	if err := o.ctx.ZeroGrad(); err != nil {
		return err
	}
	return o.reg.ZeroGrad()
}

// Step updates all parameters.
func (o *Optimizer) Step() error {
	if err := o.ctx.Step(); err != nil {
		return err
	}
	return o.reg.Step()
}

// of is the optimiser that owns the named parameter.
func (o *Optimizer) of(name string) (*optim.SGD, error) {
	switch {
	case strings.HasPrefix(name, promptLearnerPrefix):
		return o.ctx, nil
	case strings.HasPrefix(name, regressionPrefix):
		return o.reg, nil
	}
	return nil, fmt.Errorf("no optimiser holds parameter %s", name)
}

// MomentumBuffer returns a new handle to the named parameter's momentum
// buffer, or nil before the first step.
func (o *Optimizer) MomentumBuffer(name string) (*torch.Tensor, error) {
	sgd, err := o.of(name)
	if err != nil {
		return nil, err
	}
	return sgd.MomentumBuffer(name)
}

// momentum is MomentumBuffer of the i-th name of paramNames.
func (o *Optimizer) momentum(i int) (*torch.Tensor, error) {
	if i < 0 || i >= len(paramNames) {
		return nil, fmt.Errorf("no parameter %d", i)
	}
	return o.MomentumBuffer(paramNames[i])
}

// StateDicts returns the two optimisers' state dicts in torch.optim.SGD's
// layout, keyed by module ("prompt_learner", "regression") as the official
// checkpoints store them.
func (o *Optimizer) StateDicts() (map[string]*ptfile.Dict, error) {
	c, err := o.ctx.StateDict()
	if err != nil {
		return nil, err
	}
	r, err := o.reg.StateDict()
	if err != nil {
		return nil, err
	}
	return map[string]*ptfile.Dict{"prompt_learner": c, "regression": r}, nil
}

// LoadStateDicts loads the two optimisers' state dicts (torch.optim.SGD
// layout, e.g. the "optimizer" entry of the official
// prompt_learner/regression checkpoints), momentum buffers and
// hyper-parameters (lr, initial_lr, ...), keyed as StateDicts returns them.
// On error neither optimiser has changed.
func (o *Optimizer) LoadStateDicts(sds map[string]*ptfile.Dict) error {
	for k := range sds {
		if k != "prompt_learner" && k != "regression" {
			return fmt.Errorf("optimiser state for unknown module %q", k)
		}
	}
	c, r := sds["prompt_learner"], sds["regression"]
	if c == nil || r == nil {
		return fmt.Errorf("optimiser state needs both prompt_learner and regression")
	}
	prev, err := o.ctx.StateDict()
	if err != nil {
		return err
	}
	if err := o.ctx.LoadStateDict(c); err != nil {
		return fmt.Errorf("prompt_learner optimiser: %w", err)
	}
	if err := o.reg.LoadStateDict(r); err != nil {
		if rerr := o.ctx.LoadStateDict(prev); rerr != nil {
			return fmt.Errorf("regression optimiser: %w (and restoring prompt_learner's: %v)", err, rerr)
		}
		return fmt.Errorf("regression optimiser: %w", err)
	}
	return nil
}

// RestoreMomentum loads momentum buffers from a checkpoint (for --resume),
// by parameter name.
func (o *Optimizer) RestoreMomentum(m *Model, ck *Checkpoint) error {
	names := make([]string, 0, len(ck.Momentum))
	for n := range ck.Momentum {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		r := ck.Momentum[n]
		if r == nil {
			continue
		}
		sgd, err := o.of(n)
		if err != nil {
			return fmt.Errorf("momentum %s: %w", n, err)
		}
		t, err := rawToDevice(r, m.CLIP.Device())
		if err != nil {
			return fmt.Errorf("momentum %s: %w", n, err)
		}
		err = sgd.SetMomentumBuffer(n, t)
		t.Close()
		if err != nil {
			return fmt.Errorf("momentum %s: %w", n, err)
		}
	}
	return nil
}

// Close frees the momentum buffers.
func (o *Optimizer) Close() {
	o.ctx.Close()
	o.reg.Close()
}

// LRAt is the learning rate of 0-based epoch under the official schedule:
// a constant warmupLR for the first warmupEpochs epochs, then cosine
// annealing of baseLR with T_max = epochs, whose clock starts after the
// warm-up (Dassl's ConstantWarmupScheduler steps its CosineAnnealingLR
// successor only once the warm-up is over).
func LRAt(epoch, epochs, warmupEpochs int, baseLR, warmupLR float64) float64 {
	return optim.ConstantWarmupCosine{Warmup: warmupEpochs, WarmupLR: warmupLR, TMax: epochs}.LR(baseLR, epoch)
}

// TrainStep runs one optimisation step on normalised image features [N, E]
// (computed by ImageFeatures, possibly cached) against mos, and returns the
// loss. The text path runs with grad so ctx learns. It is one process's step:
// data-parallel training goes through Train (the generic trainer averages
// the gradients across ranks).
func (m *Model) TrainStep(opt *Optimizer, imgFeat *torch.Tensor, mos []float32) (float64, error) {
	s := torch.NewScope()
	defer s.Close()
	if err := opt.ZeroGrad(); err != nil {
		return 0, err
	}
	pred := m.Head(s, imgFeat, m.TextFeatures(s), true)
	loss := s.MSELoss(pred, s.FromFloat32On(m.CLIP.Device(), mos, int64(len(mos))))
	if err := s.Err(); err != nil {
		return 0, fmt.Errorf("train step: %w", err)
	}
	if err := loss.Backward(); err != nil {
		return 0, fmt.Errorf("train step: %w", err)
	}
	l, err := loss.Item()
	if err != nil {
		return 0, fmt.Errorf("train step: %w", err)
	}
	if err := opt.Step(); err != nil {
		return 0, fmt.Errorf("train step: %w", err)
	}
	return l, nil
}
