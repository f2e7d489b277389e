package torch

// #include "shim.h"
import "C"

import (
	"fmt"
	"unsafe"
)

// NativeHandle returns t's at::Tensor* for packages with their own native
// bindings (torch/dist). The pointer stays owned by t: it is valid until
// t.Close and must not be freed by the caller.
func (t *Tensor) NativeHandle() (unsafe.Pointer, error) {
	h, err := t.handle()
	if err != nil {
		return nil, err
	}
	return unsafe.Pointer(h), nil
}

// RunNative runs a native op of a package with its own cgo bindings
// (torch/dist) as one of s's ops: f gets a pointer to s's ct_mode (grad mode
// and autocast, to pass on by value), the inputs' at::Tensor* (nil for nil
// inputs), and returns the new at::Tensor*, which s then owns. Errors are
// sticky as for every op.
func (s *Scope) RunNative(name string, inputs []*Tensor, f func(mode unsafe.Pointer, in []unsafe.Pointer) (unsafe.Pointer, error)) *Tensor {
	var opErr error
	t := s.run(name, inputs, func(in []C.ct_tensor, out *C.ct_tensor) C.ct_error {
		ptrs := make([]unsafe.Pointer, len(in))
		for i, h := range in {
			ptrs[i] = unsafe.Pointer(h)
		}
		mode := s.mode
		h, err := f(unsafe.Pointer(&mode), ptrs)
		if err != nil {
			opErr = err
			return nil
		}
		*out = C.ct_tensor(h)
		return nil
	})
	if opErr != nil {
		s.Fail(fmt.Errorf("%s: %w", name, opErr))
		return nil
	}
	return t
}
