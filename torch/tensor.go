package torch

// #include <stdlib.h>
// #include "shim.h"
import "C"

import (
	"fmt"
	"runtime"
	"sync/atomic"
	"unsafe"

	"github.com/wangkuiyi/gotorch"
)

// Tensor is an owned handle to a libtorch tensor (an at::Tensor*). Close
// frees it; closing twice is harmless. Tensors made by a Scope are closed by
// the scope.
type Tensor struct {
	h unsafe.Pointer
}

var liveTensors atomic.Int64

// LiveTensors is the number of Tensor handles not yet closed. Tests use it to
// prove that loops free what they create.
func LiveTensors() int64 { return liveTensors.Load() }

func wrap(h C.ct_tensor) *Tensor {
	if h == nil {
		return nil
	}
	t := &Tensor{h: unsafe.Pointer(h)}
	liveTensors.Add(1)
	runtime.SetFinalizer(t, (*Tensor).Close)
	return t
}

// Close frees the handle. Storage shared with other handles (views, autograd
// graphs) stays alive until they are freed too.
func (t *Tensor) Close() {
	if t == nil {
		return
	}
	h := atomic.SwapPointer(&t.h, nil)
	if h == nil {
		return
	}
	C.ct_tensor_free(C.ct_tensor(h))
	liveTensors.Add(-1)
	runtime.SetFinalizer(t, nil)
}

func (t *Tensor) handle() (C.ct_tensor, error) {
	if t == nil {
		return nil, fmt.Errorf("nil tensor")
	}
	h := atomic.LoadPointer(&t.h)
	if h == nil {
		return nil, fmt.Errorf("tensor used after Close")
	}
	return C.ct_tensor(h), nil
}

// Valid reports whether t is non-nil and not closed.
func (t *Tensor) Valid() bool { return t != nil && atomic.LoadPointer(&t.h) != nil }

// Info is a tensor's metadata, as Tensor.Info returns it.
type Info struct {
	Shape  []int64
	DType  DType
	Device Device
}

// Info returns t's shape, dtype and device, or an error for a nil or closed
// tensor or a libtorch failure. Shape, DType and Device are its one-value
// forms for tensors known to be valid.
func (t *Tensor) Info() (Info, error) {
	shape, err := t.shape()
	if err != nil {
		return Info{}, err
	}
	dt, err := t.dtype()
	if err != nil {
		return Info{}, err
	}
	dev, err := t.device()
	if err != nil {
		return Info{}, err
	}
	return Info{Shape: shape, DType: dt, Device: dev}, nil
}

// Shape returns the sizes of t; nil (distinct from a scalar's empty shape)
// for a nil or closed tensor. Use Info to get the error.
func (t *Tensor) Shape() []int64 {
	s, err := t.shape()
	if err != nil {
		return nil
	}
	return s
}

func (t *Tensor) shape() ([]int64, error) {
	h, err := t.handle()
	if err != nil {
		return nil, err
	}
	var n C.int64_t
	if err := cErr(C.ct_tensor_dim(h, &n)); err != nil {
		return nil, err
	}
	dims := make([]int64, int(n))
	if n > 0 {
		if err := cErr(C.ct_tensor_shape(h, cInt64s(dims), n)); err != nil {
			return nil, err
		}
	}
	return dims, nil
}

// Dim is the number of dimensions.
func (t *Tensor) Dim() int { return len(t.Shape()) }

// Numel is the number of elements (0 for a nil or closed tensor).
func (t *Tensor) Numel() int64 {
	shape := t.Shape()
	if shape == nil {
		return 0
	}
	n := int64(1)
	for _, d := range shape {
		n *= d
	}
	return n
}

// DType returns t's scalar type; InvalidDType for a nil or closed tensor.
// Use Info to get the error.
func (t *Tensor) DType() DType {
	d, err := t.dtype()
	if err != nil {
		return InvalidDType
	}
	return d
}

func (t *Tensor) dtype() (DType, error) {
	h, err := t.handle()
	if err != nil {
		return InvalidDType, err
	}
	var d C.int32_t
	if err := cErr(C.ct_tensor_dtype(h, &d)); err != nil {
		return InvalidDType, err
	}
	return DType(d), nil
}

// Device returns where t lives; InvalidDevice (never CPU) for a nil or
// closed tensor. Use Info to get the error.
func (t *Tensor) Device() Device {
	d, err := t.device()
	if err != nil {
		return InvalidDevice
	}
	return d
}

func (t *Tensor) device() (Device, error) {
	h, err := t.handle()
	if err != nil {
		return InvalidDevice, err
	}
	var typ, idx C.int32_t
	if err := cErr(C.ct_tensor_device(h, &typ, &idx)); err != nil {
		return InvalidDevice, err
	}
	return Device{Type: DeviceType(typ), Index: int(idx)}, nil
}

// Version is t's in-place modification counter, as PyTorch's
// Tensor._version (shared by views of one storage); -1 for an inference
// tensor, which has none, or an invalid one.
func (t *Tensor) Version() int64 {
	h, err := t.handle()
	if err != nil {
		return -1
	}
	var v C.int64_t
	if cErr(C.ct_tensor_version(h, &v)) != nil {
		return -1
	}
	return int64(v)
}

// RequiresGrad reports whether autograd tracks t.
func (t *Tensor) RequiresGrad() bool {
	h, err := t.handle()
	if err != nil {
		return false
	}
	var r C.int32_t
	if cErr(C.ct_tensor_requires_grad(h, &r)) != nil {
		return false
	}
	return r != 0
}

// SetRequiresGrad turns gradient tracking on or off for a leaf tensor.
func (t *Tensor) SetRequiresGrad(on bool) error {
	h, err := t.handle()
	if err != nil {
		return err
	}
	v := C.int32_t(0)
	if on {
		v = 1
	}
	return cErr(C.ct_set_requires_grad(h, v))
}

// String renders the tensor's values as libtorch prints them.
func (t *Tensor) String() string {
	h, err := t.handle()
	if err != nil {
		return "<" + err.Error() + ">"
	}
	var s *C.char
	if err := cErr(C.ct_tensor_to_string(h, &s)); err != nil {
		return "<" + err.Error() + ">"
	}
	defer C.ct_free_string(s)
	return C.GoString(s)
}

// Grad returns a new handle to t's gradient, or nil when it has none.
func (t *Tensor) Grad() (*Tensor, error) {
	h, err := t.handle()
	if err != nil {
		return nil, err
	}
	var out C.ct_tensor
	if err := cErr(C.ct_grad(h, &out)); err != nil {
		return nil, err
	}
	return wrap(out), nil
}

// ZeroGrad drops t's accumulated gradient (as zero_grad(set_to_none=True)).
func (t *Tensor) ZeroGrad() error {
	h, err := t.handle()
	if err != nil {
		return err
	}
	return cErr(C.ct_zero_grad(h))
}

// Backward runs autograd from the scalar t.
func (t *Tensor) Backward() error {
	h, err := t.handle()
	if err != nil {
		return fmt.Errorf("backward: %w", err)
	}
	if err := cErr(C.ct_backward(h)); err != nil {
		return fmt.Errorf("backward of %v: %w", t.Shape(), err)
	}
	return nil
}

// CopyFrom overwrites t's values with src's (same shape), outside autograd.
func (t *Tensor) CopyFrom(src *Tensor) error {
	h, err := t.handle()
	if err != nil {
		return err
	}
	sh, err := src.handle()
	if err != nil {
		return err
	}
	if err := cErr(C.ct_copy_(h, sh)); err != nil {
		return fmt.Errorf("copy %v into %v: %w", src.Shape(), t.Shape(), err)
	}
	return nil
}

// Detach returns a new handle sharing storage with t, outside autograd.
func (t *Tensor) Detach() (*Tensor, error) {
	h, err := t.handle()
	if err != nil {
		return nil, err
	}
	var out C.ct_tensor
	if err := cErr(C.ct_detach(h, &out)); err != nil {
		return nil, err
	}
	return wrap(out), nil
}

// Clone returns a new handle to the same tensor (shared storage); the caller
// owns it independently of t.
func (t *Tensor) Clone() (*Tensor, error) {
	h, err := t.handle()
	if err != nil {
		return nil, err
	}
	var out C.ct_tensor
	if err := cErr(C.ct_tensor_shallow_copy(h, &out)); err != nil {
		return nil, err
	}
	return wrap(out), nil
}

// Item returns the value of a one-element tensor.
func (t *Tensor) Item() (float64, error) {
	h, err := t.handle()
	if err != nil {
		return 0, err
	}
	var v C.double
	if err := cErr(C.ct_item(h, &v)); err != nil {
		return 0, fmt.Errorf("item of %v: %w", t.Shape(), err)
	}
	return float64(v), nil
}

func copyOut[E any](t *Tensor, dt DType) ([]E, error) {
	h, err := t.handle()
	if err != nil {
		return nil, err
	}
	out := make([]E, t.Numel())
	var p unsafe.Pointer
	if len(out) > 0 {
		p = unsafe.Pointer(&out[0])
	}
	if err := cErr(C.ct_copy_to_host(h, C.int32_t(dt), p, C.int64_t(len(out)*dt.Size()))); err != nil {
		return nil, fmt.Errorf("copy %v to host as %v: %w", t.Shape(), dt, err)
	}
	return out, nil
}

// Float32s copies the values to the host as float32, row-major.
func (t *Tensor) Float32s() ([]float32, error) { return copyOut[float32](t, Float32) }

// Float64s copies the values to the host as float64, row-major.
func (t *Tensor) Float64s() ([]float64, error) { return copyOut[float64](t, Float64) }

// Int64s copies the values to the host as int64, row-major.
func (t *Tensor) Int64s() ([]int64, error) { return copyOut[int64](t, Int64) }

// Bytes copies the raw elements as dt to the host.
func (t *Tensor) Bytes(dt DType) ([]byte, error) {
	h, err := t.handle()
	if err != nil {
		return nil, err
	}
	out := make([]byte, int(t.Numel())*dt.Size())
	var p unsafe.Pointer
	if len(out) > 0 {
		p = unsafe.Pointer(&out[0])
	}
	if err := cErr(C.ct_copy_to_host(h, C.int32_t(dt), p, C.int64_t(len(out)))); err != nil {
		return nil, fmt.Errorf("copy %v to host as %v: %w", t.Shape(), dt, err)
	}
	return out, nil
}

func checkShape(n int, shape []int64) error {
	want := int64(1)
	for _, d := range shape {
		if d < 0 {
			return fmt.Errorf("negative dimension in shape %v", shape)
		}
		want *= d
	}
	if int64(n) != want {
		return fmt.Errorf("%d values do not fill shape %v (%d)", n, shape, want)
	}
	return nil
}

// FromBytes copies raw little-endian elements of type dt into a new tensor on
// device d. The caller owns the result.
func FromBytes(data []byte, dt DType, shape []int64, d Device) (*Tensor, error) {
	if err := CheckRuntime(); err != nil {
		return nil, err
	}
	if dt.Size() == 0 {
		return nil, fmt.Errorf("unsupported dtype %v", dt)
	}
	if len(data)%dt.Size() != 0 {
		return nil, fmt.Errorf("%d bytes is not a whole number of %v elements", len(data), dt)
	}
	if err := checkShape(len(data)/dt.Size(), shape); err != nil {
		return nil, err
	}
	var p unsafe.Pointer
	var scratch [8]byte
	if len(data) > 0 {
		p = unsafe.Pointer(&data[0])
	} else {
		p = unsafe.Pointer(&scratch[0])
	}
	var out C.ct_tensor
	if err := cErr(C.ct_from_blob(p, C.int32_t(dt), cInt64s(shape), C.int64_t(len(shape)),
		C.int32_t(d.Type), C.int32_t(d.Index), &out)); err != nil {
		return nil, fmt.Errorf("tensor %v %v on %v: %w", dt, shape, d, err)
	}
	return wrap(out), nil
}

func fromSlice[E any](data []E, dt DType, shape []int64) (*Tensor, error) {
	return fromSliceOn(data, dt, shape, CPU)
}

func fromSliceOn[E any](data []E, dt DType, shape []int64, d Device) (*Tensor, error) {
	var b []byte
	if len(data) > 0 {
		b = unsafe.Slice((*byte)(unsafe.Pointer(&data[0])), len(data)*dt.Size())
	}
	return FromBytes(b, dt, shape, d)
}

// FromFloat32 copies data into a new CPU float32 tensor of the given shape.
func FromFloat32(data []float32, shape ...int64) (*Tensor, error) {
	return fromSlice(data, Float32, shape)
}

// FromInt64 copies data into a new CPU int64 tensor of the given shape.
func FromInt64(data []int64, shape ...int64) (*Tensor, error) {
	return fromSlice(data, Int64, shape)
}

// FromGotorch returns our own handle to a gotorch tensor (shared storage); the
// gotorch tensor keeps its own lifetime.
func FromGotorch(g gotorch.Tensor) (*Tensor, error) {
	if g.T == nil || *g.T == nil {
		return nil, fmt.Errorf("nil gotorch tensor")
	}
	var out C.ct_tensor
	if err := cErr(C.ct_tensor_shallow_copy(C.ct_tensor(*g.T), &out)); err != nil {
		return nil, err
	}
	return wrap(out), nil
}

// Gotorch returns a gotorch tensor sharing storage with t, with gotorch's own
// handle and finalizer, for use with gotorch's API.
func (t *Tensor) Gotorch() (gotorch.Tensor, error) {
	h, err := t.handle()
	if err != nil {
		return gotorch.Tensor{}, err
	}
	var out C.ct_tensor
	if err := cErr(C.ct_tensor_shallow_copy(h, &out)); err != nil {
		return gotorch.Tensor{}, err
	}
	p := unsafe.Pointer(out)
	gotorch.SetTensorFinalizer(&p)
	return gotorch.Tensor{T: &p}, nil
}
