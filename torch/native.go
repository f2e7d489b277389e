package torch

import "unsafe"

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
