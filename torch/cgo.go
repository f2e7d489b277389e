// Package torch is clipagiqa's Go layer over libtorch. It extends gotorch: the
// tensor handles are the same at::Tensor pointers, so tensors travel both ways
// (see FromGotorch and Tensor.Gotorch), and it adds the ops CLIP needs, each
// returning errors instead of panicking.
//
// Memory is freed deterministically through a Scope: every tensor an op
// creates belongs to the scope that ran it and is freed by Scope.Close. A
// finalizer is only a backstop; LiveTensors counts handles still open.
//
// Grad mode and autocast are properties of a Scope, passed to each native call,
// because libtorch keeps them per OS thread while goroutines move between
// threads.
package torch

// The native libraries come from pkg-config (clipagiqa.pc, installed by `make
// install` or the Debian package; inside this repo the Makefile points
// PKG_CONFIG_PATH at build/pkgconfig). Binaries link only our two libraries,
// which carry libtorch themselves.

// #cgo CFLAGS: -I${SRCDIR}/../cpp
// #cgo pkg-config: clipagiqa
// #include <stdlib.h>
// #include "shim.h"
import "C"

import (
	"errors"
	"fmt"
	"sync"
	"unsafe"
)

// ShimVersion is the native shim interface this package was written for.
const ShimVersion = "clipagiqa-shim/4"

var (
	runtimeOnce sync.Once
	runtimeErr  error
)

// CheckRuntime verifies that the loaded native shim is the one this package
// expects, so a stale library is reported instead of misbehaving.
func CheckRuntime() error {
	runtimeOnce.Do(func() {
		got := C.GoString(C.ct_shim_version())
		if got != ShimVersion {
			runtimeErr = fmt.Errorf("torch: native shim is %q, this program needs %q: rebuild with `make native`", got, ShimVersion)
		}
	})
	return runtimeErr
}

// cErr converts a shim error (malloc'd string or NULL) into a Go error.
func cErr(e C.ct_error) error {
	if e == nil {
		return nil
	}
	msg := C.GoString(e)
	C.ct_free_string(e)
	return errors.New(msg)
}

// TorchVersion is the version of the libtorch the shim was compiled against.
func TorchVersion() string { return C.GoString(C.ct_torch_version()) }

// NativeShimVersion is the version string reported by the loaded shim.
func NativeShimVersion() string { return C.GoString(C.ct_shim_version()) }

// CUDAAvailable reports whether libtorch sees a usable CUDA device.
func CUDAAvailable() bool { return C.ct_cuda_is_available() != 0 }

// CUDADeviceCount is the number of CUDA devices libtorch sees.
func CUDADeviceCount() int { return int(C.ct_cuda_device_count()) }

// HasFusedAttention reports whether attention uses libtorch's fused
// scaled_dot_product_attention (libtorch 2.x) rather than matmul+softmax.
func HasFusedAttention() bool { return C.ct_has_fused_attention() != 0 }

// SetNumThreads sets libtorch's intra-op CPU thread count.
func SetNumThreads(n int) error {
	return cErr(C.ct_set_num_threads(C.int32_t(n)))
}

// NumThreads is libtorch's intra-op CPU thread count.
func NumThreads() int { return int(C.ct_get_num_threads()) }

// ManualSeed seeds libtorch's global random generators (CPU and CUDA).
func ManualSeed(seed uint64) error { return cErr(C.ct_manual_seed(C.uint64_t(seed))) }

// Synchronize waits for all work queued on a CUDA device; a no-op on CPU.
func Synchronize(d Device) error {
	if d.Type != CUDA {
		return nil
	}
	return cErr(C.ct_cuda_synchronize(C.int32_t(d.Index)))
}

func cInt64s(v []int64) *C.int64_t {
	if len(v) == 0 {
		return nil
	}
	return (*C.int64_t)(unsafe.Pointer(&v[0]))
}
