package clipagiqa

import (
	"fmt"
	"math"

	"github.com/clipagiqa/clipagiqa/torch"
)

// Optimizer is the official pair of SGD optimisers: one over the prompt
// learner's ctx, one over the regressor (same hyper-parameters).
type Optimizer struct {
	ctx *torch.SGD
	reg *torch.SGD
	// syncGrads, when set, runs between backward and the step (data-parallel
	// gradient averaging); it gets and returns the loss over n samples.
	syncGrads func(loss float64, n int) (float64, error)
}

// NewOptimizer creates SGD(lr, momentum, weight decay) over m's parameters.
func NewOptimizer(m *Model, lr, momentum, weightDecay float64) (*Optimizer, error) {
	opts := torch.SGDOptions{LR: lr, Momentum: momentum, WeightDecay: weightDecay}
	ps := m.Params()
	c, err := torch.NewSGD(ps[:1], opts)
	if err != nil {
		return nil, err
	}
	r, err := torch.NewSGD(ps[1:], opts)
	if err != nil {
		c.Close()
		return nil, err
	}
	return &Optimizer{ctx: c, reg: r}, nil
}

// SetLR sets the learning rate of both optimisers.
func (o *Optimizer) SetLR(lr float64) {
	o.ctx.Options.LR = lr
	o.reg.Options.LR = lr
}

// LR is the current learning rate.
func (o *Optimizer) LR() float64 { return o.ctx.Options.LR }

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

func (o *Optimizer) momentum(i int) (*torch.Tensor, error) {
	if i == 0 {
		return o.ctx.MomentumBuffer(0)
	}
	return o.reg.MomentumBuffer(i - 1)
}

// RestoreMomentum loads momentum buffers from a checkpoint (for --resume).
func (o *Optimizer) RestoreMomentum(m *Model, ck *Checkpoint) error {
	for i, n := range paramNames {
		r := ck.Momentum[n]
		if r == nil {
			continue
		}
		t, err := rawToDevice(r, m.CLIP.Device())
		if err != nil {
			return fmt.Errorf("momentum %s: %w", n, err)
		}
		if i == 0 {
			err = o.ctx.SetMomentumBuffer(0, t)
		} else {
			err = o.reg.SetMomentumBuffer(i-1, t)
		}
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
	if epoch < warmupEpochs {
		return warmupLR
	}
	return baseLR * 0.5 * (1 + math.Cos(math.Pi*float64(epoch-warmupEpochs)/float64(epochs)))
}

// TrainStep runs one optimisation step on normalised image features [N, E]
// (computed by ImageFeatures, possibly cached) against mos, and returns the
// loss. The text path runs with grad so ctx learns.
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
	if opt.syncGrads != nil {
		if l, err = opt.syncGrads(l, len(mos)); err != nil {
			return 0, fmt.Errorf("train step: %w", err)
		}
	}
	if err := opt.Step(); err != nil {
		return 0, fmt.Errorf("train step: %w", err)
	}
	return l, nil
}
