package ptfile

import (
	"fmt"
	"math"
)

// DType is the element type of a tensor.
type DType int

// The element types that torch.save storages can hold and this package reads.
const (
	Invalid DType = iota
	Float32
	Float16
	BFloat16
	Float64
	Int64
	Int32
	Int16
	Int8
	Uint8
	Bool
)

var dtypeInfo = [...]struct {
	name    string // PyTorch's name without the "torch." prefix
	storage string // legacy typed-storage class written in persistent ids
	size    int
}{
	Invalid:  {"invalid", "", 0},
	Float32:  {"float32", "FloatStorage", 4},
	Float16:  {"float16", "HalfStorage", 2},
	BFloat16: {"bfloat16", "BFloat16Storage", 2},
	Float64:  {"float64", "DoubleStorage", 8},
	Int64:    {"int64", "LongStorage", 8},
	Int32:    {"int32", "IntStorage", 4},
	Int16:    {"int16", "ShortStorage", 2},
	Int8:     {"int8", "CharStorage", 1},
	Uint8:    {"uint8", "ByteStorage", 1},
	Bool:     {"bool", "BoolStorage", 1},
}

func (d DType) valid() bool { return d > Invalid && int(d) < len(dtypeInfo) }

// String returns PyTorch's name of the type ("float32", "float16", ...).
func (d DType) String() string {
	if !d.valid() {
		return fmt.Sprintf("DType(%d)", int(d))
	}
	return dtypeInfo[d].name
}

// Size is the number of bytes of one element (0 for an invalid DType).
func (d DType) Size() int {
	if !d.valid() {
		return 0
	}
	return dtypeInfo[d].size
}

// StorageClass is the torch class name used for this type in persistent ids
// ("FloatStorage", "HalfStorage", ...).
func (d DType) StorageClass() string {
	if !d.valid() {
		return ""
	}
	return dtypeInfo[d].storage
}

// IsFloat reports whether d is a floating-point type.
func (d DType) IsFloat() bool {
	return d == Float32 || d == Float16 || d == BFloat16 || d == Float64
}

// dtypeFromStorage maps a storage class name to its DType. UntypedStorage
// (torch >= 2 for raw byte storages) holds bytes.
func dtypeFromStorage(name string) (DType, bool) {
	if name == "UntypedStorage" {
		return Uint8, true
	}
	for d := Float32; d.valid(); d++ {
		if dtypeInfo[d].storage == name {
			return d, true
		}
	}
	return Invalid, false
}

// HalfToFloat32 converts IEEE 754 binary16 bits to float32 (exact).
func HalfToFloat32(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h & 0x3ff)
	switch {
	case exp == 0:
		// Zero or subnormal: mant * 2^-24 is exact in float32.
		f := float32(mant) * (1.0 / (1 << 24))
		if sign != 0 {
			f = -f
		}
		return f
	case exp == 0x1f:
		return math.Float32frombits(sign | 0x7f800000 | mant<<13)
	default:
		return math.Float32frombits(sign | (exp+112)<<23 | mant<<13)
	}
}

// Float32ToHalf rounds f to the nearest binary16 value (ties to even), as
// torch's .half() does; out-of-range values become ±Inf.
func Float32ToHalf(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int32(b>>23) & 0xff
	mant := b & 0x7fffff
	if exp == 0xff {
		if mant != 0 {
			// Keep NaN a NaN: force the quiet bit so the payload cannot vanish.
			return sign | 0x7e00 | uint16(mant>>13)
		}
		return sign | 0x7c00
	}
	e := exp - 127 + 15
	if e >= 31 {
		return sign | 0x7c00
	}
	if e <= 0 {
		if e < -10 {
			return sign
		}
		m := mant | 0x800000
		shift := uint32(14 - e)
		hm := m >> shift
		rem := m & (1<<shift - 1)
		halfway := uint32(1) << (shift - 1)
		if rem > halfway || (rem == halfway && hm&1 == 1) {
			hm++ // a carry into 0x400 yields the smallest normal, as wanted
		}
		return sign | uint16(hm)
	}
	h := uint32(e)<<10 | mant>>13
	rem := mant & 0x1fff
	if rem > 0x1000 || (rem == 0x1000 && h&1 == 1) {
		h++ // a carry into the exponent is the correct rounding
	}
	if h >= 0x7c00 {
		return sign | 0x7c00
	}
	return sign | uint16(h)
}

// BFloat16ToFloat32 converts bfloat16 bits to float32 (exact).
func BFloat16ToFloat32(h uint16) float32 {
	return math.Float32frombits(uint32(h) << 16)
}

// Float32ToBFloat16 rounds f to bfloat16 (ties to even), as torch does.
func Float32ToBFloat16(f float32) uint16 {
	b := math.Float32bits(f)
	if b&0x7fffffff > 0x7f800000 {
		return uint16(b>>16) | 0x40 // quiet NaN
	}
	return uint16((b + 0x7fff + (b>>16)&1) >> 16)
}
