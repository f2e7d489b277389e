package data

import (
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"encoding/json"
	"math"
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// matRef mirrors testdata/mat/vars_ref.json (scipy.io.loadmat's view of the
// fixture, written by testdata/gen/make_mat.py).
type matRef struct {
	Vars []struct {
		Name  string    `json:"name"`
		Class string    `json:"class"`
		Dims  []int     `json:"dims"`
		Data  []float64 `json:"data"`
		Imag  []float64 `json:"imag"`
	} `json:"vars"`
}

func TestReadMatMatchesScipy(t *testing.T) {
	raw, err := os.ReadFile("testdata/mat/vars_ref.json")
	require.NoError(t, err)
	var ref matRef
	require.NoError(t, json.Unmarshal(raw, &ref))
	require.Len(t, ref.Vars, 11)

	for _, file := range []string{"testdata/mat/vars_plain.mat", "testdata/mat/vars_zlib.mat"} {
		t.Run(file, func(t *testing.T) {
			vars, err := ReadMatFile(file)
			require.NoError(t, err)
			// char, cell and struct variables are skipped.
			require.Len(t, vars, len(ref.Vars))
			for i, want := range ref.Vars {
				got := vars[i]
				assert.Equal(t, want.Name, got.Name)
				assert.Equal(t, want.Class, got.Class, want.Name)
				assert.Equal(t, want.Dims, got.Dims, want.Name)
				if len(want.Data) == 0 {
					assert.Empty(t, got.Data, want.Name)
				} else {
					assert.Equal(t, want.Data, got.Data, want.Name) // exact: same bits
				}
				if want.Imag != nil {
					assert.Equal(t, want.Imag, got.Imag, want.Name)
				} else {
					assert.Nil(t, got.Imag, want.Name)
				}
			}
			m23 := vars[1]
			assert.Equal(t, 6.0, m23.At(1, 2)) // row 2, column 3 of [[1 2 3];[4 5 6]]
			assert.Equal(t, 2.0, m23.At(0, 1))
			v, err := MatVector(vars, "MOSz")
			require.NoError(t, err)
			assert.Equal(t, []float64{0.5, 1.25, -3, math.Pow(2, -20), 1e10, 4.75}, v)
		})
	}
}

// matBuilder writes MAT v5 bytes by hand, in either byte order, to test
// what scipy does not produce: big-endian files, narrow storage types for
// doubles and padding details.
type matBuilder struct {
	o   binary.ByteOrder
	buf bytes.Buffer
}

func newMatBuilder(o binary.ByteOrder, version uint16) *matBuilder {
	b := &matBuilder{o: o}
	hdr := make([]byte, 128)
	copy(hdr, "MATLAB 5.0 MAT-file, hand made for tests")
	for i := 40; i < 116; i++ {
		hdr[i] = ' '
	}
	o.PutUint16(hdr[124:], version)
	if o == binary.ByteOrder(binary.BigEndian) {
		copy(hdr[126:], "MI")
	} else {
		copy(hdr[126:], "IM")
	}
	b.buf.Write(hdr)
	return b
}

// element encodes one tagged element with padding to 8 bytes.
func element(o binary.ByteOrder, typ uint32, payload []byte) []byte {
	var out bytes.Buffer
	if len(payload) <= 4 && typ != miMATRIX {
		// Small data element form.
		var w [8]byte
		o.PutUint32(w[:], uint32(len(payload))<<16|typ)
		copy(w[4:], payload)
		return w[:]
	}
	var tag [8]byte
	o.PutUint32(tag[:], typ)
	o.PutUint32(tag[4:], uint32(len(payload)))
	out.Write(tag[:])
	out.Write(payload)
	for out.Len()%8 != 0 {
		out.WriteByte(0)
	}
	return out.Bytes()
}

// matrix builds an miMATRIX element of class cls with the given real part
// element (already encoded).
func matrixElem(o binary.ByteOrder, cls byte, dims []int32, name string, parts ...[]byte) []byte {
	var body bytes.Buffer
	flags := make([]byte, 8)
	o.PutUint32(flags, uint32(cls))
	body.Write(element(o, miUINT32, flags))
	d := make([]byte, 4*len(dims))
	for i, v := range dims {
		o.PutUint32(d[4*i:], uint32(v))
	}
	body.Write(element(o, miINT32, d))
	body.Write(element(o, miINT8, []byte(name)))
	for _, p := range parts {
		body.Write(p)
	}
	return element(o, miMATRIX, body.Bytes())
}

func TestReadMatHandBuilt(t *testing.T) {
	for _, o := range []binary.ByteOrder{binary.LittleEndian, binary.BigEndian} {
		t.Run(o.String(), func(t *testing.T) {
			b := newMatBuilder(o, 0x0100)
			// A double array stored as uint8, as MATLAB does for small
			// integers; the name "ab" fits a small element.
			b.buf.Write(matrixElem(o, 6, []int32{1, 3}, "ab", element(o, miUINT8, []byte{7, 0, 200})))
			// A double array stored as int16, compressed.
			i16 := make([]byte, 4)
			o.PutUint16(i16, uint16(0xfffe)) // -2
			o.PutUint16(i16[2:], 300)
			var z bytes.Buffer
			zw := zlib.NewWriter(&z)
			_, err := zw.Write(matrixElem(o, 6, []int32{2, 1}, "longer_name", element(o, miINT16, i16)))
			require.NoError(t, err)
			require.NoError(t, zw.Close())
			var tag [8]byte
			o.PutUint32(tag[:], miCOMPRESSED)
			o.PutUint32(tag[4:], uint32(z.Len()))
			b.buf.Write(tag[:])
			b.buf.Write(z.Bytes()) // no padding after compressed data
			// A single stored as miSINGLE after the compressed element.
			f := make([]byte, 4)
			o.PutUint32(f, math.Float32bits(-0.375))
			b.buf.Write(matrixElem(o, 7, []int32{1, 1}, "s", element(o, miSINGLE, f)))

			vars, err := ReadMat(bytes.NewReader(b.buf.Bytes()))
			require.NoError(t, err)
			require.Len(t, vars, 3)
			assert.Equal(t, MatVar{Name: "ab", Class: "double", Dims: []int{1, 3}, Data: []float64{7, 0, 200}}, vars[0])
			assert.Equal(t, MatVar{Name: "longer_name", Class: "double", Dims: []int{2, 1}, Data: []float64{-2, 300}}, vars[1])
			assert.Equal(t, MatVar{Name: "s", Class: "single", Dims: []int{1, 1}, Data: []float64{-0.375}}, vars[2])
		})
	}
}

func TestReadMatErrors(t *testing.T) {
	o := binary.LittleEndian
	valid := func() *matBuilder { return newMatBuilder(o, 0x0100) }

	v73 := newMatBuilder(o, 0x0200)
	badLen := valid()
	badLen.buf.Write(matrixElem(o, 6, []int32{1, 3}, "x", element(o, miDOUBLE, make([]byte, 16))))
	truncated := valid()
	truncated.buf.Write(matrixElem(o, 6, []int32{1, 2}, "x", element(o, miDOUBLE, make([]byte, 16))))
	truncatedBytes := truncated.buf.Bytes()[:truncated.buf.Len()-5]
	badZlib := valid()
	var tag [8]byte
	o.PutUint32(tag[:], miCOMPRESSED)
	o.PutUint32(tag[4:], 4)
	badZlib.buf.Write(tag[:])
	badZlib.buf.Write([]byte{1, 2, 3, 4})
	v4 := make([]byte, 200) // a v4 file starts with a numeric type code

	tests := []struct {
		name string
		raw  []byte
		want string
	}{
		{"empty", nil, "too short"},
		{"v4", v4, "not a MATLAB level 5"},
		{"v7.3", v73.buf.Bytes(), "-v7.3 (HDF5)"},
		{"length mismatch", badLen.buf.Bytes(), "16 bytes of type 9 for 3 elements"},
		{"truncated", truncatedBytes, "claims"},
		{"bad zlib", badZlib.buf.Bytes(), "compressed element"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ReadMat(bytes.NewReader(tc.raw))
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
	_, err := ReadMatFile("testdata/mat/does_not_exist.mat")
	assert.ErrorIs(t, err, os.ErrNotExist)
}

func TestMatVector(t *testing.T) {
	vars, err := ReadMatFile("testdata/mat/vars_zlib.mat")
	require.NoError(t, err)
	_, err = MatVector(vars, "")
	assert.ErrorContains(t, err, "want exactly one numeric variable, found 11")
	_, err = MatVector(vars, "nope")
	assert.ErrorContains(t, err, `no numeric variable "nope"`)
	_, err = MatVector(vars, "m23")
	assert.ErrorContains(t, err, "dimensions [2 3], want a vector")
	_, err = MatVector(vars, "cplx")
	assert.ErrorContains(t, err, "complex")
	v, err := MatVector(vars, "i16")
	require.NoError(t, err)
	assert.Equal(t, []float64{-3, 0, 7}, v)
	v, err = MatVector(vars[:1], "")
	require.NoError(t, err)
	assert.Len(t, v, 6)
}
