package torch

import (
	"fmt"
	"strconv"
	"strings"
)

// DType is a libtorch scalar type; the values are c10::ScalarType codes.
type DType int32

// Scalar types used by clipagiqa.
const (
	Uint8    DType = 0
	Int8     DType = 1
	Int16    DType = 2
	Int32    DType = 3
	Int64    DType = 4
	Float16  DType = 5
	Float32  DType = 6
	Float64  DType = 7
	Bool     DType = 11
	BFloat16 DType = 15
	// InvalidDType is what Tensor.DType returns for a nil or closed tensor
	// (or when libtorch fails): never a real type, so callers comparing
	// dtypes see a mismatch instead of a plausible value.
	InvalidDType DType = -1
)

// Size is the number of bytes of one element.
func (d DType) Size() int {
	switch d {
	case Uint8, Int8, Bool:
		return 1
	case Int16, Float16, BFloat16:
		return 2
	case Int32, Float32:
		return 4
	case Int64, Float64:
		return 8
	}
	return 0
}

// IsFloat reports whether d is a floating-point type.
func (d DType) IsFloat() bool {
	return d == Float16 || d == Float32 || d == Float64 || d == BFloat16
}

func (d DType) String() string {
	switch d {
	case Uint8:
		return "uint8"
	case Int8:
		return "int8"
	case Int16:
		return "int16"
	case Int32:
		return "int32"
	case Int64:
		return "int64"
	case Float16:
		return "float16"
	case Float32:
		return "float32"
	case Float64:
		return "float64"
	case Bool:
		return "bool"
	case BFloat16:
		return "bfloat16"
	case InvalidDType:
		return "invalid dtype"
	}
	return fmt.Sprintf("dtype(%d)", int32(d))
}

// ParsePrecision maps "fp32", "fp16", "bf16" (and dtype names) to a DType.
func ParsePrecision(s string) (DType, error) {
	switch strings.ToLower(s) {
	case "fp32", "float32", "float", "":
		return Float32, nil
	case "fp16", "float16", "half":
		return Float16, nil
	case "bf16", "bfloat16":
		return BFloat16, nil
	}
	return 0, fmt.Errorf("unknown precision %q (want fp32, fp16 or bf16)", s)
}

// DeviceType is CPU or CUDA.
type DeviceType int32

// Device types.
const (
	CPUDevice DeviceType = 0
	CUDA      DeviceType = 1
	// InvalidDeviceType marks InvalidDevice.
	InvalidDeviceType DeviceType = -1
)

// Device names a compute device.
type Device struct {
	Type  DeviceType
	Index int
}

// CPU is the host device.
var CPU = Device{Type: CPUDevice}

// InvalidDevice is what Tensor.Device returns for a nil or closed tensor (or
// when libtorch fails), so it is never mistaken for the CPU.
var InvalidDevice = Device{Type: InvalidDeviceType, Index: -1}

func (d Device) String() string {
	switch d.Type {
	case CUDA:
		return "cuda:" + strconv.Itoa(d.Index)
	case InvalidDeviceType:
		return "invalid device"
	}
	return "cpu"
}

// ParseDevice parses "cpu", "cuda" or "cuda:N". It does not check that the
// device exists; see CheckDevice.
func ParseDevice(s string) (Device, error) {
	s = strings.ToLower(strings.TrimSpace(s))
	switch {
	case s == "" || s == "cpu":
		return CPU, nil
	case s == "cuda" || s == "gpu":
		return Device{Type: CUDA}, nil
	case strings.HasPrefix(s, "cuda:"):
		n, err := strconv.Atoi(s[len("cuda:"):])
		if err != nil || n < 0 {
			return Device{}, fmt.Errorf("bad device %q: want cpu, cuda or cuda:N", s)
		}
		return Device{Type: CUDA, Index: n}, nil
	}
	return Device{}, fmt.Errorf("bad device %q: want cpu, cuda or cuda:N", s)
}

// CheckDevice returns an error when d is a CUDA device that is not present.
func CheckDevice(d Device) error {
	if d.Type != CUDA {
		return nil
	}
	if !CUDAAvailable() {
		return fmt.Errorf("device %s requested but CUDA is not available (libtorch %s)", d, TorchVersion())
	}
	if n := CUDADeviceCount(); d.Index >= n {
		return fmt.Errorf("device %s requested but only %d CUDA device(s) present", d, n)
	}
	return nil
}
