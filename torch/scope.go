package torch

// #include "shim.h"
import "C"

import (
	"fmt"
	"strings"
)

// GradMode says whether ops record autograd history.
type GradMode int32

// Grad modes.
const (
	GradEnabled   GradMode = C.CT_GRAD_ENABLED
	NoGrad        GradMode = C.CT_NO_GRAD
	InferenceMode GradMode = C.CT_INFERENCE
)

// Scope owns the tensors its ops create and frees them all on Close, so a
// loop that opens a scope per batch keeps its memory flat. It also carries the
// grad mode and autocast setting of its ops, and the first error any op met:
// after an error, ops return nil and do nothing, and Err reports it. A Scope is
// used by one goroutine at a time.
type Scope struct {
	owned  []*Tensor
	err    error
	mode   C.ct_mode
	device Device
	parent *Scope
}

// NewScope returns a scope with grad enabled and no autocast.
func NewScope() *Scope {
	s := &Scope{mode: C.ct_mode{grad: C.CT_GRAD_ENABLED, autocast_dtype: -1}}
	s.err = CheckRuntime()
	return s
}

// WithGrad sets the grad mode of the scope's ops and returns s.
func (s *Scope) WithGrad(m GradMode) *Scope {
	s.mode.grad = C.int32_t(m)
	return s
}

// WithAutocast enables CUDA autocast to dt (Float16 or BFloat16) for the
// scope's ops; dt < 0 disables it.
func (s *Scope) WithAutocast(dt DType) *Scope {
	s.mode.autocast_dtype = C.int32_t(dt)
	return s
}

// WithDevice sets the device used by the scope's constructors.
func (s *Scope) WithDevice(d Device) *Scope {
	s.device = d
	return s
}

// Device is where the scope's constructors place new tensors.
func (s *Scope) Device() Device { return s.device }

// Sub returns a child scope with the same settings and no tensors; close it to
// free intermediates early (per layer, say). Tensors to keep are moved out
// with Keep and into the parent with Adopt. Its first error reaches the parent
// on Close.
func (s *Scope) Sub() *Scope {
	return &Scope{mode: s.mode, device: s.device, err: s.err, parent: s}
}

// Err is the first error met by an op of this scope, with context.
func (s *Scope) Err() error { return s.err }

// Fail records err (with context) if no error was recorded yet.
func (s *Scope) Fail(err error) {
	if s.err == nil && err != nil {
		s.err = err
	}
}

// Close frees every tensor the scope still owns. Closing twice is harmless.
func (s *Scope) Close() {
	if s.parent != nil {
		s.parent.Fail(s.err)
	}
	for _, t := range s.owned {
		t.Close()
	}
	s.owned = nil
}

// Len is the number of tensors the scope owns.
func (s *Scope) Len() int { return len(s.owned) }

// Keep removes t from the scope so that it outlives Close; the caller owns it.
func (s *Scope) Keep(t *Tensor) *Tensor {
	if t == nil {
		return nil
	}
	for i := len(s.owned) - 1; i >= 0; i-- {
		if s.owned[i] == t {
			s.owned = append(s.owned[:i], s.owned[i+1:]...)
			break
		}
	}
	return t
}

// Adopt hands ownership of t to the scope.
func (s *Scope) Adopt(t *Tensor) *Tensor {
	if t != nil {
		s.owned = append(s.owned, t)
	}
	return t
}

func (s *Scope) track(h C.ct_tensor) *Tensor {
	t := wrap(h)
	if t != nil {
		s.owned = append(s.owned, t)
	}
	return t
}

// run executes one native op: it checks inputs, calls f and tracks the result.
func (s *Scope) run(name string, inputs []*Tensor, f func(in []C.ct_tensor, out *C.ct_tensor) C.ct_error) *Tensor {
	if s.err != nil {
		return nil
	}
	hs := make([]C.ct_tensor, len(inputs))
	for i, t := range inputs {
		if t == nil { // optional input
			continue
		}
		h, err := t.handle()
		if err != nil {
			s.err = fmt.Errorf("%s: input %d: %w", name, i, err)
			return nil
		}
		hs[i] = h
	}
	var out C.ct_tensor
	if err := cErr(f(hs, &out)); err != nil {
		s.err = fmt.Errorf("%s(%s): %w", name, describe(inputs), err)
		return nil
	}
	return s.track(out)
}

// required marks inputs that must not be nil.
func (s *Scope) required(name string, ts ...*Tensor) bool {
	if s.err != nil {
		return false
	}
	for i, t := range ts {
		if t == nil {
			s.err = fmt.Errorf("%s: input %d is nil", name, i)
			return false
		}
	}
	return true
}

func describe(ts []*Tensor) string {
	parts := make([]string, 0, len(ts))
	for _, t := range ts {
		if t == nil {
			parts = append(parts, "nil")
			continue
		}
		parts = append(parts, fmt.Sprintf("%v%v", t.DType(), t.Shape()))
	}
	return strings.Join(parts, ", ")
}

// ErrSafeDim returns dimension d of t's shape, or 0 (recording an error) when
// t is unusable or has fewer dimensions.
func (s *Scope) ErrSafeDim(t *Tensor, d int) int64 {
	sh := t.Shape()
	if d < 0 || d >= len(sh) {
		s.Fail(fmt.Errorf("tensor has shape %v, no dimension %d", sh, d))
		return 0
	}
	return sh[d]
}
