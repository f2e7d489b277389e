package torch

// #include <stdlib.h>
// #include "fused.h"
import "C"

import (
	"fmt"
	"runtime"
	"sort"
	"sync"
	"unsafe"
)

// FusedBlocks is a stack of CLIP residual attention blocks (x + attn(ln_1(x)),
// then x + mlp(ln_2(x))) run natively on the CPU in float32 (see
// cpp/fused.cc): every product split over libtorch's threads with BLAS
// single-threaded, activations of the inference forward in reused buffers.
// It is an op of the Go model, not a model: the stem and head around the
// blocks stay in Go. It holds references to the weights it was built from.
type FusedBlocks struct {
	mu sync.Mutex
	h  unsafe.Pointer
}

// NewFusedBlocks builds the block stack from weights keyed by their PyTorch
// names relative to a CLIP Transformer ("resblocks.0.attn.in_proj_weight",
// …, "resblocks.11.ln_2.bias"): blocks 0..L-1 must each be complete, other
// names are refused. All must be CPU float32; heads is the attention heads
// per block.
func NewFusedBlocks(weights map[string]*Tensor, heads int) (*FusedBlocks, error) {
	if err := CheckRuntime(); err != nil {
		return nil, err
	}
	if len(weights) == 0 {
		return nil, fmt.Errorf("fused blocks: no weights")
	}
	names := make([]string, 0, len(weights))
	for name := range weights {
		names = append(names, name)
	}
	sort.Strings(names)
	cNames := make([]*C.char, len(names))
	hs := make([]C.ct_tensor, len(names))
	defer func() {
		for _, p := range cNames {
			C.free(unsafe.Pointer(p))
		}
	}()
	for i, name := range names {
		h, err := weights[name].handle()
		if err != nil {
			return nil, fmt.Errorf("fused blocks: weight %s: %w", name, err)
		}
		hs[i] = h
		cNames[i] = C.CString(name)
	}
	// The C arrays hold C pointers only, so cgo's pointer rules allow passing
	// the Go-allocated slices.
	var out C.ct_blocks
	err := cErr(C.ct_blocks_new(&cNames[0], &hs[0], C.int64_t(len(hs)), C.int64_t(heads), &out))
	runtime.KeepAlive(weights)
	if err != nil {
		return nil, err
	}
	f := &FusedBlocks{h: unsafe.Pointer(out)}
	runtime.SetFinalizer(f, (*FusedBlocks).Close)
	return f, nil
}

// Layers is the number of blocks (0 after Close).
func (f *FusedBlocks) Layers() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.h == nil {
		return 0
	}
	return int(C.ct_blocks_layers(C.ct_blocks(f.h)))
}

// Forward runs the blocks with unmasked attention (the ViT's) on x [N, L, W]
// (CPU float32) and returns the output [N, L, W] owned by s, without autograd
// history (inference only).
func (f *FusedBlocks) Forward(s *Scope, x *Tensor) *Tensor {
	if !s.required("fused_blocks", x) {
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.h == nil {
		s.Fail(fmt.Errorf("fused blocks used after Close"))
		return nil
	}
	return s.run("fused_blocks", []*Tensor{x}, func(in []C.ct_tensor, out *C.ct_tensor) C.ct_error {
		return C.ct_blocks_forward(C.ct_blocks(f.h), in[0], out)
	})
}

// ForwardSharedPrefix runs the blocks causally over K prompts that share
// their first P rows: prefix [1, P, W] and suffix [K, L, W] (positions
// already added, CPU float32) give the suffix rows' outputs [K, L, W] owned
// by s, as if each prompt's P+L rows went through the blocks alone under a
// causal mask. The prefix runs once. In a grad-enabled scope the result is
// differentiable with respect to the inputs that require grad (a
// hand-written backward); autograd graphs keep what they need even after
// Close.
func (f *FusedBlocks) ForwardSharedPrefix(s *Scope, prefix, suffix *Tensor) *Tensor {
	if !s.required("fused_blocks_shared_prefix", prefix, suffix) {
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.h == nil {
		s.Fail(fmt.Errorf("fused blocks used after Close"))
		return nil
	}
	return s.run("fused_blocks_shared_prefix", []*Tensor{prefix, suffix}, func(in []C.ct_tensor, out *C.ct_tensor) C.ct_error {
		return C.ct_blocks_forward_shared_prefix(C.ct_blocks(f.h), s.mode.grad, in[0], in[1], out)
	})
}

// BufferBytes is the size of the activation buffers kept between Forward
// calls.
func (f *FusedBlocks) BufferBytes() int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.h == nil {
		return 0
	}
	return int64(C.ct_blocks_buffer_bytes(C.ct_blocks(f.h)))
}

// Trim frees the activation buffers; the next Forward rebuilds them.
func (f *FusedBlocks) Trim() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.h != nil {
		C.ct_blocks_trim(C.ct_blocks(f.h))
	}
}

// Close frees the handle (and its references to the weights); closing twice
// is harmless.
func (f *FusedBlocks) Close() {
	if f == nil {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.h != nil {
		C.ct_blocks_free(C.ct_blocks(f.h))
		f.h = nil
		runtime.SetFinalizer(f, nil)
	}
}

// FusedPatchEmbed is conv2d(pixels, w, stride P, no padding, no bias) for
// pixels [N, C, R, R] and w [W, C, P, P] (CPU float32), returned as tokens
// [N, (R/P)², W]: one image per task on libtorch's threads, its patches
// gathered into a per-thread scratch kept across calls (about (R/P)²·C·P²
// floats per thread), one product each, so an image's tokens do not depend
// on its batch. The result has no autograd history.
func (s *Scope) FusedPatchEmbed(pixels, w *Tensor) *Tensor {
	if !s.required("fused_patch_embed", pixels, w) {
		return nil
	}
	return s.run("fused_patch_embed", []*Tensor{pixels, w}, func(in []C.ct_tensor, out *C.ct_tensor) C.ct_error {
		return C.ct_fused_patch_embed(in[0], in[1], out)
	})
}

// FusedLayerNorm normalises x over its last dimension (weight w and bias b
// [W], CPU float32) with the fused blocks' row kernel, 64 rows per task.
// The result has no autograd history.
func (s *Scope) FusedLayerNorm(x, w, b *Tensor, eps float64) *Tensor {
	if !s.required("fused_layer_norm", x, w, b) {
		return nil
	}
	return s.run("fused_layer_norm", []*Tensor{x, w, b}, func(in []C.ct_tensor, out *C.ct_tensor) C.ct_error {
		return C.ct_fused_layer_norm(in[0], in[1], in[2], C.double(eps), out)
	})
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

// FusedDNNL reports whether fused code uses oneDNN's sgemm for products
// with few rows (the text path); it needs libtorch's oneDNN symbols visible.
func FusedDNNL() bool { return C.ct_fused_dnnl() != 0 }
