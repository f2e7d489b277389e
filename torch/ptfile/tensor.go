package ptfile

import (
	"encoding/binary"
	"fmt"
	"math"
)

// Tensor is a dense CPU tensor in raw form.
//
// Data holds NumElements()*DType.Size() little-endian bytes in contiguous
// row-major order: the storage offset and the saved strides have already been
// applied, so Strides is always the contiguous stride of Shape (in elements).
// Tensors read from a file may share Data with other tensors of the same
// storage; copy before mutating.
type Tensor struct {
	DType   DType
	Shape   []int64
	Strides []int64
	Data    []byte
}

// NamedTensor pairs a state-dict name with its tensor.
type NamedTensor struct {
	Name   string
	Tensor *Tensor
}

// ContiguousStrides returns the row-major strides (in elements) of shape.
func ContiguousStrides(shape []int64) []int64 {
	st := make([]int64, len(shape))
	acc := int64(1)
	for i := len(shape) - 1; i >= 0; i-- {
		st[i] = acc
		if shape[i] > 1 {
			acc *= shape[i]
		}
	}
	return st
}

// numElements multiplies shape out, reporting overflow or negative sizes.
func numElements(shape []int64) (int64, error) {
	n := int64(1)
	for _, s := range shape {
		if s < 0 {
			return 0, fmt.Errorf("negative dimension in shape %v", shape)
		}
		if s != 0 && n > math.MaxInt64/s {
			return 0, fmt.Errorf("shape %v overflows int64", shape)
		}
		n *= s
	}
	return n, nil
}

// NumElements is the product of Shape (1 for a 0-dim tensor).
func (t *Tensor) NumElements() int64 {
	n, err := numElements(t.Shape)
	if err != nil {
		return 0
	}
	return n
}

// NewTensor checks that data fits dtype and shape and wraps it (no copy).
func NewTensor(dtype DType, shape []int64, data []byte) (*Tensor, error) {
	if !dtype.valid() {
		return nil, fmt.Errorf("ptfile: unsupported dtype %v", dtype)
	}
	n, err := numElements(shape)
	if err != nil {
		return nil, fmt.Errorf("ptfile: %w", err)
	}
	if want := n * int64(dtype.Size()); int64(len(data)) != want {
		return nil, fmt.Errorf("ptfile: %s tensor of shape %v needs %d bytes, got %d", dtype, shape, want, len(data))
	}
	sh := append([]int64{}, shape...)
	return &Tensor{DType: dtype, Shape: sh, Strides: ContiguousStrides(sh), Data: data}, nil
}

// FromFloat32s builds a tensor of a floating dtype from float32 values,
// rounding to nearest-even for Float16 and BFloat16.
func FromFloat32s(dtype DType, shape []int64, vals []float32) (*Tensor, error) {
	if !dtype.IsFloat() {
		return nil, fmt.Errorf("ptfile: FromFloat32s: %s is not a floating type", dtype)
	}
	buf := make([]byte, len(vals)*dtype.Size())
	for i, v := range vals {
		switch dtype {
		case Float32:
			binary.LittleEndian.PutUint32(buf[4*i:], math.Float32bits(v))
		case Float16:
			binary.LittleEndian.PutUint16(buf[2*i:], Float32ToHalf(v))
		case BFloat16:
			binary.LittleEndian.PutUint16(buf[2*i:], Float32ToBFloat16(v))
		case Float64:
			binary.LittleEndian.PutUint64(buf[8*i:], math.Float64bits(float64(v)))
		}
	}
	return NewTensor(dtype, shape, buf)
}

// FromInt64s builds an Int64 tensor.
func FromInt64s(shape []int64, vals []int64) (*Tensor, error) {
	buf := make([]byte, 8*len(vals))
	for i, v := range vals {
		binary.LittleEndian.PutUint64(buf[8*i:], uint64(v))
	}
	return NewTensor(Int64, shape, buf)
}

// checkData guards the conversion helpers against hand-built tensors whose
// Data does not match Shape.
func (t *Tensor) checkData() (int, error) {
	if !t.DType.valid() {
		return 0, fmt.Errorf("ptfile: unsupported dtype %v", t.DType)
	}
	n, err := numElements(t.Shape)
	if err != nil {
		return 0, fmt.Errorf("ptfile: %w", err)
	}
	if int64(len(t.Data)) != n*int64(t.DType.Size()) {
		return 0, fmt.Errorf("ptfile: %s tensor of shape %v has %d data bytes, want %d", t.DType, t.Shape, len(t.Data), n*int64(t.DType.Size()))
	}
	return int(n), nil
}

// Float32s returns the values as float32, upcasting Float16 and BFloat16
// exactly and rounding Float64. Integer and bool tensors are an error: use
// Int64s.
func (t *Tensor) Float32s() ([]float32, error) {
	n, err := t.checkData()
	if err != nil {
		return nil, err
	}
	out := make([]float32, n)
	d := t.Data
	switch t.DType {
	case Float32:
		for i := range out {
			out[i] = math.Float32frombits(binary.LittleEndian.Uint32(d[4*i:]))
		}
	case Float16:
		for i := range out {
			out[i] = HalfToFloat32(binary.LittleEndian.Uint16(d[2*i:]))
		}
	case BFloat16:
		for i := range out {
			out[i] = BFloat16ToFloat32(binary.LittleEndian.Uint16(d[2*i:]))
		}
	case Float64:
		for i := range out {
			out[i] = float32(math.Float64frombits(binary.LittleEndian.Uint64(d[8*i:])))
		}
	default:
		return nil, fmt.Errorf("ptfile: Float32s on a %s tensor", t.DType)
	}
	return out, nil
}

// Int64s returns the values of an integer or bool tensor as int64.
func (t *Tensor) Int64s() ([]int64, error) {
	n, err := t.checkData()
	if err != nil {
		return nil, err
	}
	out := make([]int64, n)
	d := t.Data
	switch t.DType {
	case Int64:
		for i := range out {
			out[i] = int64(binary.LittleEndian.Uint64(d[8*i:]))
		}
	case Int32:
		for i := range out {
			out[i] = int64(int32(binary.LittleEndian.Uint32(d[4*i:])))
		}
	case Int16:
		for i := range out {
			out[i] = int64(int16(binary.LittleEndian.Uint16(d[2*i:])))
		}
	case Int8:
		for i := range out {
			out[i] = int64(int8(d[i]))
		}
	case Uint8, Bool:
		for i := range out {
			out[i] = int64(d[i])
		}
	default:
		return nil, fmt.Errorf("ptfile: Int64s on a %s tensor", t.DType)
	}
	return out, nil
}

// gather copies a strided view of a storage into a new contiguous buffer.
// The caller has checked that every index lies inside src.
func gather(src []byte, es int, offset int64, shape, strides []int64, n int64) []byte {
	out := make([]byte, n*int64(es))
	idx := make([]int64, len(shape))
	pos := offset
	for k := int64(0); k < n; k++ {
		copy(out[k*int64(es):(k+1)*int64(es)], src[pos*int64(es):(pos+1)*int64(es)])
		// Odometer increment over the dims, last dim fastest.
		for d := len(shape) - 1; d >= 0; d-- {
			idx[d]++
			pos += strides[d]
			if idx[d] < shape[d] {
				break
			}
			pos -= strides[d] * shape[d]
			idx[d] = 0
		}
	}
	return out
}
