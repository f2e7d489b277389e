package optim

import (
	"fmt"
	"math"

	"github.com/clipagiqa/clipagiqa/torch"
	"github.com/clipagiqa/clipagiqa/torch/ptfile"
)

// GradScaler is dynamic loss scaling for fp16 mixed-precision training,
// with the rule of torch.cuda.amp.GradScaler: the loss is multiplied by the
// scale before backward so small fp16 gradients do not flush to zero; the
// gradients are divided back (Unscale) before clipping and the update; a
// step whose gradients hold an inf or NaN is skipped and the scale backs
// off, and after GrowthInterval clean steps in a row it grows.
//
// The scale is a float32, as PyTorch's scale tensor, so the sequence of
// scales (and the saved state) is the same number for number.
type GradScaler struct {
	scale          float32
	growthFactor   float64
	backoffFactor  float64
	growthInterval int64
	growthTracker  int64 // clean steps since the last growth or backoff
}

// GradScaler defaults (torch.cuda.amp.GradScaler()).
const (
	DefaultInitScale      = 65536.0
	DefaultGrowthFactor   = 2.0
	DefaultBackoffFactor  = 0.5
	DefaultGrowthInterval = 2000
)

// NewGradScaler returns a scaler with PyTorch's defaults: scale 65536,
// doubled after 2000 clean steps, halved on an inf/NaN step.
func NewGradScaler() *GradScaler {
	g, _ := NewGradScalerWith(DefaultInitScale, DefaultGrowthFactor, DefaultBackoffFactor, DefaultGrowthInterval)
	return g
}

// NewGradScalerWith returns a scaler with the given settings (PyTorch's
// GradScaler(init_scale, growth_factor, backoff_factor, growth_interval)).
func NewGradScalerWith(initScale, growthFactor, backoffFactor float64, growthInterval int64) (*GradScaler, error) {
	switch {
	case !(initScale > 0) || math.IsInf(initScale, 0):
		return nil, fmt.Errorf("grad scaler: init scale %v must be positive and finite", initScale)
	case !(growthFactor > 1) || math.IsInf(growthFactor, 0):
		return nil, fmt.Errorf("grad scaler: growth factor %v must be > 1", growthFactor)
	case !(backoffFactor > 0 && backoffFactor < 1):
		return nil, fmt.Errorf("grad scaler: backoff factor %v must be in (0, 1)", backoffFactor)
	case growthInterval <= 0:
		return nil, fmt.Errorf("grad scaler: growth interval %d must be positive", growthInterval)
	}
	return &GradScaler{scale: float32(initScale), growthFactor: growthFactor, backoffFactor: backoffFactor, growthInterval: growthInterval}, nil
}

// Scale is the current loss scale.
func (g *GradScaler) Scale() float64 { return float64(g.scale) }

// GrowthTracker is the number of clean steps since the scale last changed.
func (g *GradScaler) GrowthTracker() int64 { return g.growthTracker }

// ScaleLoss returns loss × scale, the tensor to run backward from.
func (g *GradScaler) ScaleLoss(s *torch.Scope, loss *torch.Tensor) *torch.Tensor {
	return s.MulScalar(loss, float64(g.scale))
}

// Unscale divides every parameter's gradient by the scale in place and
// reports whether any of them held an inf or NaN (checked on the scaled
// values, as PyTorch's _amp_foreach_non_finite_check_and_unscale_).
// Parameters without a gradient are skipped.
func (g *GradScaler) Unscale(params []*torch.Tensor) (foundInf bool, err error) {
	// PyTorch: inv_scale = scale.double().reciprocal().float().
	inv := float64(float32(1 / float64(g.scale)))
	s := torch.NewScope().WithGrad(torch.NoGrad)
	defer s.Close()
	var probes []*torch.Tensor
	for i, p := range params {
		gr, err := p.Grad()
		if err != nil {
			return false, fmt.Errorf("grad scaler: gradient of parameter %d: %w", i, err)
		}
		if gr == nil {
			continue
		}
		s.Adopt(gr)
		// x·0 is 0 for every finite x and NaN for ±inf and NaN, so one sum
		// per gradient (and one host read for all) finds any non-finite value.
		probes = append(probes, s.Sum(s.MulScalar(gr, 0), false))
		if err := s.Err(); err != nil {
			return false, fmt.Errorf("grad scaler: parameter %d: %w", i, err)
		}
		if err := gr.CopyFrom(s.MulScalar(gr, inv)); err != nil {
			return false, fmt.Errorf("grad scaler: unscale parameter %d: %w", i, err)
		}
		if err := s.Err(); err != nil {
			return false, fmt.Errorf("grad scaler: unscale parameter %d: %w", i, err)
		}
	}
	if len(probes) == 0 {
		return false, nil
	}
	total := s.Sum(s.Stack(0, probes...), false)
	if err := s.Err(); err != nil {
		return false, fmt.Errorf("grad scaler: %w", err)
	}
	v, err := total.Item()
	if err != nil {
		return false, fmt.Errorf("grad scaler: %w", err)
	}
	return v != 0, nil
}

// Update moves the scale after a step (PyTorch's _amp_update_scale_): a
// step with non-finite gradients multiplies it by the backoff factor and
// restarts the count; otherwise the count grows, and on reaching the
// growth interval the scale is multiplied by the growth factor (kept only
// if still finite in float32) and the count restarts.
func (g *GradScaler) Update(foundInf bool) {
	if foundInf {
		g.scale = float32(float64(g.scale) * g.backoffFactor)
		g.growthTracker = 0
		return
	}
	clean := g.growthTracker + 1
	if clean < g.growthInterval {
		g.growthTracker = clean
		return
	}
	if grown := float32(float64(g.scale) * g.growthFactor); !math.IsInf(float64(grown), 0) && !math.IsNaN(float64(grown)) {
		g.scale = grown
	}
	g.growthTracker = 0
}

// StateDict is GradScaler.state_dict(): {"scale", "growth_factor",
// "backoff_factor", "growth_interval", "_growth_tracker"}.
func (g *GradScaler) StateDict() *ptfile.Dict {
	d := ptfile.NewDict(ptfile.KindDict)
	d.Set("scale", float64(g.scale))
	d.Set("growth_factor", g.growthFactor)
	d.Set("backoff_factor", g.backoffFactor)
	d.Set("growth_interval", g.growthInterval)
	d.Set("_growth_tracker", g.growthTracker)
	return d
}

// LoadStateDict restores a StateDict (ours or PyTorch's); on error nothing
// has changed.
func (g *GradScaler) LoadStateDict(sd *ptfile.Dict) error {
	if sd == nil || sd.Len() == 0 {
		return fmt.Errorf("grad scaler: the state dict is empty (saved without a scaler)")
	}
	num := func(key string) (float64, error) {
		v, err := ptfile.GetFloat(sd, key)
		if err != nil {
			return 0, fmt.Errorf("grad scaler state: %w", err)
		}
		return v, nil
	}
	scale, err := num("scale")
	if err != nil {
		return err
	}
	growth, err := num("growth_factor")
	if err != nil {
		return err
	}
	backoff, err := num("backoff_factor")
	if err != nil {
		return err
	}
	interval, err := ptfile.GetInt(sd, "growth_interval")
	if err != nil {
		return fmt.Errorf("grad scaler state: %w", err)
	}
	tracker, err := ptfile.GetInt(sd, "_growth_tracker")
	if err != nil {
		return fmt.Errorf("grad scaler state: %w", err)
	}
	n, err := NewGradScalerWith(scale, growth, backoff, interval)
	if err != nil {
		return fmt.Errorf("grad scaler state: %w", err)
	}
	if tracker < 0 || tracker >= interval {
		return fmt.Errorf("grad scaler state: _growth_tracker %d outside [0, growth_interval %d)", tracker, interval)
	}
	n.growthTracker = tracker
	*g = *n
	return nil
}
