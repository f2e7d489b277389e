package data

import (
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strings"
)

// MatVar is one numeric (or logical) array read from a MAT-file, stored
// column-major as MATLAB does.
type MatVar struct {
	Name string
	// Class is MATLAB's class: "double", "single", "int8" … "uint64" or
	// "logical".
	Class string
	Dims  []int
	// Data holds the real part converted to float64, column-major.
	Data []float64
	// Imag holds the imaginary part of a complex array, else nil.
	Imag []float64
}

// At returns element (i, j) of a 2-D array.
func (v *MatVar) At(i, j int) float64 { return v.Data[j*v.Dims[0]+i] }

// IsVector reports whether the array has at most one dimension above 1.
func (v *MatVar) IsVector() bool {
	big := 0
	for _, d := range v.Dims {
		if d > 1 {
			big++
		}
	}
	return big <= 1
}

// Limits against corrupt or hostile files; MOS tables are tiny.
const (
	matMaxFile  = 1 << 30
	matMaxDepth = 8
)

// MAT v5 element types used below (MATLAB's "MAT-File
// Format" document).
const (
	miINT8       = 1
	miUINT8      = 2
	miINT16      = 3
	miUINT16     = 4
	miINT32      = 5
	miUINT32     = 6
	miSINGLE     = 7
	miDOUBLE     = 9
	miINT64      = 12
	miUINT64     = 13
	miMATRIX     = 14
	miCOMPRESSED = 15
)

var matClassNames = map[byte]string{
	6: "double", 7: "single", 8: "int8", 9: "uint8", 10: "int16", 11: "uint16",
	12: "int32", 13: "uint32", 14: "int64", 15: "uint64",
}

// ReadMatFile reads the numeric variables of a MAT-file; see ReadMat.
func ReadMatFile(path string) ([]MatVar, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read mat: %w", err)
	}
	defer f.Close()
	vars, err := ReadMat(f)
	if err != nil {
		return nil, fmt.Errorf("read mat %s: %w", path, err)
	}
	return vars, nil
}

// ReadMat reads a MATLAB level 5 MAT-file (as written by MATLAB up to
// -v7, zlib-compressed or not, either byte order) and returns its numeric
// and logical arrays in file order. Cell, struct, object, char and sparse
// variables are skipped. HDF5-based -v7.3 files and v4 files are rejected
// with an error saying so.
func ReadMat(r io.Reader) ([]MatVar, error) {
	raw, err := io.ReadAll(io.LimitReader(r, matMaxFile+1))
	if err != nil {
		return nil, err
	}
	if len(raw) > matMaxFile {
		return nil, fmt.Errorf("file larger than %d bytes", matMaxFile)
	}
	if len(raw) < 128 {
		return nil, errors.New("too short for a MAT-file header (128 bytes)")
	}
	var order binary.ByteOrder
	switch string(raw[126:128]) {
	case "IM":
		order = binary.LittleEndian
	case "MI":
		order = binary.BigEndian
	default:
		if bytes.HasPrefix(raw, []byte("MATLAB")) {
			return nil, errors.New("MAT-file header without a valid endian indicator")
		}
		return nil, errors.New("not a MATLAB level 5 MAT-file (a v4 file or another format)")
	}
	switch v := order.Uint16(raw[124:126]); v {
	case 0x0100:
	case 0x0200:
		return nil, errors.New("MATLAB -v7.3 (HDF5) MAT-files are not supported; save with -v7 or -v6")
	default:
		return nil, fmt.Errorf("unsupported MAT-file version 0x%04x", v)
	}
	p := &matParser{order: order}
	if err := p.elements(raw[128:], 0); err != nil {
		return nil, err
	}
	return p.vars, nil
}

type matParser struct {
	order binary.ByteOrder
	vars  []MatVar
}

// tag decodes a data element tag at b, handling the 4-byte "small data
// element" form. It returns the type, the payload and the total size of
// the element including padding to 8 bytes (none for compressed data).
func (p *matParser) tag(b []byte) (typ uint32, payload []byte, size int, err error) {
	if len(b) < 8 {
		return 0, nil, 0, fmt.Errorf("truncated element tag (%d bytes left)", len(b))
	}
	first := p.order.Uint32(b)
	if first>>16 != 0 {
		// Small element: type and length share the first word and the
		// payload sits in the second.
		n := int(first >> 16)
		if n > 4 {
			return 0, nil, 0, fmt.Errorf("small data element of %d bytes", n)
		}
		return first & 0xffff, b[4 : 4+n], 8, nil
	}
	n := uint64(p.order.Uint32(b[4:]))
	if n > uint64(len(b)-8) {
		return 0, nil, 0, fmt.Errorf("element of type %d claims %d bytes, %d left", first, n, len(b)-8)
	}
	size = 8 + int(n)
	if first != miCOMPRESSED {
		size = min(len(b), (size+7)&^7)
	}
	return first, b[8 : 8+n], size, nil
}

// elements parses a sequence of top-level data elements.
func (p *matParser) elements(b []byte, depth int) error {
	if depth > matMaxDepth {
		return errors.New("compressed elements nested too deeply")
	}
	for len(b) > 0 {
		if len(b) < 8 && allZero(b) {
			return nil // trailing padding
		}
		typ, payload, size, err := p.tag(b)
		if err != nil {
			return err
		}
		switch typ {
		case miCOMPRESSED:
			inner, err := inflate(payload)
			if err != nil {
				return err
			}
			if err := p.elements(inner, depth+1); err != nil {
				return err
			}
		case miMATRIX:
			if err := p.matrix(payload); err != nil {
				return err
			}
		}
		b = b[size:]
	}
	return nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

func inflate(b []byte) ([]byte, error) {
	zr, err := zlib.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("compressed element: %w", err)
	}
	defer zr.Close()
	out, err := io.ReadAll(io.LimitReader(zr, matMaxFile+1))
	if err != nil {
		return nil, fmt.Errorf("compressed element: %w", err)
	}
	if len(out) > matMaxFile {
		return nil, fmt.Errorf("compressed element inflates beyond %d bytes", matMaxFile)
	}
	return out, nil
}

// matrix parses the sub-elements of an miMATRIX: flags, dimensions, name,
// then the real and optional imaginary parts.
func (p *matParser) matrix(b []byte) error {
	if len(b) == 0 {
		return nil // an empty placeholder array
	}
	next := func(what string) (uint32, []byte, error) {
		typ, payload, size, err := p.tag(b)
		if err != nil {
			return 0, nil, fmt.Errorf("array %s: %w", what, err)
		}
		b = b[size:]
		return typ, payload, nil
	}
	typ, flags, err := next("flags")
	if err != nil {
		return err
	}
	if typ != miUINT32 || len(flags) < 8 {
		return fmt.Errorf("array flags: element type %d of %d bytes", typ, len(flags))
	}
	word := p.order.Uint32(flags)
	class := byte(word & 0xff)
	complexArr := word&0x0800 != 0
	logical := word&0x0200 != 0

	typ, dimsRaw, err := next("dimensions")
	if err != nil {
		return err
	}
	if typ != miINT32 || len(dimsRaw)%4 != 0 || len(dimsRaw) < 8 {
		return fmt.Errorf("array dimensions: element type %d of %d bytes", typ, len(dimsRaw))
	}
	dims := make([]int, len(dimsRaw)/4)
	count := 1
	for i := range dims {
		d := int32(p.order.Uint32(dimsRaw[4*i:]))
		if d < 0 {
			return fmt.Errorf("array dimensions: negative size %d", d)
		}
		dims[i] = int(d)
		if count > 0 && dims[i] > matMaxFile/count {
			return fmt.Errorf("array dimensions %v too large", dims)
		}
		count *= dims[i]
	}
	_, nameRaw, err := next("name")
	if err != nil {
		return err
	}
	name := string(nameRaw)

	className, numeric := matClassNames[class]
	if !numeric {
		return nil // cell, struct, object, char, sparse: not needed here
	}
	if logical {
		className = "logical"
	}
	v := MatVar{Name: name, Class: className, Dims: dims}
	typ, re, err := next("real part of " + name)
	if err != nil {
		return err
	}
	if v.Data, err = p.numbers(typ, re, count); err != nil {
		return fmt.Errorf("variable %s: %w", name, err)
	}
	if complexArr {
		typ, im, err := next("imaginary part of " + name)
		if err != nil {
			return err
		}
		if v.Imag, err = p.numbers(typ, im, count); err != nil {
			return fmt.Errorf("variable %s (imaginary part): %w", name, err)
		}
	}
	p.vars = append(p.vars, v)
	return nil
}

// numbers converts a numeric payload of the given storage type to float64.
// MATLAB may store an array in a narrower type than its class (e.g. a
// double array of small integers as miUINT8), so any type is accepted.
func (p *matParser) numbers(typ uint32, b []byte, count int) ([]float64, error) {
	var width int
	switch typ {
	case miINT8, miUINT8:
		width = 1
	case miINT16, miUINT16:
		width = 2
	case miINT32, miUINT32, miSINGLE:
		width = 4
	case miDOUBLE, miINT64, miUINT64:
		width = 8
	default:
		return nil, fmt.Errorf("unsupported numeric storage type %d", typ)
	}
	if len(b) != count*width {
		return nil, fmt.Errorf("%d bytes of type %d for %d elements", len(b), typ, count)
	}
	out := make([]float64, count)
	o := p.order
	for i := range out {
		c := b[i*width:]
		switch typ {
		case miINT8:
			out[i] = float64(int8(c[0]))
		case miUINT8:
			out[i] = float64(c[0])
		case miINT16:
			out[i] = float64(int16(o.Uint16(c)))
		case miUINT16:
			out[i] = float64(o.Uint16(c))
		case miINT32:
			out[i] = float64(int32(o.Uint32(c)))
		case miUINT32:
			out[i] = float64(o.Uint32(c))
		case miSINGLE:
			out[i] = float64(math.Float32frombits(o.Uint32(c)))
		case miDOUBLE:
			out[i] = math.Float64frombits(o.Uint64(c))
		case miINT64:
			out[i] = float64(int64(o.Uint64(c)))
		case miUINT64:
			out[i] = float64(o.Uint64(c))
		}
	}
	return out, nil
}

// MatVector returns the named variable of vars as a vector; name "" picks
// the only numeric variable. It errors if the variable is missing,
// ambiguous, complex or not a vector.
func MatVector(vars []MatVar, name string) ([]float64, error) {
	var v *MatVar
	if name == "" {
		if len(vars) != 1 {
			names := make([]string, len(vars))
			for i := range vars {
				names[i] = vars[i].Name
			}
			return nil, fmt.Errorf("want exactly one numeric variable, found %d (%s)", len(vars), strings.Join(names, ", "))
		}
		v = &vars[0]
	} else {
		for i := range vars {
			if vars[i].Name == name {
				v = &vars[i]
				break
			}
		}
		if v == nil {
			return nil, fmt.Errorf("no numeric variable %q", name)
		}
	}
	if v.Imag != nil {
		return nil, fmt.Errorf("variable %s is complex", v.Name)
	}
	if !v.IsVector() {
		return nil, fmt.Errorf("variable %s has dimensions %v, want a vector", v.Name, v.Dims)
	}
	return v.Data, nil
}
