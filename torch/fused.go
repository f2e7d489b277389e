package torch

// #include <stdlib.h>
// #include "fused.h"
import "C"

import (
	"fmt"
	"runtime"
	"sync"
	"unsafe"
)

// FusedViT is a whole CLIP Vision Transformer forward in one native call, for
// CPU float32 inference (see cpp/fused.cc): activations in reused buffers,
// every product split over libtorch's threads with BLAS single-threaded, no
// autograd. It holds references to the weights it was built from.
type FusedViT struct {
	mu sync.Mutex
	h  unsafe.Pointer
}

// FusedViTWeightCount is how many tensors NewFusedViT takes for a ViT with the
// given number of blocks.
func FusedViTWeightCount(layers int) int { return int(C.ct_vit_weight_count(C.int64_t(layers))) }

// NewFusedViT builds the fused encoder. weights are, in order: conv1.weight,
// class_embedding, positional_embedding, ln_pre.weight, ln_pre.bias,
// ln_post.weight, ln_post.bias, proj, then for each block in_proj_weight,
// in_proj_bias, out_proj.weight, out_proj.bias, ln_1.weight, ln_1.bias,
// c_fc.weight, c_fc.bias, c_proj.weight, c_proj.bias, ln_2.weight, ln_2.bias.
// All must be CPU float32.
func NewFusedViT(weights []*Tensor, layers, heads int) (*FusedViT, error) {
	if err := CheckRuntime(); err != nil {
		return nil, err
	}
	if want := FusedViTWeightCount(layers); len(weights) != want {
		return nil, fmt.Errorf("fused ViT: %d weights for %d layers, want %d", len(weights), layers, want)
	}
	hs := make([]C.ct_tensor, len(weights))
	for i, w := range weights {
		h, err := w.handle()
		if err != nil {
			return nil, fmt.Errorf("fused ViT: weight %d: %w", i, err)
		}
		hs[i] = h
	}
	var out C.ct_vit
	if err := cErr(C.ct_vit_new(&hs[0], C.int64_t(len(hs)), C.int64_t(layers), C.int64_t(heads), &out)); err != nil {
		return nil, err
	}
	runtime.KeepAlive(weights)
	f := &FusedViT{h: unsafe.Pointer(out)}
	runtime.SetFinalizer(f, (*FusedViT).Close)
	return f, nil
}

// Forward maps pixels [N, 3, R, R] (CPU float32) to raw image features [N, E]
// owned by s. The result carries no autograd history.
func (f *FusedViT) Forward(s *Scope, pixels *Tensor) *Tensor {
	if !s.required("fused_vit", pixels) {
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.h == nil {
		s.Fail(fmt.Errorf("fused ViT used after Close"))
		return nil
	}
	return s.run("fused_vit", []*Tensor{pixels}, func(in []C.ct_tensor, out *C.ct_tensor) C.ct_error {
		return C.ct_vit_forward(C.ct_vit(f.h), in[0], out)
	})
}

// BufferBytes is the size of the activation buffers kept between calls.
func (f *FusedViT) BufferBytes() int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.h == nil {
		return 0
	}
	return int64(C.ct_vit_buffer_bytes(C.ct_vit(f.h)))
}

// Trim frees the activation buffers; the next Forward rebuilds them.
func (f *FusedViT) Trim() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.h != nil {
		C.ct_vit_trim(C.ct_vit(f.h))
	}
}

// Close frees the handle (and its references to the weights); closing twice
// is harmless.
func (f *FusedViT) Close() {
	if f == nil {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.h != nil {
		C.ct_vit_free(C.ct_vit(f.h))
		f.h = nil
		runtime.SetFinalizer(f, nil)
	}
}

// FusedDirectBLAS reports whether fused code calls the process's BLAS sgemm
// directly (true) or goes through libtorch's mm on strided views.
func FusedDirectBLAS() bool { return C.ct_fused_direct_blas() != 0 }

// BLASThreads is the thread count of the process's OpenBLAS pool, or -1 when
// the BLAS is not OpenBLAS.
func BLASThreads() int { return int(C.ct_blas_get_threads()) }

// SetBLASThreads resizes an OpenBLAS pool (libtorch does not: its own thread
// count leaves OpenBLAS's untouched); false when there is no OpenBLAS.
func SetBLASThreads(n int) bool { return C.ct_blas_set_threads(C.int32_t(n)) != 0 }

// FusedText is CLIP's text transformer for prompts that share their first
// tokens (CLIP-AGIQA's SOT + context), forward and backward in one native
// call each (see cpp/fused.cc): the prefix runs once, every prompt's suffix
// attends to its keys and values, and gradients flow to both inputs through
// a hand-written backward. CPU float32. It holds references to its weights.
type FusedText struct {
	mu sync.Mutex
	h  unsafe.Pointer
}

// FusedTextWeightCount is how many tensors NewFusedText takes.
func FusedTextWeightCount(layers int) int { return int(C.ct_text_weight_count(C.int64_t(layers))) }

// NewFusedText builds the fused text path. weights are, in order:
// positional_embedding, ln_final.weight, ln_final.bias, text_projection, then
// per block the 12 tensors listed at NewFusedViT. All must be CPU float32.
func NewFusedText(weights []*Tensor, layers, heads int) (*FusedText, error) {
	if err := CheckRuntime(); err != nil {
		return nil, err
	}
	if want := FusedTextWeightCount(layers); len(weights) != want {
		return nil, fmt.Errorf("fused text: %d weights for %d layers, want %d", len(weights), layers, want)
	}
	hs := make([]C.ct_tensor, len(weights))
	for i, w := range weights {
		h, err := w.handle()
		if err != nil {
			return nil, fmt.Errorf("fused text: weight %d: %w", i, err)
		}
		hs[i] = h
	}
	var out C.ct_text
	if err := cErr(C.ct_text_new(&hs[0], C.int64_t(len(hs)), C.int64_t(layers), C.int64_t(heads), &out)); err != nil {
		return nil, err
	}
	runtime.KeepAlive(weights)
	f := &FusedText{h: unsafe.Pointer(out)}
	runtime.SetFinalizer(f, (*FusedText).Close)
	return f, nil
}

// Forward maps prefix [1, P, D] and suffix [K, S, D] embeddings with each
// prompt's absolute EOT position to raw text features [K, E] owned by s. In
// a grad-enabled scope the result is differentiable with respect to the
// inputs that require grad; autograd graphs keep what they need even after
// Close.
func (f *FusedText) Forward(s *Scope, prefix, suffix *Tensor, eot []int64) *Tensor {
	if !s.required("fused_text", prefix, suffix) {
		return nil
	}
	if len(eot) == 0 {
		s.Fail(fmt.Errorf("fused_text: no EOT positions"))
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.h == nil {
		s.Fail(fmt.Errorf("fused text used after Close"))
		return nil
	}
	return s.run("fused_text", []*Tensor{prefix, suffix}, func(in []C.ct_tensor, out *C.ct_tensor) C.ct_error {
		return C.ct_text_forward(C.ct_text(f.h), s.mode.grad, in[0], in[1], cInt64s(eot), C.int64_t(len(eot)), out)
	})
}

// Close frees the handle; closing twice is harmless.
func (f *FusedText) Close() {
	if f == nil {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.h != nil {
		C.ct_text_free(C.ct_text(f.h))
		f.h = nil
		runtime.SetFinalizer(f, nil)
	}
}

// FusedDNNL reports whether fused code uses oneDNN's sgemm for products
// with few rows (the text path); it needs libtorch's oneDNN symbols visible.
func FusedDNNL() bool { return C.ct_fused_dnnl() != 0 }
