package torch

// #include "shim.h"
import "C"

import (
	"fmt"
	"unsafe"
)

// SGDOptions are PyTorch's torch.optim.SGD hyper-parameters.
type SGDOptions struct {
	LR          float64
	Momentum    float64
	Dampening   float64
	WeightDecay float64
	Nesterov    bool
}

// SGD is stochastic gradient descent with PyTorch's exact update rule. Its
// momentum buffers are ordinary tensors, so checkpoints can save and restore
// them (needed to resume official CLIP-AGIQA runs).
//
// Deprecated: use torch/optim, which adds named parameters, groups, Adam(W),
// schedules and PyTorch's optimizer state dicts.
type SGD struct {
	Options SGDOptions
	params  []*Tensor
	bufs    []C.ct_tensor
}

// NewSGD optimises params (leaf tensors with requires_grad); it does not own
// them.
func NewSGD(params []*Tensor, opts SGDOptions) (*SGD, error) {
	for i, p := range params {
		if !p.Valid() {
			return nil, fmt.Errorf("sgd: parameter %d is nil or closed", i)
		}
	}
	return &SGD{Options: opts, params: params, bufs: make([]C.ct_tensor, len(params))}, nil
}

// ZeroGrad clears the parameters' gradients.
func (o *SGD) ZeroGrad() error {
	for i, p := range o.params {
		if err := p.ZeroGrad(); err != nil {
			return fmt.Errorf("sgd zero_grad of parameter %d: %w", i, err)
		}
	}
	return nil
}

// Step applies one update using the current gradients.
func (o *SGD) Step() error {
	if len(o.params) == 0 {
		return nil
	}
	hs := make([]C.ct_tensor, len(o.params))
	for i, p := range o.params {
		h, err := p.handle()
		if err != nil {
			return fmt.Errorf("sgd step: parameter %d: %w", i, err)
		}
		hs[i] = h
	}
	nest := C.int32_t(0)
	if o.Options.Nesterov {
		nest = 1
	}
	newBufs := make([]bool, len(o.bufs))
	for i, b := range o.bufs {
		newBufs[i] = b == nil
	}
	err := cErr(C.ct_sgd_step((*C.ct_tensor)(unsafe.Pointer(&hs[0])), (*C.ct_tensor)(unsafe.Pointer(&o.bufs[0])),
		C.int64_t(len(hs)), C.double(o.Options.LR), C.double(o.Options.Momentum),
		C.double(o.Options.Dampening), C.double(o.Options.WeightDecay), nest))
	for i, b := range o.bufs {
		if newBufs[i] && b != nil {
			liveTensors.Add(1) // the shim created this buffer handle
		}
	}
	if err != nil {
		return fmt.Errorf("sgd step: %w", err)
	}
	return nil
}

// MomentumBuffer returns a new handle to parameter i's momentum buffer, or nil
// before the first step.
func (o *SGD) MomentumBuffer(i int) (*Tensor, error) {
	if i < 0 || i >= len(o.bufs) {
		return nil, fmt.Errorf("sgd: no parameter %d", i)
	}
	if o.bufs[i] == nil {
		return nil, nil
	}
	var out C.ct_tensor
	if err := cErr(C.ct_tensor_shallow_copy(o.bufs[i], &out)); err != nil {
		return nil, err
	}
	return wrap(out), nil
}

// SetMomentumBuffer replaces parameter i's momentum buffer with a copy of
// handle buf (shared storage; nil clears it).
func (o *SGD) SetMomentumBuffer(i int, buf *Tensor) error {
	if i < 0 || i >= len(o.bufs) {
		return fmt.Errorf("sgd: no parameter %d", i)
	}
	var out C.ct_tensor
	if buf != nil {
		h, err := buf.handle()
		if err != nil {
			return err
		}
		if want, got := o.params[i].Shape(), buf.Shape(); fmt.Sprint(want) != fmt.Sprint(got) {
			return fmt.Errorf("sgd: momentum buffer %d has shape %v, parameter has %v", i, got, want)
		}
		if err := cErr(C.ct_tensor_shallow_copy(h, &out)); err != nil {
			return err
		}
	}
	o.freeBuf(i)
	if out != nil {
		liveTensors.Add(1)
	}
	o.bufs[i] = out
	return nil
}

func (o *SGD) freeBuf(i int) {
	if o.bufs[i] != nil {
		C.ct_tensor_free(o.bufs[i])
		liveTensors.Add(-1)
		o.bufs[i] = nil
	}
}

// Close frees the momentum buffers; closing twice is harmless.
func (o *SGD) Close() {
	for i := range o.bufs {
		o.freeBuf(i)
	}
}
