package optim

import "math"

// Schedule gives a group's learning rate at schedule step t (0 for the first
// step or epoch) from the group's initial learning rate. It is a pure
// function of t, so a resumed run recomputes its lr exactly; values equal
// PyTorch's closed forms (its schedulers' recursive updates agree to a few
// ulps).
type Schedule interface {
	LR(initial float64, t int) float64
}

// Apply sets every group's learning rate to s at step t.
func Apply(o Optimizer, s Schedule, t int) {
	for g := 0; g < o.NumGroups(); g++ {
		o.SetLR(g, s.LR(o.InitialLR(g), t))
	}
}

// Interval says what a schedule step counts.
type Interval int

// Schedule intervals.
const (
	// PerEpoch advances the schedule once per epoch.
	PerEpoch Interval = iota
	// PerStep advances it once per optimizer step.
	PerStep
)

// Tick is the schedule step of optimizer step `step` (0-based, within
// epoch) of 0-based epoch `epoch`, with stepsPerEpoch steps an epoch.
func (iv Interval) Tick(epoch, stepsPerEpoch, step int) int {
	if iv == PerStep {
		return epoch*stepsPerEpoch + step
	}
	return epoch
}

// Constant keeps the initial learning rate.
type Constant struct{}

// LR returns initial.
func (Constant) LR(initial float64, _ int) float64 { return initial }

// LinearWarmup ramps the learning rate linearly from StartFactor·initial at
// t = 0 to initial at t = Steps, then keeps it (torch.optim.lr_scheduler
// .LinearLR(start_factor, end_factor=1, total_iters=Steps)).
type LinearWarmup struct {
	Steps       int
	StartFactor float64
}

// LR is the warmed-up learning rate at t.
func (w LinearWarmup) LR(initial float64, t int) float64 {
	if t >= w.Steps || w.Steps <= 0 {
		return initial
	}
	return initial * (w.StartFactor + (1-w.StartFactor)*float64(max(t, 0))/float64(w.Steps))
}

// WarmupCosine is a linear warm-up over Warmup steps (see LinearWarmup),
// then cosine annealing from initial to MinLR over the remaining Total -
// Warmup steps, staying at MinLR afterwards (SequentialLR of LinearLR and
// CosineAnnealingLR(T_max = Total-Warmup, eta_min = MinLR), milestone
// Warmup). Warmup 0 is plain CosineAnnealingLR.
type WarmupCosine struct {
	Warmup      int
	StartFactor float64
	Total       int
	MinLR       float64
}

// LR is the learning rate at t.
func (c WarmupCosine) LR(initial float64, t int) float64 {
	if t < c.Warmup {
		return LinearWarmup{Steps: c.Warmup, StartFactor: c.StartFactor}.LR(initial, t)
	}
	span := c.Total - c.Warmup
	if span <= 0 || t >= c.Total {
		return c.MinLR
	}
	return cosine(initial, c.MinLR, t-c.Warmup, span)
}

// ConstantWarmupCosine is the Dassl schedule of the official CLIP-AGIQA
// runs: WarmupLR for the first Warmup steps, then CosineAnnealingLR(T_max =
// TMax, eta_min = MinLR) whose clock starts after the warm-up (Dassl's
// ConstantWarmupScheduler steps its successor only once the warm-up is over).
type ConstantWarmupCosine struct {
	Warmup   int
	WarmupLR float64
	TMax     int
	MinLR    float64
}

// LR is the learning rate at t.
func (c ConstantWarmupCosine) LR(initial float64, t int) float64 {
	if t < c.Warmup {
		return c.WarmupLR
	}
	return cosine(initial, c.MinLR, t-c.Warmup, c.TMax)
}

// cosine is CosineAnnealingLR's closed form.
func cosine(base, min float64, t, tMax int) float64 {
	return min + (base-min)*(1+math.Cos(math.Pi*float64(t)/float64(tMax)))/2
}
