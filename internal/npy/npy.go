// Package npy reads and writes NumPy .npy files of little-endian float32,
// float64 and int64 arrays (C order), the format our reference fixtures use.
package npy

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"regexp"
	"strconv"
	"strings"
)

// Array is a decoded array; exactly one of F32, I64 is set (float64 data is
// converted to F32 too, with F64 kept).
type Array struct {
	Shape []int64
	F32   []float32
	F64   []float64
	I64   []int64
}

var (
	descrRe = regexp.MustCompile(`'descr':\s*'([^']+)'`)
	orderRe = regexp.MustCompile(`'fortran_order':\s*(True|False)`)
	shapeRe = regexp.MustCompile(`'shape':\s*\(([^)]*)\)`)
)

// ReadFile decodes a .npy file.
func ReadFile(path string) (*Array, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	a, err := Decode(b)
	if err != nil {
		return nil, fmt.Errorf("npy %s: %w", path, err)
	}
	return a, nil
}

// Decode parses .npy bytes.
func Decode(b []byte) (*Array, error) {
	if len(b) < 10 || !bytes.Equal(b[:6], []byte("\x93NUMPY")) {
		return nil, fmt.Errorf("not a .npy file")
	}
	var hlen, off int
	switch b[6] {
	case 1:
		hlen, off = int(binary.LittleEndian.Uint16(b[8:10])), 10
	case 2, 3:
		if len(b) < 12 {
			return nil, fmt.Errorf("truncated header")
		}
		hlen, off = int(binary.LittleEndian.Uint32(b[8:12])), 12
	default:
		return nil, fmt.Errorf("unsupported .npy version %d", b[6])
	}
	if off+hlen > len(b) {
		return nil, fmt.Errorf("truncated header")
	}
	h := string(b[off : off+hlen])
	data := b[off+hlen:]
	d := descrRe.FindStringSubmatch(h)
	o := orderRe.FindStringSubmatch(h)
	s := shapeRe.FindStringSubmatch(h)
	if d == nil || o == nil || s == nil {
		return nil, fmt.Errorf("bad header %q", h)
	}
	if o[1] == "True" {
		return nil, fmt.Errorf("fortran order not supported")
	}
	a := &Array{}
	n := int64(1)
	for _, p := range strings.Split(s[1], ",") {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		v, err := strconv.ParseInt(p, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("bad shape %q", s[1])
		}
		a.Shape = append(a.Shape, v)
		n *= v
	}
	size := map[string]int64{"<f4": 4, "<f8": 8, "<i8": 8}[d[1]]
	if size == 0 {
		return nil, fmt.Errorf("unsupported dtype %s", d[1])
	}
	if int64(len(data)) != n*size {
		return nil, fmt.Errorf("data has %d bytes, want %d", len(data), n*size)
	}
	switch d[1] {
	case "<f4":
		a.F32 = make([]float32, n)
		for i := range a.F32 {
			a.F32[i] = math.Float32frombits(binary.LittleEndian.Uint32(data[4*i:]))
		}
	case "<f8":
		a.F64 = make([]float64, n)
		a.F32 = make([]float32, n)
		for i := range a.F64 {
			a.F64[i] = math.Float64frombits(binary.LittleEndian.Uint64(data[8*i:]))
			a.F32[i] = float32(a.F64[i])
		}
	case "<i8":
		a.I64 = make([]int64, n)
		for i := range a.I64 {
			a.I64[i] = int64(binary.LittleEndian.Uint64(data[8*i:]))
		}
	}
	return a, nil
}

// EncodeFloat32 returns .npy bytes for a float32 array.
func EncodeFloat32(shape []int64, data []float32) []byte {
	dims := make([]string, len(shape))
	for i, d := range shape {
		dims[i] = strconv.FormatInt(d, 10)
	}
	sh := strings.Join(dims, ", ")
	if len(shape) == 1 {
		sh += ","
	}
	h := fmt.Sprintf("{'descr': '<f4', 'fortran_order': False, 'shape': (%s), }", sh)
	pad := 64 - (10+len(h)+1)%64
	h += strings.Repeat(" ", pad%64) + "\n"
	var buf bytes.Buffer
	buf.WriteString("\x93NUMPY\x01\x00")
	_ = binary.Write(&buf, binary.LittleEndian, uint16(len(h)))
	buf.WriteString(h)
	for _, v := range data {
		_ = binary.Write(&buf, binary.LittleEndian, math.Float32bits(v))
	}
	return buf.Bytes()
}

// F64OrF32 returns the values as float64 (from F64 when present, else F32).
func (a *Array) F64OrF32() []float64 {
	if a.F64 != nil {
		return a.F64
	}
	out := make([]float64, len(a.F32))
	for i, v := range a.F32 {
		out[i] = float64(v)
	}
	return out
}
