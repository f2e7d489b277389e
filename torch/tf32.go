package torch

// #include <stdlib.h>
// #include "device.h"
import "C"

import (
	"errors"
	"unsafe"
)

func tf32Flag(b bool) C.int32_t {
	if b {
		return 1
	}
	return 0
}

// SetAllowTF32 allows or forbids TF32 tensor-core arithmetic in CUDA fp32
// matmuls (cuBLAS) and convolutions (cuDNN). libtorch allows it for cuDNN by
// default; fp32 parity checks on CUDA turn it off. Without CUDA it only
// records the setting.
func SetAllowTF32(cublas, cudnn bool) error {
	e := C.ct_set_allow_tf32(tf32Flag(cublas), tf32Flag(cudnn))
	if e == nil {
		return nil
	}
	msg := C.GoString(e)
	C.free(unsafe.Pointer(e))
	return errors.New(msg)
}

// AllowTF32 reports the current settings for cuBLAS and cuDNN.
func AllowTF32() (cublas, cudnn bool) {
	v := C.ct_allow_tf32()
	return v >= 0 && v&1 != 0, v >= 0 && v&2 != 0
}
