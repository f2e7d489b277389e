package torch

// #include "nn_ops.h"
import "C"

import (
	"fmt"
	"math"
	"unsafe"
)

// Pair is a (height, width) pair of sizes for the 2-D ops.
type Pair [2]int64

// Sq returns the square pair (n, n).
func Sq(n int64) Pair { return Pair{n, n} }

func (p *Pair) c() *C.int64_t { return (*C.int64_t)(unsafe.Pointer(&p[0])) }

func cFlag(b bool) C.int32_t {
	if b {
		return 1
	}
	return 0
}

// Conv2DOptions are F.conv2d's hyper-parameters. The zero value of a field
// means PyTorch's default (stride 1, padding 0, dilation 1, groups 1).
type Conv2DOptions struct {
	Stride, Padding, Dilation Pair
	Groups                    int64
}

func (o Conv2DOptions) withDefaults() Conv2DOptions {
	if o.Stride == (Pair{}) {
		o.Stride = Sq(1)
	}
	if o.Dilation == (Pair{}) {
		o.Dilation = Sq(1)
	}
	if o.Groups == 0 {
		o.Groups = 1
	}
	return o
}

// Conv2DEx is F.conv2d(x, w, b, stride, padding, dilation, groups); b may be nil.
func (s *Scope) Conv2DEx(x, w, b *Tensor, o Conv2DOptions) *Tensor {
	if !s.required("conv2d", x, w) {
		return nil
	}
	o = o.withDefaults()
	return s.run(fmt.Sprintf("conv2d%+v", o), []*Tensor{x, w, b}, func(in []C.ct_tensor, out *C.ct_tensor) C.ct_error {
		return C.ct_conv2d_ex(s.mode, in[0], in[1], in[2], o.Stride.c(), o.Padding.c(), o.Dilation.c(), C.int64_t(o.Groups), out)
	})
}

// BatchNorm is F.batch_norm. With training true it normalises by the batch
// statistics and, when the running buffers are given, updates them in place:
// running = (1-momentum)·running + momentum·batch, with the unbiased batch
// variance for runningVar. Otherwise it normalises by the running buffers. w
// and b may be nil. num_batches_tracked is the caller's (nn.BatchNorm2d).
func (s *Scope) BatchNorm(x, w, b, runningMean, runningVar *Tensor, training bool, momentum, eps float64) *Tensor {
	if !s.required("batch_norm", x) {
		return nil
	}
	return s.run("batch_norm", []*Tensor{x, w, b, runningMean, runningVar}, func(in []C.ct_tensor, out *C.ct_tensor) C.ct_error {
		return C.ct_batch_norm(s.mode, in[0], in[1], in[2], in[3], in[4], cFlag(training), C.double(momentum), C.double(eps), out)
	})
}

// AvgPool2DOptions are F.avg_pool2d's hyper-parameters. A zero Stride means
// the kernel size (PyTorch's default); DivisorOverride 0 means none.
type AvgPool2DOptions struct {
	Kernel, Stride, Padding Pair
	CeilMode                bool
	CountIncludePad         bool
	DivisorOverride         int64
}

// AvgPool2DOpts returns PyTorch's defaults for a kernel: stride = kernel, no
// padding, floor mode, count_include_pad true.
func AvgPool2DOpts(kernel Pair) AvgPool2DOptions {
	return AvgPool2DOptions{Kernel: kernel, CountIncludePad: true}
}

// AvgPool2D is F.avg_pool2d.
func (s *Scope) AvgPool2D(x *Tensor, o AvgPool2DOptions) *Tensor {
	if !s.required("avg_pool2d", x) {
		return nil
	}
	if o.Stride == (Pair{}) {
		o.Stride = o.Kernel
	}
	return s.run(fmt.Sprintf("avg_pool2d%+v", o), []*Tensor{x}, func(in []C.ct_tensor, out *C.ct_tensor) C.ct_error {
		return C.ct_avg_pool2d(s.mode, in[0], o.Kernel.c(), o.Stride.c(), o.Padding.c(), cFlag(o.CeilMode), cFlag(o.CountIncludePad), C.int64_t(o.DivisorOverride), out)
	})
}

// MaxPool2DOptions are F.max_pool2d's hyper-parameters; zero Stride means the
// kernel size, zero Dilation means 1.
type MaxPool2DOptions struct {
	Kernel, Stride, Padding, Dilation Pair
	CeilMode                          bool
}

// MaxPool2D is F.max_pool2d (values only).
func (s *Scope) MaxPool2D(x *Tensor, o MaxPool2DOptions) *Tensor {
	if !s.required("max_pool2d", x) {
		return nil
	}
	if o.Stride == (Pair{}) {
		o.Stride = o.Kernel
	}
	if o.Dilation == (Pair{}) {
		o.Dilation = Sq(1)
	}
	return s.run(fmt.Sprintf("max_pool2d%+v", o), []*Tensor{x}, func(in []C.ct_tensor, out *C.ct_tensor) C.ct_error {
		return C.ct_max_pool2d(s.mode, in[0], o.Kernel.c(), o.Stride.c(), o.Padding.c(), o.Dilation.c(), cFlag(o.CeilMode), out)
	})
}

// AdaptiveAvgPool2D is F.adaptive_avg_pool2d to the output size.
func (s *Scope) AdaptiveAvgPool2D(x *Tensor, size Pair) *Tensor {
	if !s.required("adaptive_avg_pool2d", x) {
		return nil
	}
	return s.run(fmt.Sprintf("adaptive_avg_pool2d%v", size), []*Tensor{x}, func(in []C.ct_tensor, out *C.ct_tensor) C.ct_error {
		return C.ct_adaptive_avg_pool2d(s.mode, in[0], size.c(), out)
	})
}

// InterpMode is an interpolation mode of Interpolate.
type InterpMode int32

// Interpolation modes, as F.interpolate's mode strings.
const (
	Nearest  InterpMode = C.CT_INTERP_NEAREST
	Bilinear InterpMode = C.CT_INTERP_BILINEAR
	Bicubic  InterpMode = C.CT_INTERP_BICUBIC
)

func (m InterpMode) String() string {
	switch m {
	case Nearest:
		return "nearest"
	case Bilinear:
		return "bilinear"
	case Bicubic:
		return "bicubic"
	}
	return fmt.Sprintf("InterpMode(%d)", int32(m))
}

// Interpolate is F.interpolate(x, size=size, mode=mode,
// align_corners=alignCorners) of a [N,C,H,W] tensor (alignCorners is ignored
// for Nearest, as in PyTorch).
func (s *Scope) Interpolate(x *Tensor, size Pair, mode InterpMode, alignCorners bool) *Tensor {
	if !s.required("interpolate", x) {
		return nil
	}
	return s.run(fmt.Sprintf("interpolate(%v, %v)", size, mode), []*Tensor{x}, func(in []C.ct_tensor, out *C.ct_tensor) C.ct_error {
		return C.ct_interpolate(s.mode, in[0], size.c(), C.int32_t(mode), cFlag(alignCorners), out)
	})
}

// Flatten is torch.flatten(x, startDim, endDim).
func (s *Scope) Flatten(x *Tensor, startDim, endDim int64) *Tensor {
	if !s.required("flatten", x) {
		return nil
	}
	return s.run("flatten", []*Tensor{x}, func(in []C.ct_tensor, out *C.ct_tensor) C.ct_error {
		return C.ct_flatten(s.mode, in[0], C.int64_t(startDim), C.int64_t(endDim), out)
	})
}

// Amax is torch.amax over dims (over everything when dims is empty).
func (s *Scope) Amax(x *Tensor, keepdim bool, dims ...int64) *Tensor {
	if !s.required("amax", x) {
		return nil
	}
	return s.run("amax", []*Tensor{x}, func(in []C.ct_tensor, out *C.ct_tensor) C.ct_error {
		if len(dims) == 0 {
			return C.ct_amax(s.mode, in[0], nil, 0, cFlag(keepdim), out)
		}
		return C.ct_amax(s.mode, in[0], (*C.int64_t)(unsafe.Pointer(&dims[0])), C.int64_t(len(dims)), cFlag(keepdim), out)
	})
}

// MaskedFill is x.masked_fill(mask, value) with a bool mask broadcasting to x.
func (s *Scope) MaskedFill(x, mask *Tensor, value float64) *Tensor {
	if !s.required("masked_fill", x, mask) {
		return nil
	}
	return s.run("masked_fill", []*Tensor{x, mask}, func(in []C.ct_tensor, out *C.ct_tensor) C.ct_error {
		return C.ct_masked_fill(s.mode, in[0], in[1], C.double(value), out)
	})
}

// EmbeddingPadded is F.embedding with padding_idx: rows looked up at
// paddingIdx receive no gradient. A negative paddingIdx means none.
func (s *Scope) EmbeddingPadded(weight, ids *Tensor, paddingIdx int64) *Tensor {
	if !s.required("embedding", weight, ids) {
		return nil
	}
	return s.run("embedding", []*Tensor{weight, ids}, func(in []C.ct_tensor, out *C.ct_tensor) C.ct_error {
		return C.ct_embedding_ex(s.mode, in[0], in[1], C.int64_t(paddingIdx), out)
	})
}

// CosineEmbeddingLoss is F.cosine_embedding_loss(a, b, target, margin), mean
// reduction; target holds +1 or -1 per row.
func (s *Scope) CosineEmbeddingLoss(a, b, target *Tensor, margin float64) *Tensor {
	if !s.required("cosine_embedding_loss", a, b, target) {
		return nil
	}
	return s.run("cosine_embedding_loss", []*Tensor{a, b, target}, func(in []C.ct_tensor, out *C.ct_tensor) C.ct_error {
		return C.ct_cosine_embedding_loss(s.mode, in[0], in[1], in[2], C.double(margin), out)
	})
}

// ClipGradNorm is torch.nn.utils.clip_grad_norm_: it scales the gradients of
// params in place so that their joint normType-norm is at most maxNorm, and
// returns the norm before clipping. Tensors without a gradient are skipped;
// normType may be math.Inf(1).
func ClipGradNorm(params []*Tensor, maxNorm, normType float64) (float64, error) {
	if len(params) == 0 {
		return 0, nil
	}
	if math.IsNaN(normType) || normType <= 0 {
		return 0, fmt.Errorf("clip_grad_norm: norm type %v is not positive", normType)
	}
	hs := make([]C.ct_tensor, len(params)) // C handles, no Go pointers
	for i, p := range params {
		h, err := p.handle()
		if err != nil {
			return 0, fmt.Errorf("clip_grad_norm: parameter %d: %w", i, err)
		}
		hs[i] = h
	}
	var total C.double
	if err := cErr(C.ct_clip_grad_norm(&hs[0], C.int64_t(len(params)), C.double(maxNorm), C.double(normType), &total)); err != nil {
		return 0, fmt.Errorf("clip_grad_norm: %w", err)
	}
	return float64(total), nil
}

// MemoryFormat is how a 4-D tensor's elements are laid out in memory; the
// shape [N, C, H, W] is the same in both.
type MemoryFormat int32

const (
	// RowMajor is PyTorch's contiguous format (NCHW strides).
	RowMajor MemoryFormat = C.CT_FORMAT_CONTIGUOUS
	// ChannelsLast stores each pixel's channels together (NHWC strides),
	// which oneDNN's CPU convolutions and cuDNN's tensor cores run faster on.
	ChannelsLast MemoryFormat = C.CT_FORMAT_CHANNELS_LAST
)

// String names the format for error messages.
func (f MemoryFormat) String() string {
	switch f {
	case RowMajor:
		return "row-major"
	case ChannelsLast:
		return "channels-last"
	}
	return fmt.Sprintf("MemoryFormat(%d)", int32(f))
}

// ToMemoryFormat is x.contiguous(memory_format=f): x laid out in f (x itself,
// shared, when it already is). Values and gradients are unchanged; ops on
// the result keep the layout where PyTorch's kernels do.
func (s *Scope) ToMemoryFormat(x *Tensor, f MemoryFormat) *Tensor {
	if !s.required("to_memory_format", x) {
		return nil
	}
	return s.run("to_memory_format("+f.String()+")", []*Tensor{x}, func(in []C.ct_tensor, out *C.ct_tensor) C.ct_error {
		return C.ct_to_memory_format(s.mode, in[0], C.int32_t(f), out)
	})
}

// IsContiguousAs reports whether t is laid out densely in format f.
func (t *Tensor) IsContiguousAs(f MemoryFormat) (bool, error) {
	h, err := t.handle()
	if err != nil {
		return false, err
	}
	var r C.int32_t
	if err := cErr(C.ct_is_contiguous_as(h, C.int32_t(f), &r)); err != nil {
		return false, fmt.Errorf("is_contiguous(%v): %w", f, err)
	}
	return r != 0, nil
}
