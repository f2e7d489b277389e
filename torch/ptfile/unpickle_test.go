package ptfile

import (
	"encoding/json"
	"fmt"
	"math"
	"math/big"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestUnpickleAllProtocols decodes the same structure pickled by CPython in
// protocols 0..5 (testdata/pickles, see gen/roundtrip.py) and compares it
// with the value written out by hand here.
func TestUnpickleAllProtocols(t *testing.T) {
	bigV := new(big.Int).Lsh(big.NewInt(1), 100)
	negBig := new(big.Int).Neg(new(big.Int).Lsh(big.NewInt(1), 65))
	for proto := 0; proto <= 5; proto++ {
		t.Run(fmt.Sprint("proto", proto), func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join("testdata", "pickles", fmt.Sprintf("proto%d.pkl", proto)))
			require.NoError(t, err)
			v, err := unpickle(data, nil, callClass)
			require.NoError(t, err)
			d, ok := v.(*Dict)
			require.True(t, ok, "%T", v)
			assert.Equal(t, []any{"int", "neg", "i32", "big", "negbig", "float", "str", "bytes", "list", "tuple",
				"empty", "none", "t", "f", "set", "frozenset", "od", "obj", "shared"}, d.Keys)
			get := func(k string) any { x, _ := d.Get(k); return x }
			assert.Equal(t, int64(5), get("int"))
			assert.Equal(t, int64(-70000), get("neg"))
			assert.Equal(t, int64(math.MaxInt32), get("i32"))
			assert.Equal(t, 0, bigV.Cmp(get("big").(*big.Int)))
			assert.Equal(t, 0, negBig.Cmp(get("negbig").(*big.Int)))
			assert.Equal(t, 1.25, get("float"))
			assert.Equal(t, "héllo\n", get("str"))
			assert.Equal(t, []byte("ab\x00\xff"), get("bytes"))
			assert.Equal(t, &List{Items: []any{int64(1), &List{Items: []any{int64(2), int64(3)}}}}, get("list"))
			assert.Equal(t, Tuple{int64(1), "a"}, get("tuple"))
			assert.Equal(t, Tuple{}, get("empty"))
			assert.Nil(t, get("none"))
			assert.Equal(t, true, get("t"))
			assert.Equal(t, false, get("f"))
			assert.Equal(t, &Set{Items: []any{int64(1)}}, get("set"))
			assert.Equal(t, &Set{Items: []any{int64(2)}, Frozen: true}, get("frozenset"))
			od := get("od").(*Dict)
			assert.Equal(t, KindOrderedDict, od.Kind)
			assert.Equal(t, []any{"b", "a"}, od.Keys)
			assert.Equal(t, []any{int64(1), int64(2)}, od.Values)
			obj := get("obj").(*Object)
			assert.Equal(t, "__main__.Thing", obj.Class.String())
			a, _ := obj.Attr("a")
			assert.Equal(t, int64(1), a)
			name, err := GetString(obj, "name")
			require.NoError(t, err)
			assert.Equal(t, "thing", name)
			sh := get("shared").(*List)
			require.Len(t, sh.Items, 2)
			assert.Same(t, sh.Items[0], sh.Items[1])
		})
	}
}

// TestPicklerDecodesBack checks the writer's encoding of every supported Go
// value against the reader (the reader is checked against CPython above).
func TestPicklerDecodesBack(t *testing.T) {
	cases := []struct {
		in   any
		want any
	}{
		{nil, nil}, {true, true}, {false, false},
		{0, int64(0)}, {255, int64(255)}, {256, int64(256)}, {65535, int64(65535)}, {65536, int64(65536)},
		{-1, int64(-1)}, {int64(math.MinInt32), int64(math.MinInt32)}, {int64(math.MaxInt32) + 1, int64(math.MaxInt32) + 1},
		{int64(math.MinInt64), int64(math.MinInt64)}, {int64(math.MaxInt64), int64(math.MaxInt64)},
		{int64(-128), int64(-128)}, {int64(-129), int64(-129)}, {int64(1) << 55, int64(1) << 55},
		{uint64(math.MaxUint64), new(big.Int).SetUint64(math.MaxUint64)},
		{float32(0.1), float64(float32(0.1))}, {math.Inf(-1), math.Inf(-1)}, {-0.0, -0.0},
		{"", ""}, {"héllo ✓", "héllo ✓"},
		{[]byte{}, []byte{}}, {[]byte{0, 0x80, 0xff}, []byte{0, 0x80, 0xff}},
		{Tuple{}, Tuple{}}, {Tuple{int64(1)}, Tuple{int64(1)}}, {Tuple{1, 2, 3, 4}, Tuple{int64(1), int64(2), int64(3), int64(4)}},
		{[]string{"a", "b"}, &List{Items: []any{"a", "b"}}}, {[]any{}, &List{}},
		{[]float64{0.5}, &List{Items: []any{0.5}}}, {[]int{1, 2}, &List{Items: []any{int64(1), int64(2)}}},
	}
	for _, c := range cases {
		p := newPickler()
		require.NoError(t, p.dump(c.in, 0), "%#v", c.in)
		got, err := unpickle(p.finish(), nil, callClass)
		require.NoError(t, err, "%#v", c.in)
		if w, ok := c.want.(*big.Int); ok {
			assert.Equal(t, 0, w.Cmp(got.(*big.Int)), "%v", c.in)
			continue
		}
		if f, ok := c.want.(float64); ok && f == 0 {
			assert.Equal(t, math.Signbit(f), math.Signbit(got.(float64)))
		}
		assert.Equal(t, c.want, got, "%#v", c.in)
	}
	// Big integers of both signs and sizes around byte boundaries.
	for _, s := range []string{"127", "128", "-128", "-129", "32767", "-32768", "9223372036854775808", "-9223372036854775809",
		"340282366920938463463374607431768211456", "-340282366920938463463374607431768211457"} {
		x, _ := new(big.Int).SetString(s, 10)
		p := newPickler()
		require.NoError(t, p.dump(x, 0))
		got, err := unpickle(p.finish(), nil, callClass)
		require.NoError(t, err)
		var gb *big.Int
		switch g := got.(type) {
		case int64:
			gb = big.NewInt(g)
		case *big.Int:
			gb = g
		}
		assert.Equal(t, 0, x.Cmp(gb), s)
	}
}

type halfEntry struct {
	F32    uint32 `json:"f32"`
	F16    uint16 `json:"f16"`
	BF16   uint16 `json:"bf16"`
	F16Up  uint32 `json:"f16_up"`
	BF16Up uint32 `json:"bf16_up"`
}

// TestHalfConversionsMatchTorch compares the rounding and upcasting helpers
// with torch's .half()/.bfloat16()/.float() on 300 values (edge cases:
// ties, subnormals, overflow, infinities).
func TestHalfConversionsMatchTorch(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("testdata", "half_table.json"))
	require.NoError(t, err)
	var table struct {
		Entries []halfEntry `json:"entries"`
	}
	require.NoError(t, json.Unmarshal(b, &table))
	require.Len(t, table.Entries, 300)
	for _, e := range table.Entries {
		f := math.Float32frombits(e.F32)
		assert.Equal(t, e.F16, Float32ToHalf(f), "half(%g)", f)
		assert.Equal(t, e.BF16, Float32ToBFloat16(f), "bfloat16(%g)", f)
		assert.Equal(t, e.F16Up, math.Float32bits(HalfToFloat32(e.F16)), "float(half %#04x)", e.F16)
		assert.Equal(t, e.BF16Up, math.Float32bits(BFloat16ToFloat32(e.BF16)), "float(bf16 %#04x)", e.BF16)
	}
}

// TestHalfRoundTripExhaustive: every non-NaN binary16 value survives
// upcast + rounding, and NaNs stay NaN.
func TestHalfRoundTripExhaustive(t *testing.T) {
	for h := 0; h < 1<<16; h++ {
		f := HalfToFloat32(uint16(h))
		if h&0x7c00 == 0x7c00 && h&0x3ff != 0 {
			require.True(t, math.IsNaN(float64(f)), "%#04x", h)
			back := Float32ToHalf(f)
			require.True(t, back&0x7c00 == 0x7c00 && back&0x3ff != 0, "%#04x", h)
			continue
		}
		require.Equal(t, uint16(h), Float32ToHalf(f), "%#04x -> %g", h, f)
	}
}

func TestContiguousStrides(t *testing.T) {
	tests := []struct{ shape, want []int64 }{
		{nil, []int64{}},
		{[]int64{5}, []int64{1}},
		{[]int64{6, 1, 64}, []int64{64, 64, 1}}, // torch gives size-1 dims the next stride
		{[]int64{2, 0, 3}, []int64{3, 3, 1}},
		{[]int64{16, 64}, []int64{64, 1}},
	}
	for _, tc := range tests {
		assert.Equal(t, tc.want, ContiguousStrides(tc.shape), "%v", tc.shape)
	}
}
