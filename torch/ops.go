package torch

// #include "shim.h"
import "C"

import (
	"fmt"
	"unsafe"
)

// Binary and unary op codes of the shim (see cpp/shim.cc).
const (
	binAdd = iota
	binSub
	binMul
	binDiv
	binMaximum
	binMinimum
	binPow
	binRSub
)

const (
	unNeg = iota
	unExp
	unLog
	unSqrt
	unRelu
	unGelu
	unQuickGelu
	unSigmoid
	unTanh
	unAbs
	unRsqrt
	unSquare
)

var binNames = [...]string{"add", "sub", "mul", "div", "maximum", "minimum", "pow", "rsub"}
var unNames = [...]string{"neg", "exp", "log", "sqrt", "relu", "gelu", "quick_gelu", "sigmoid", "tanh", "abs", "rsqrt", "square"}

func (s *Scope) binary(op int, a, b *Tensor) *Tensor {
	if !s.required(binNames[op], a, b) {
		return nil
	}
	return s.run(binNames[op], []*Tensor{a, b}, func(in []C.ct_tensor, out *C.ct_tensor) C.ct_error {
		return C.ct_binary(s.mode, C.int32_t(op), in[0], in[1], out)
	})
}

func (s *Scope) scalar(op int, a *Tensor, v float64) *Tensor {
	if !s.required(binNames[op], a) {
		return nil
	}
	return s.run(binNames[op]+"_scalar", []*Tensor{a}, func(in []C.ct_tensor, out *C.ct_tensor) C.ct_error {
		return C.ct_binary_scalar(s.mode, C.int32_t(op), in[0], C.double(v), out)
	})
}

func (s *Scope) unary(op int, a *Tensor) *Tensor {
	if !s.required(unNames[op], a) {
		return nil
	}
	return s.run(unNames[op], []*Tensor{a}, func(in []C.ct_tensor, out *C.ct_tensor) C.ct_error {
		return C.ct_unary(s.mode, C.int32_t(op), in[0], out)
	})
}

// Add returns a+b (broadcasting).
func (s *Scope) Add(a, b *Tensor) *Tensor { return s.binary(binAdd, a, b) }

// Minus returns a-b.
func (s *Scope) Minus(a, b *Tensor) *Tensor { return s.binary(binSub, a, b) }

// Mul returns a*b elementwise.
func (s *Scope) Mul(a, b *Tensor) *Tensor { return s.binary(binMul, a, b) }

// Div returns a/b elementwise.
func (s *Scope) Div(a, b *Tensor) *Tensor { return s.binary(binDiv, a, b) }

// Maximum returns the elementwise maximum.
func (s *Scope) Maximum(a, b *Tensor) *Tensor { return s.binary(binMaximum, a, b) }

// AddScalar returns a+v.
func (s *Scope) AddScalar(a *Tensor, v float64) *Tensor { return s.scalar(binAdd, a, v) }

// MulScalar returns a*v.
func (s *Scope) MulScalar(a *Tensor, v float64) *Tensor { return s.scalar(binMul, a, v) }

// DivScalar returns a/v.
func (s *Scope) DivScalar(a *Tensor, v float64) *Tensor { return s.scalar(binDiv, a, v) }

// PowScalar returns a**v.
func (s *Scope) PowScalar(a *Tensor, v float64) *Tensor { return s.scalar(binPow, a, v) }

// ClampMin returns max(a, v).
func (s *Scope) ClampMin(a *Tensor, v float64) *Tensor { return s.scalar(binMaximum, a, v) }

// Neg returns -a.
func (s *Scope) Neg(a *Tensor) *Tensor { return s.unary(unNeg, a) }

// Exp returns e**a.
func (s *Scope) Exp(a *Tensor) *Tensor { return s.unary(unExp, a) }

// Log returns the natural logarithm.
func (s *Scope) Log(a *Tensor) *Tensor { return s.unary(unLog, a) }

// Sqrt returns the square root.
func (s *Scope) Sqrt(a *Tensor) *Tensor { return s.unary(unSqrt, a) }

// Relu returns max(a, 0).
func (s *Scope) Relu(a *Tensor) *Tensor { return s.unary(unRelu, a) }

// Gelu is the exact (erf) GELU.
func (s *Scope) Gelu(a *Tensor) *Tensor { return s.unary(unGelu, a) }

// QuickGelu is CLIP's activation x·sigmoid(1.702x).
func (s *Scope) QuickGelu(a *Tensor) *Tensor { return s.unary(unQuickGelu, a) }

// Sigmoid returns 1/(1+e**-a).
func (s *Scope) Sigmoid(a *Tensor) *Tensor { return s.unary(unSigmoid, a) }

// Tanh returns the hyperbolic tangent.
func (s *Scope) Tanh(a *Tensor) *Tensor { return s.unary(unTanh, a) }

// Square returns a*a.
func (s *Scope) Square(a *Tensor) *Tensor { return s.unary(unSquare, a) }

func (s *Scope) reduce(op int, name string, a *Tensor, dims []int64, keepdim bool) *Tensor {
	if !s.required(name, a) {
		return nil
	}
	k := C.int32_t(0)
	if keepdim {
		k = 1
	}
	return s.run(name, []*Tensor{a}, func(in []C.ct_tensor, out *C.ct_tensor) C.ct_error {
		return C.ct_reduce(s.mode, C.int32_t(op), in[0], cInt64s(dims), C.int64_t(len(dims)), k, out)
	})
}

// Sum over dims (all when dims is empty).
func (s *Scope) Sum(a *Tensor, keepdim bool, dims ...int64) *Tensor {
	return s.reduce(0, "sum", a, dims, keepdim)
}

// Mean over dims (all when dims is empty).
func (s *Scope) Mean(a *Tensor, keepdim bool, dims ...int64) *Tensor {
	return s.reduce(1, "mean", a, dims, keepdim)
}

// Argmax returns the index of the maximum along dim.
func (s *Scope) Argmax(a *Tensor, dim int64, keepdim bool) *Tensor {
	if !s.required("argmax", a) {
		return nil
	}
	k := C.int32_t(0)
	if keepdim {
		k = 1
	}
	return s.run("argmax", []*Tensor{a}, func(in []C.ct_tensor, out *C.ct_tensor) C.ct_error {
		return C.ct_argmax(s.mode, in[0], C.int64_t(dim), k, out)
	})
}

// LayerNorm normalises over the last dimension with optional weight and bias.
func (s *Scope) LayerNorm(x, w, b *Tensor, eps float64) *Tensor {
	if !s.required("layer_norm", x) {
		return nil
	}
	return s.run("layer_norm", []*Tensor{x, w, b}, func(in []C.ct_tensor, out *C.ct_tensor) C.ct_error {
		return C.ct_layer_norm(s.mode, in[0], in[1], in[2], C.double(eps), out)
	})
}

// Softmax along dim.
func (s *Scope) Softmax(x *Tensor, dim int64) *Tensor {
	if !s.required("softmax", x) {
		return nil
	}
	return s.run("softmax", []*Tensor{x}, func(in []C.ct_tensor, out *C.ct_tensor) C.ct_error {
		return C.ct_softmax(s.mode, in[0], C.int64_t(dim), out)
	})
}

// LogSoftmax along dim.
func (s *Scope) LogSoftmax(x *Tensor, dim int64) *Tensor {
	if !s.required("log_softmax", x) {
		return nil
	}
	return s.run("log_softmax", []*Tensor{x}, func(in []C.ct_tensor, out *C.ct_tensor) C.ct_error {
		return C.ct_log_softmax(s.mode, in[0], C.int64_t(dim), out)
	})
}

// MatMul is torch.matmul (batched, broadcasting).
func (s *Scope) MatMul(a, b *Tensor) *Tensor {
	if !s.required("matmul", a, b) {
		return nil
	}
	return s.run("matmul", []*Tensor{a, b}, func(in []C.ct_tensor, out *C.ct_tensor) C.ct_error {
		return C.ct_matmul(s.mode, in[0], in[1], out)
	})
}

// BMM is the batched matrix product of [B,N,M] and [B,M,P].
func (s *Scope) BMM(a, b *Tensor) *Tensor {
	if !s.required("bmm", a, b) {
		return nil
	}
	return s.run("bmm", []*Tensor{a, b}, func(in []C.ct_tensor, out *C.ct_tensor) C.ct_error {
		return C.ct_bmm(s.mode, in[0], in[1], out)
	})
}

// BAddBMM returns beta·self + alpha·(a @ b), batched.
func (s *Scope) BAddBMM(self, a, b *Tensor, beta, alpha float64) *Tensor {
	if !s.required("baddbmm", self, a, b) {
		return nil
	}
	return s.run("baddbmm", []*Tensor{self, a, b}, func(in []C.ct_tensor, out *C.ct_tensor) C.ct_error {
		return C.ct_baddbmm(s.mode, in[0], in[1], in[2], C.double(beta), C.double(alpha), out)
	})
}

// Linear returns x @ wᵀ + b (b may be nil).
func (s *Scope) Linear(x, w, b *Tensor) *Tensor {
	if !s.required("linear", x, w) {
		return nil
	}
	return s.run("linear", []*Tensor{x, w, b}, func(in []C.ct_tensor, out *C.ct_tensor) C.ct_error {
		return C.ct_linear(s.mode, in[0], in[1], in[2], out)
	})
}

// Conv2D is a 2-D convolution with square stride and padding; b may be nil.
func (s *Scope) Conv2D(x, w, b *Tensor, stride, padding int64) *Tensor {
	if !s.required("conv2d", x, w) {
		return nil
	}
	return s.run("conv2d", []*Tensor{x, w, b}, func(in []C.ct_tensor, out *C.ct_tensor) C.ct_error {
		return C.ct_conv2d(s.mode, in[0], in[1], in[2], C.int64_t(stride), C.int64_t(padding), out)
	})
}

// Embedding looks up rows of weight by integer ids.
func (s *Scope) Embedding(weight, ids *Tensor) *Tensor {
	if !s.required("embedding", weight, ids) {
		return nil
	}
	return s.run("embedding", []*Tensor{weight, ids}, func(in []C.ct_tensor, out *C.ct_tensor) C.ct_error {
		return C.ct_embedding(s.mode, in[0], in[1], out)
	})
}

// Normalize divides x by its L2 norm along dim (F.normalize, eps 1e-12).
func (s *Scope) Normalize(x *Tensor, dim int64) *Tensor {
	if !s.required("normalize", x) {
		return nil
	}
	return s.run("normalize", []*Tensor{x}, func(in []C.ct_tensor, out *C.ct_tensor) C.ct_error {
		return C.ct_normalize(s.mode, in[0], 2, C.int64_t(dim), 1e-12, out)
	})
}

// Dropout zeroes elements with probability p when train is true, scaling the
// rest by 1/(1-p); identity otherwise.
func (s *Scope) Dropout(x *Tensor, p float64, train bool) *Tensor {
	if !s.required("dropout", x) {
		return nil
	}
	tr := C.int32_t(0)
	if train {
		tr = 1
	}
	return s.run("dropout", []*Tensor{x}, func(in []C.ct_tensor, out *C.ct_tensor) C.ct_error {
		return C.ct_dropout(s.mode, in[0], C.double(p), tr, out)
	})
}

// MSELoss is the mean squared error.
func (s *Scope) MSELoss(a, b *Tensor) *Tensor {
	if !s.required("mse_loss", a, b) {
		return nil
	}
	return s.run("mse_loss", []*Tensor{a, b}, func(in []C.ct_tensor, out *C.ct_tensor) C.ct_error {
		return C.ct_mse_loss(s.mode, in[0], in[1], out)
	})
}

// Attention is scaled dot-product attention softmax(q·kᵀ/√d + mask)·v over
// [..., L, d] tensors; mask is additive and may be nil.
func (s *Scope) Attention(q, k, v, mask *Tensor) *Tensor {
	if !s.required("attention", q, k, v) {
		return nil
	}
	return s.run("attention", []*Tensor{q, k, v, mask}, func(in []C.ct_tensor, out *C.ct_tensor) C.ct_error {
		return C.ct_attention(s.mode, in[0], in[1], in[2], in[3], out)
	})
}

// Reshape returns x with a new shape (one dimension may be -1).
func (s *Scope) Reshape(x *Tensor, shape ...int64) *Tensor {
	if !s.required("reshape", x) {
		return nil
	}
	return s.run(fmt.Sprintf("reshape%v", shape), []*Tensor{x}, func(in []C.ct_tensor, out *C.ct_tensor) C.ct_error {
		return C.ct_reshape(s.mode, in[0], cInt64s(shape), C.int64_t(len(shape)), out)
	})
}

// Permute reorders dimensions.
func (s *Scope) Permute(x *Tensor, dims ...int64) *Tensor {
	if !s.required("permute", x) {
		return nil
	}
	return s.run(fmt.Sprintf("permute%v", dims), []*Tensor{x}, func(in []C.ct_tensor, out *C.ct_tensor) C.ct_error {
		return C.ct_permute(s.mode, in[0], cInt64s(dims), C.int64_t(len(dims)), out)
	})
}

// Transpose swaps two dimensions.
func (s *Scope) Transpose(x *Tensor, d0, d1 int64) *Tensor {
	if !s.required("transpose", x) {
		return nil
	}
	return s.run("transpose", []*Tensor{x}, func(in []C.ct_tensor, out *C.ct_tensor) C.ct_error {
		return C.ct_transpose(s.mode, in[0], C.int64_t(d0), C.int64_t(d1), out)
	})
}

// Expand broadcasts x to shape without copying (-1 keeps a dimension).
func (s *Scope) Expand(x *Tensor, shape ...int64) *Tensor {
	if !s.required("expand", x) {
		return nil
	}
	return s.run(fmt.Sprintf("expand%v", shape), []*Tensor{x}, func(in []C.ct_tensor, out *C.ct_tensor) C.ct_error {
		return C.ct_expand(s.mode, in[0], cInt64s(shape), C.int64_t(len(shape)), out)
	})
}

// Contiguous returns x laid out row-major.
func (s *Scope) Contiguous(x *Tensor) *Tensor {
	if !s.required("contiguous", x) {
		return nil
	}
	return s.run("contiguous", []*Tensor{x}, func(in []C.ct_tensor, out *C.ct_tensor) C.ct_error {
		return C.ct_contiguous(s.mode, in[0], out)
	})
}

func (s *Scope) list(name string, xs []*Tensor, f func(p *C.ct_tensor, n C.int64_t, out *C.ct_tensor) C.ct_error) *Tensor {
	if !s.required(name, xs...) {
		return nil
	}
	if len(xs) == 0 {
		s.Fail(fmt.Errorf("%s: no tensors", name))
		return nil
	}
	return s.run(name, xs, func(in []C.ct_tensor, out *C.ct_tensor) C.ct_error {
		return f((*C.ct_tensor)(unsafe.Pointer(&in[0])), C.int64_t(len(in)), out)
	})
}

// Cat concatenates along dim.
func (s *Scope) Cat(dim int64, xs ...*Tensor) *Tensor {
	return s.list("cat", xs, func(p *C.ct_tensor, n C.int64_t, out *C.ct_tensor) C.ct_error {
		return C.ct_cat(s.mode, p, n, C.int64_t(dim), out)
	})
}

// Stack joins tensors along a new dimension dim.
func (s *Scope) Stack(dim int64, xs ...*Tensor) *Tensor {
	return s.list("stack", xs, func(p *C.ct_tensor, n C.int64_t, out *C.ct_tensor) C.ct_error {
		return C.ct_stack(s.mode, p, n, C.int64_t(dim), out)
	})
}

// Narrow returns the slice [start, start+length) of dim (a view).
func (s *Scope) Narrow(x *Tensor, dim, start, length int64) *Tensor {
	if !s.required("narrow", x) {
		return nil
	}
	return s.run("narrow", []*Tensor{x}, func(in []C.ct_tensor, out *C.ct_tensor) C.ct_error {
		return C.ct_narrow(s.mode, in[0], C.int64_t(dim), C.int64_t(start), C.int64_t(length), out)
	})
}

// Select returns index i of dim, dropping that dimension (a view).
func (s *Scope) Select(x *Tensor, dim, i int64) *Tensor {
	if !s.required("select", x) {
		return nil
	}
	return s.run("select", []*Tensor{x}, func(in []C.ct_tensor, out *C.ct_tensor) C.ct_error {
		return C.ct_select(s.mode, in[0], C.int64_t(dim), C.int64_t(i), out)
	})
}

// IndexSelect picks entries of dim by an int64 index vector.
func (s *Scope) IndexSelect(x *Tensor, dim int64, index *Tensor) *Tensor {
	if !s.required("index_select", x, index) {
		return nil
	}
	return s.run("index_select", []*Tensor{x, index}, func(in []C.ct_tensor, out *C.ct_tensor) C.ct_error {
		return C.ct_index_select(s.mode, in[0], C.int64_t(dim), in[1], out)
	})
}

// Gather is torch.gather along dim.
func (s *Scope) Gather(x *Tensor, dim int64, index *Tensor) *Tensor {
	if !s.required("gather", x, index) {
		return nil
	}
	return s.run("gather", []*Tensor{x, index}, func(in []C.ct_tensor, out *C.ct_tensor) C.ct_error {
		return C.ct_gather(s.mode, in[0], C.int64_t(dim), in[1], out)
	})
}

// Squeeze removes dimension dim if it has size 1.
func (s *Scope) Squeeze(x *Tensor, dim int64) *Tensor {
	if !s.required("squeeze", x) {
		return nil
	}
	return s.run("squeeze", []*Tensor{x}, func(in []C.ct_tensor, out *C.ct_tensor) C.ct_error {
		return C.ct_squeeze(s.mode, in[0], C.int64_t(dim), out)
	})
}

// Unsqueeze inserts a dimension of size 1 at dim.
func (s *Scope) Unsqueeze(x *Tensor, dim int64) *Tensor {
	if !s.required("unsqueeze", x) {
		return nil
	}
	return s.run("unsqueeze", []*Tensor{x}, func(in []C.ct_tensor, out *C.ct_tensor) C.ct_error {
		return C.ct_unsqueeze(s.mode, in[0], C.int64_t(dim), out)
	})
}

// Triu keeps the upper triangle above diagonal, zeroing the rest.
func (s *Scope) Triu(x *Tensor, diagonal int64) *Tensor {
	if !s.required("triu", x) {
		return nil
	}
	return s.run("triu", []*Tensor{x}, func(in []C.ct_tensor, out *C.ct_tensor) C.ct_error {
		return C.ct_triu(s.mode, in[0], C.int64_t(diagonal), out)
	})
}

// To converts x to dtype dt on device d (a no-op copy when both match).
func (s *Scope) To(x *Tensor, dt DType, d Device) *Tensor {
	return s.to(x, dt, d, false)
}

// ToNonBlocking is To with an asynchronous host→CUDA copy (from pinned memory).
func (s *Scope) ToNonBlocking(x *Tensor, dt DType, d Device) *Tensor {
	return s.to(x, dt, d, true)
}

func (s *Scope) to(x *Tensor, dt DType, d Device, nb bool) *Tensor {
	if !s.required("to", x) {
		return nil
	}
	n := C.int32_t(0)
	if nb {
		n = 1
	}
	return s.run(fmt.Sprintf("to(%v, %v)", dt, d), []*Tensor{x}, func(in []C.ct_tensor, out *C.ct_tensor) C.ct_error {
		return C.ct_to(s.mode, in[0], C.int32_t(dt), C.int32_t(d.Type), C.int32_t(d.Index), n, out)
	})
}

// Cast converts x to dt on its own device.
func (s *Scope) Cast(x *Tensor, dt DType) *Tensor {
	if x == nil {
		return s.To(x, dt, CPU)
	}
	return s.To(x, dt, x.Device())
}

// PinMemory returns a copy of a CPU tensor in page-locked memory.
func (s *Scope) PinMemory(x *Tensor) *Tensor {
	if !s.required("pin_memory", x) {
		return nil
	}
	return s.run("pin_memory", []*Tensor{x}, func(in []C.ct_tensor, out *C.ct_tensor) C.ct_error {
		return C.ct_pin_memory(in[0], out)
	})
}

// Copy returns a deep copy of x (recorded by autograd in grad mode).
func (s *Scope) Copy(x *Tensor) *Tensor {
	if !s.required("clone", x) {
		return nil
	}
	return s.run("clone", []*Tensor{x}, func(in []C.ct_tensor, out *C.ct_tensor) C.ct_error {
		return C.ct_clone(s.mode, in[0], out)
	})
}

// Detach returns x cut from autograd history (shared storage).
func (s *Scope) Detach(x *Tensor) *Tensor {
	if !s.required("detach", x) {
		return nil
	}
	return s.run("detach", []*Tensor{x}, func(in []C.ct_tensor, out *C.ct_tensor) C.ct_error {
		return C.ct_detach(in[0], out)
	})
}

// Ref returns a new scope-owned handle to x (shared storage), so that x's
// owner may close its own handle independently.
func (s *Scope) Ref(x *Tensor) *Tensor {
	if !s.required("ref", x) {
		return nil
	}
	return s.run("ref", []*Tensor{x}, func(in []C.ct_tensor, out *C.ct_tensor) C.ct_error {
		return C.ct_tensor_shallow_copy(in[0], out)
	})
}

func (s *Scope) filled(name string, shape []int64, dt DType, f func(p *C.int64_t, n C.int64_t, out *C.ct_tensor) C.ct_error) *Tensor {
	if s.err != nil {
		return nil
	}
	return s.run(fmt.Sprintf("%s(%v %v)", name, dt, shape), nil, func(_ []C.ct_tensor, out *C.ct_tensor) C.ct_error {
		return f(cInt64s(shape), C.int64_t(len(shape)), out)
	})
}

// Full returns a tensor of shape filled with v, on the scope's device.
func (s *Scope) Full(v float64, dt DType, shape ...int64) *Tensor {
	d := s.device
	return s.filled("full", shape, dt, func(p *C.int64_t, n C.int64_t, out *C.ct_tensor) C.ct_error {
		return C.ct_full(p, n, C.double(v), C.int32_t(dt), C.int32_t(d.Type), C.int32_t(d.Index), out)
	})
}

// Zeros returns a zero tensor on the scope's device.
func (s *Scope) Zeros(dt DType, shape ...int64) *Tensor { return s.Full(0, dt, shape...) }

// Randn samples N(0,1) from libtorch's global generator (see ManualSeed).
func (s *Scope) Randn(dt DType, shape ...int64) *Tensor {
	d := s.device
	return s.filled("randn", shape, dt, func(p *C.int64_t, n C.int64_t, out *C.ct_tensor) C.ct_error {
		return C.ct_randn(p, n, C.int32_t(dt), C.int32_t(d.Type), C.int32_t(d.Index), out)
	})
}

// Rand samples U[0,1) from libtorch's global generator.
func (s *Scope) Rand(dt DType, shape ...int64) *Tensor {
	d := s.device
	return s.filled("rand", shape, dt, func(p *C.int64_t, n C.int64_t, out *C.ct_tensor) C.ct_error {
		return C.ct_rand(p, n, C.int32_t(dt), C.int32_t(d.Type), C.int32_t(d.Index), out)
	})
}

// Arange returns 0..end-1.
func (s *Scope) Arange(end int64, dt DType) *Tensor {
	d := s.device
	return s.filled("arange", nil, dt, func(_ *C.int64_t, _ C.int64_t, out *C.ct_tensor) C.ct_error {
		return C.ct_arange(C.int64_t(end), C.int32_t(dt), C.int32_t(d.Type), C.int32_t(d.Index), out)
	})
}

// FromFloat32 copies host values into a scope-owned tensor on the scope's
// device.
func (s *Scope) FromFloat32(data []float32, shape ...int64) *Tensor {
	return s.fromHost(fromSliceOn(data, Float32, shape, s.device))
}

// FromInt64 copies host ids into a scope-owned int64 tensor on the scope's
// device.
func (s *Scope) FromInt64(data []int64, shape ...int64) *Tensor {
	return s.fromHost(fromSliceOn(data, Int64, shape, s.device))
}

// FromFloat32On copies host values into a scope-owned tensor on device d.
func (s *Scope) FromFloat32On(d Device, data []float32, shape ...int64) *Tensor {
	return s.fromHost(fromSliceOn(data, Float32, shape, d))
}

// FromInt64On copies host ids into a scope-owned int64 tensor on device d.
func (s *Scope) FromInt64On(d Device, data []int64, shape ...int64) *Tensor {
	return s.fromHost(fromSliceOn(data, Int64, shape, d))
}

func (s *Scope) fromHost(t *Tensor, err error) *Tensor {
	if s.err != nil {
		t.Close()
		return nil
	}
	if err != nil {
		s.err = err
		return nil
	}
	return s.Adopt(t)
}
