package torch

// #include <stdlib.h>
// #include "fused_resnet.h"
import "C"

import (
	"fmt"
	"runtime"
	"sort"
	"sync"
	"unsafe"
)

// FusedResNet is the eval-mode trunk of CLIP's ModifiedResNet (stem and four
// stages, up to the map before attnpool) run as one native op on the CPU in
// float32 (see cpp/fused_resnet.cc): each BatchNorm folded into the
// convolution before it, channels-last activations, ReLU and the residual add
// in place. It is an op of the Go model, not a model: every call takes the
// model's current weights, and the folded copies are remade for any
// convolution whose weight or BatchNorm tensors changed since (another tensor,
// or the same one updated in place by an op that bumps its version counter).
// Writes that bypass the counter need an Invalidate: libtorch 1.13's
// training-mode BatchNorm updates running statistics inside its kernel.
type FusedResNet struct {
	mu    sync.RWMutex // read-held by calls, so Close waits for them
	h     unsafe.Pointer
	names []string
}

// NewFusedResNet lays out a trunk from weights keyed by their PyTorch names
// relative to CLIP's visual ModifiedResNet ("conv1.weight", "bn1.running_var",
// "layer1.0.conv2.weight", "layer2.0.downsample.1.bias", …), folding them
// once; attnpool weights and num_batches_tracked are not part of the trunk
// and are refused. All must be CPU float32. strides is each Bottleneck's
// stride (its average pool), stage by stage and block by block, as the model
// has them; eps is BatchNorm's.
func NewFusedResNet(weights map[string]*Tensor, strides []int64, eps float64) (*FusedResNet, error) {
	if err := CheckRuntime(); err != nil {
		return nil, err
	}
	if len(weights) == 0 {
		return nil, fmt.Errorf("fused resnet: no weights")
	}
	names := make([]string, 0, len(weights))
	for name := range weights {
		names = append(names, name)
	}
	sort.Strings(names)
	hs, err := resnetHandles(names, weights)
	if err != nil {
		return nil, err
	}
	cNames := make([]*C.char, len(names))
	defer func() {
		for _, p := range cNames {
			C.free(unsafe.Pointer(p))
		}
	}()
	for i, name := range names {
		cNames[i] = C.CString(name)
	}
	var sp *C.int64_t
	if len(strides) > 0 {
		sp = (*C.int64_t)(unsafe.Pointer(&strides[0]))
	}
	var out C.ct_resnet
	err = cErr(C.ct_resnet_new(&cNames[0], &hs[0], C.int64_t(len(hs)), sp, C.int64_t(len(strides)), C.double(eps), &out))
	runtime.KeepAlive(strides)
	runtime.KeepAlive(weights)
	if err != nil {
		return nil, err
	}
	f := &FusedResNet{h: unsafe.Pointer(out), names: names}
	runtime.SetFinalizer(f, (*FusedResNet).Close)
	return f, nil
}

// resnetHandles returns the handles of weights in the order of names.
func resnetHandles(names []string, weights map[string]*Tensor) ([]C.ct_tensor, error) {
	hs := make([]C.ct_tensor, len(names))
	for i, name := range names {
		w, ok := weights[name]
		if !ok {
			return nil, fmt.Errorf("fused resnet: missing weight %s", name)
		}
		h, err := w.handle()
		if err != nil {
			return nil, fmt.Errorf("fused resnet: weight %s: %w", name, err)
		}
		hs[i] = h
	}
	return hs, nil
}

// Forward runs the trunk on pixels [N, 3, H, W] (CPU float32) with weights,
// the same names NewFusedResNet was given (the model's current tensors), and
// returns the last stage's map [N, 32·width, H/32, W/32], row-major, owned by
// s and without autograd history. It returns ok = false, computing nothing,
// when s records history and the pixels or a weight require grad: the caller
// then takes its op-by-op path. Calls may run concurrently.
func (f *FusedResNet) Forward(s *Scope, pixels *Tensor, weights map[string]*Tensor) (out *Tensor, ok bool) {
	if !s.required("fused_resnet", pixels) {
		return nil, true
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	h := f.h
	if h == nil {
		s.Fail(fmt.Errorf("fused resnet used after Close"))
		return nil, true
	}
	hs, err := resnetHandles(f.names, weights)
	if err != nil {
		s.Fail(err)
		return nil, true
	}
	taken := true
	out = s.run("fused_resnet", []*Tensor{pixels}, func(in []C.ct_tensor, out *C.ct_tensor) C.ct_error {
		e := C.ct_resnet_forward(C.ct_resnet(h), s.mode, &hs[0], C.int64_t(len(hs)), in[0], out)
		taken = e != nil || *out != nil
		return e
	})
	runtime.KeepAlive(weights)
	return out, taken
}

// Invalidate makes the next Forward refold every convolution. Call it after
// writes the version counters miss: a training-mode BatchNorm's running
// statistics (updated inside its kernel) and tensors filled by collectives.
// After an error the folds may be stale: close the trunk.
func (f *FusedResNet) Invalidate() error {
	if f == nil {
		return nil
	}
	var err error
	f.withHandle(func(h C.ct_resnet) { err = cErr(C.ct_resnet_invalidate(h)) })
	return err
}

// Folds counts the convolutions folded so far: one per convolution when
// built, then one per convolution whose weights changed before a call.
func (f *FusedResNet) Folds() int64 {
	var n int64
	f.withHandle(func(h C.ct_resnet) { n = int64(C.ct_resnet_folds(h)) })
	return n
}

// FoldedBytes is the memory the folded weights take.
func (f *FusedResNet) FoldedBytes() int64 {
	var n int64
	f.withHandle(func(h C.ct_resnet) { n = int64(C.ct_resnet_folded_bytes(h)) })
	return n
}

// withHandle runs use on the open handle, Close held off meanwhile; after
// Close it does nothing.
func (f *FusedResNet) withHandle(use func(C.ct_resnet)) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.h != nil {
		use(C.ct_resnet(f.h))
	}
}

// Close frees the folded weights; it is idempotent.
func (f *FusedResNet) Close() {
	if f == nil {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.h != nil {
		C.ct_resnet_free(C.ct_resnet(f.h))
		f.h = nil
	}
	runtime.SetFinalizer(f, nil)
}
