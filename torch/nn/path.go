package nn

import (
	"fmt"
	"math"

	"github.com/clipagiqa/clipagiqa/torch"
)

// Path is a position in a Store's tree: a dotted prefix under which a module
// registers its tensors (tch-rs's nn::Path). Paths are small values; Sub
// descends.
type Path struct {
	store  *Store
	prefix string
}

// Sub returns the path of a child module ("layer1", or "0" for an index).
func (p Path) Sub(name string) Path { return Path{store: p.store, prefix: p.Name(name)} }

// Subf is Sub(fmt.Sprintf(format, args...)), handy for indexed children.
func (p Path) Subf(format string, args ...any) Path { return p.Sub(fmt.Sprintf(format, args...)) }

// Name is the full dotted name of leaf under p.
func (p Path) Name(leaf string) string {
	switch {
	case p.prefix == "":
		return leaf
	case leaf == "":
		return p.prefix
	}
	return p.prefix + "." + leaf
}

// Prefix is p's dotted path ("" for the root).
func (p Path) Prefix() string { return p.prefix }

// Store is the store p belongs to.
func (p Path) Store() *Store { return p.store }

func (p Path) ok() bool {
	return p.store != nil
}

// Init fills a new tensor of the given shape and dtype; it runs under no-grad.
type Init func(s *torch.Scope, dt torch.DType, shape []int64) *torch.Tensor

// Const fills with v.
func Const(v float64) Init {
	return func(s *torch.Scope, dt torch.DType, shape []int64) *torch.Tensor { return s.Full(v, dt, shape...) }
}

// Zeros and Ones are Const(0) and Const(1).
var (
	Zeros = Const(0)
	Ones  = Const(1)
)

// Uniform draws from U(lo, hi).
func Uniform(lo, hi float64) Init {
	return func(s *torch.Scope, dt torch.DType, shape []int64) *torch.Tensor {
		return s.AddScalar(s.MulScalar(s.Rand(dt, shape...), hi-lo), lo)
	}
}

// Normal draws from N(mean, std²).
func Normal(mean, std float64) Init {
	return func(s *torch.Scope, dt torch.DType, shape []int64) *torch.Tensor {
		return s.AddScalar(s.MulScalar(s.Randn(dt, shape...), std), mean)
	}
}

// KaimingUniform is PyTorch's default init of Linear and Conv2d weights and
// biases (kaiming_uniform_ with a=√5): U(-1/√fanIn, 1/√fanIn).
func KaimingUniform(fanIn int64) Init {
	b := 1 / math.Sqrt(float64(max(fanIn, 1)))
	return Uniform(-b, b)
}

func (p Path) create(name string, dt torch.DType, init Init, shape []int64) *torch.Tensor {
	s := torch.NewScope().WithGrad(torch.NoGrad).WithDevice(p.store.device)
	defer s.Close()
	t := init(s, dt, shape)
	if err := s.Err(); err != nil {
		p.store.fail(fmt.Errorf("init %s: %w", p.Name(name), err))
		return nil
	}
	if t == nil {
		p.store.fail(fmt.Errorf("init %s: initialiser returned nil", p.Name(name)))
		return nil
	}
	return s.Keep(t)
}

// NewParam creates a float32 parameter name under p, filled by init, trainable.
func (p Path) NewParam(name string, init Init, shape ...int64) *torch.Tensor {
	if !p.ok() {
		return nil
	}
	if p.store.err != nil {
		return nil
	}
	t := p.create(name, torch.Float32, init, shape)
	if t == nil {
		return nil
	}
	return p.store.add(p.Name(name), t, Parameter)
}

// NewBuffer creates a buffer name under p of dtype dt, filled by init.
func (p Path) NewBuffer(name string, dt torch.DType, init Init, shape ...int64) *torch.Tensor {
	if !p.ok() {
		return nil
	}
	if p.store.err != nil {
		return nil
	}
	t := p.create(name, dt, init, shape)
	if t == nil {
		return nil
	}
	return p.store.add(p.Name(name), t, Buffer)
}

// AddParam registers t as parameter name under p; the store takes ownership
// (and frees t if registration fails). t gets requires_grad.
func (p Path) AddParam(name string, t *torch.Tensor) *torch.Tensor {
	if !p.ok() {
		t.Close()
		return nil
	}
	return p.store.add(p.Name(name), t, Parameter)
}

// AddBuffer registers t as buffer name under p, taking ownership.
func (p Path) AddBuffer(name string, t *torch.Tensor) *torch.Tensor {
	if !p.ok() {
		t.Close()
		return nil
	}
	return p.store.add(p.Name(name), t, Buffer)
}

// SetOptional marks name under p as one LoadStateDict may find absent
// (keeping its current value), as PyTorch does for BatchNorm's
// num_batches_tracked in old checkpoints.
func (p Path) SetOptional(name string) {
	if !p.ok() {
		return
	}
	if e := p.store.index[p.Name(name)]; e != nil {
		e.optional = true
	}
}

// RegisterTagged registers the tensors of a struct declared with torch.Bind's
// `torch:"..."` tags under p: each non-nil *Tensor field becomes a parameter,
// or a buffer when its tag has the ",buffer" option, named by its tags; tags
// with ",optional" are optional for LoadStateDict. The store keeps its own
// handle to each tensor (shared storage), so the struct's owner still frees
// its fields (torch.CloseAll) and the store frees its handles; loading a
// state dict into the store updates the struct's tensors in place.
func (p Path) RegisterTagged(dst any) error {
	if !p.ok() {
		return errStore
	}
	err := torch.WalkTagged(dst, p.prefix, func(f torch.TaggedField) error {
		if *f.Ptr == nil {
			return nil
		}
		ref, err := (*f.Ptr).Clone()
		if err != nil {
			return fmt.Errorf("%s: %w", f.Name, err)
		}
		kind := Parameter
		if f.Buffer {
			kind = Buffer
		}
		if p.store.add(f.Name, ref, kind) == nil {
			return p.store.err
		}
		if f.Optional {
			p.store.index[f.Name].optional = true
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("register tagged %T under %q: %w", dst, p.prefix, err)
	}
	return nil
}

func (p Path) each(fn func(e *entry)) {
	if !p.ok() {
		return
	}
	for _, e := range p.store.entries {
		if under(e.name, p.prefix) {
			fn(e)
		}
	}
}

// Names lists the stored names under p in registration order.
func (p Path) Names() []string {
	var out []string
	p.each(func(e *entry) { out = append(out, e.name) })
	return out
}

// Parameters returns the parameters under p in registration order.
func (p Path) Parameters() []NamedParam {
	var out []NamedParam
	p.each(func(e *entry) {
		if e.kind == Parameter {
			out = append(out, NamedParam{Name: e.name, T: e.t})
		}
	})
	return out
}

// Trainable returns the parameters under p that are not frozen, in
// registration order (for optimizer parameter groups per sub-tree).
func (p Path) Trainable() []NamedParam {
	var out []NamedParam
	p.each(func(e *entry) {
		if e.kind == Parameter && e.trainable {
			out = append(out, NamedParam{Name: e.name, T: e.t})
		}
	})
	return out
}

// Buffers returns the buffers under p in registration order.
func (p Path) Buffers() []NamedParam {
	var out []NamedParam
	p.each(func(e *entry) {
		if e.kind == Buffer {
			out = append(out, NamedParam{Name: e.name, T: e.t})
		}
	})
	return out
}

// SetTrainable freezes (false) or unfreezes (true) every parameter under p:
// it sets requires_grad and whether Trainable yields the parameter.
func (p Path) SetTrainable(on bool) error {
	var err error
	p.each(func(e *entry) {
		if e.kind != Parameter || err != nil {
			return
		}
		if err = e.t.SetRequiresGrad(on); err != nil {
			err = fmt.Errorf("set trainable %s: %w", e.name, err)
			return
		}
		e.trainable = on
	})
	return err
}

// Freeze is IP-IQA's freeze_module on a module: every parameter under p
// stops training (SetTrainable(false)) and the sub-tree stays in eval mode
// through later Train calls (PinEval(true)).
func (p Path) Freeze() error {
	if !p.ok() {
		return errStore
	}
	if err := p.SetTrainable(false); err != nil {
		return err
	}
	p.PinEval(true)
	return nil
}

// Train sets the mode of the sub-tree at p, like module.train(on) on a
// submodule: modes set deeper are cleared. Pinned sub-trees stay in eval.
func (p Path) Train(on bool) {
	if !p.ok() {
		return
	}
	for k := range p.store.modes {
		if under(k, p.prefix) {
			delete(p.store.modes, k)
		}
	}
	if p.prefix == "" {
		p.store.training = on
		return
	}
	p.store.modes[p.prefix] = on
}

// Eval is Train(false).
func (p Path) Eval() { p.Train(false) }

// PinEval keeps the sub-tree at p in eval mode whatever Train calls follow
// (on it, an ancestor or the store), until PinEval(false): a frozen text
// tower whose Dropout must stay off while the rest trains.
func (p Path) PinEval(on bool) {
	if !p.ok() {
		return
	}
	if on {
		p.store.pinned[p.prefix] = true
	} else {
		delete(p.store.pinned, p.prefix)
	}
}

// Training reports the mode in effect at p: false inside a pinned sub-tree,
// else the mode of the nearest Train call at p or above, else the store's.
func (p Path) Training() bool {
	if !p.ok() {
		return false
	}
	return p.store.trainingAt(p.prefix)
}
