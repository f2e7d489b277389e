package ptfile

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/big"
	"sort"
	"strconv"
	"unicode/utf8"
)

// maxPickleDepth bounds nesting so a cyclic Go value fails instead of
// recursing forever.
const maxPickleDepth = 512

// pickler writes protocol-2 pickles in the shape torch.save produces, with
// tensors as persistent storage ids.
type pickler struct {
	buf      bytes.Buffer
	globals  map[string]int     // memo slot of each GLOBAL already written
	keys     map[*Tensor]string // storage key of each tensor already written
	storages []*Tensor          // in key order
	memo     int
}

func newPickler() *pickler {
	p := &pickler{globals: make(map[string]int), keys: make(map[*Tensor]string)}
	p.buf.Write([]byte{0x80, 2})
	return p
}

func (p *pickler) finish() []byte {
	p.buf.WriteByte('.')
	return p.buf.Bytes()
}

func (p *pickler) global(module, name string) {
	id := module + "\n" + name + "\n"
	if slot, ok := p.globals[id]; ok {
		if slot < 256 {
			p.buf.Write([]byte{'h', byte(slot)})
		} else {
			p.buf.WriteByte('j')
			binary.Write(&p.buf, binary.LittleEndian, uint32(slot))
		}
		return
	}
	p.buf.WriteByte('c')
	p.buf.WriteString(id)
	slot := p.memo
	p.memo++
	p.globals[id] = slot
	if slot < 256 {
		p.buf.Write([]byte{'q', byte(slot)})
	} else {
		p.buf.WriteByte('r')
		binary.Write(&p.buf, binary.LittleEndian, uint32(slot))
	}
}

func (p *pickler) int(v int64) {
	switch {
	case v >= 0 && v < 1<<8:
		p.buf.Write([]byte{'K', byte(v)})
	case v >= 0 && v < 1<<16:
		p.buf.Write([]byte{'M', byte(v), byte(v >> 8)})
	case v >= math.MinInt32 && v <= math.MaxInt32:
		p.buf.WriteByte('J')
		binary.Write(&p.buf, binary.LittleEndian, int32(v))
	default:
		p.long(big.NewInt(v))
	}
}

// long writes LONG1/LONG4 with Python's minimal two's-complement bytes.
func (p *pickler) long(x *big.Int) {
	var le []byte
	if x.Sign() != 0 {
		n := x.BitLen()/8 + 1
		// Two's complement in n bytes: x mod 2^(8n).
		m := new(big.Int).Lsh(big.NewInt(1), uint(8*n))
		m.Add(m, x).Mod(m, new(big.Int).Lsh(big.NewInt(1), uint(8*n)))
		be := m.FillBytes(make([]byte, n))
		le = make([]byte, n)
		for i := range be {
			le[n-1-i] = be[i]
		}
		// Drop redundant sign bytes.
		for len(le) > 1 {
			last, prev := le[len(le)-1], le[len(le)-2]
			if (last == 0 && prev&0x80 == 0) || (last == 0xff && prev&0x80 != 0) {
				le = le[:len(le)-1]
				continue
			}
			break
		}
	}
	if len(le) < 256 {
		p.buf.Write([]byte{0x8a, byte(len(le))})
	} else {
		p.buf.WriteByte(0x8b)
		binary.Write(&p.buf, binary.LittleEndian, uint32(len(le)))
	}
	p.buf.Write(le)
}

func (p *pickler) str(s string) error {
	if !utf8.ValidString(s) {
		return fmt.Errorf("string %q is not valid UTF-8", s)
	}
	p.buf.WriteByte('X')
	binary.Write(&p.buf, binary.LittleEndian, uint32(len(s)))
	p.buf.WriteString(s)
	return nil
}

func (p *pickler) tuple(items []any, depth int) error {
	if len(items) == 0 {
		p.buf.WriteByte(')')
		return nil
	}
	if len(items) > 3 {
		p.buf.WriteByte('(')
	}
	for _, it := range items {
		if err := p.dump(it, depth+1); err != nil {
			return err
		}
	}
	switch len(items) {
	case 1, 2, 3:
		p.buf.WriteByte(0x84 + byte(len(items)))
	default:
		p.buf.WriteByte('t')
	}
	return nil
}

func (p *pickler) list(items []any, depth int) error {
	p.buf.WriteByte(']')
	if len(items) == 0 {
		return nil
	}
	p.buf.WriteByte('(')
	for _, it := range items {
		if err := p.dump(it, depth+1); err != nil {
			return err
		}
	}
	p.buf.WriteByte('e')
	return nil
}

func (p *pickler) setItems(keys, values []any, depth int) error {
	if len(keys) == 0 {
		return nil
	}
	p.buf.WriteByte('(')
	for i := range keys {
		if err := p.dump(keys[i], depth+1); err != nil {
			return err
		}
		if err := p.dump(values[i], depth+1); err != nil {
			return fmt.Errorf("entry %v: %w", keys[i], err)
		}
	}
	p.buf.WriteByte('u')
	return nil
}

func (p *pickler) tensor(t *Tensor) error {
	if t == nil {
		return errors.New("nil tensor")
	}
	if _, err := t.checkData(); err != nil {
		return err
	}
	if len(t.Data) >= math.MaxUint32 {
		return fmt.Errorf("tensor of %d bytes: storages of 4 GiB or more are not supported", len(t.Data))
	}
	key, ok := p.keys[t]
	if !ok {
		key = strconv.Itoa(len(p.storages))
		p.keys[t] = key
		p.storages = append(p.storages, t)
	}
	p.global("torch._utils", "_rebuild_tensor_v2")
	p.buf.WriteByte('(')
	// Persistent id ('storage', torch.<Type>Storage, key, 'cpu', numel).
	p.buf.WriteByte('(')
	_ = p.str("storage")
	p.global("torch", t.DType.StorageClass())
	_ = p.str(key)
	_ = p.str("cpu")
	p.int(t.NumElements())
	p.buf.WriteByte('t')
	p.buf.WriteByte('Q')
	p.int(0) // storage offset
	shape := make([]any, len(t.Shape))
	strides := make([]any, len(t.Shape))
	for i, s := range ContiguousStrides(t.Shape) {
		shape[i], strides[i] = t.Shape[i], s
	}
	_ = p.tuple(shape, 0)
	_ = p.tuple(strides, 0)
	p.buf.WriteByte(0x89) // requires_grad=False
	p.global("collections", "OrderedDict")
	p.buf.Write([]byte{')', 'R'}) // backward_hooks=OrderedDict()
	p.buf.WriteByte('t')
	p.buf.WriteByte('R')
	return nil
}

// dump writes one value. Supported: nil, bool, Go ints and floats,
// *big.Int, string, []byte, Tuple, *List, *Dict, []any, []string, []int,
// []int64, []float32, []float64, map[string]any (keys sorted) and *Tensor.
func (p *pickler) dump(v any, depth int) error {
	if depth > maxPickleDepth {
		return errors.New("value nested too deeply (cyclic?)")
	}
	switch x := v.(type) {
	case nil:
		p.buf.WriteByte('N')
	case bool:
		if x {
			p.buf.WriteByte(0x88)
		} else {
			p.buf.WriteByte(0x89)
		}
	case int:
		p.int(int64(x))
	case int8:
		p.int(int64(x))
	case int16:
		p.int(int64(x))
	case int32:
		p.int(int64(x))
	case int64:
		p.int(x)
	case uint8:
		p.int(int64(x))
	case uint16:
		p.int(int64(x))
	case uint32:
		p.int(int64(x))
	case uint:
		p.long(new(big.Int).SetUint64(uint64(x)))
	case uint64:
		p.long(new(big.Int).SetUint64(x))
	case *big.Int:
		p.long(x)
	case float32:
		p.float(float64(x))
	case float64:
		p.float(x)
	case string:
		return p.str(x)
	case []byte:
		// Protocol 2 has no bytes opcode for Python 3: use the same
		// _codecs.encode(latin-1 text, "latin1") call CPython writes.
		p.global("_codecs", "encode")
		rs := make([]rune, len(x))
		for i, b := range x {
			rs[i] = rune(b)
		}
		_ = p.str(string(rs))
		_ = p.str("latin1")
		p.buf.Write([]byte{0x86, 'R'})
	case Tuple:
		return p.tuple(x, depth)
	case *List:
		return p.list(x.Items, depth)
	case []any:
		return p.list(x, depth)
	case []string:
		return p.list(anys(x), depth)
	case []int:
		return p.list(anys(x), depth)
	case []int64:
		return p.list(anys(x), depth)
	case []float32:
		return p.list(anys(x), depth)
	case []float64:
		return p.list(anys(x), depth)
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		ks, vs := make([]any, len(keys)), make([]any, len(keys))
		for i, k := range keys {
			ks[i], vs[i] = k, x[k]
		}
		p.buf.WriteByte('}')
		return p.setItems(ks, vs, depth)
	case *Dict:
		if x.Kind == KindOrderedDict {
			p.global("collections", "OrderedDict")
			p.buf.Write([]byte{')', 'R'})
		} else {
			p.buf.WriteByte('}')
		}
		return p.setItems(x.Keys, x.Values, depth)
	case *Tensor:
		return p.tensor(x)
	default:
		return fmt.Errorf("cannot pickle a %T", v)
	}
	return nil
}

func (p *pickler) float(f float64) {
	p.buf.WriteByte('G')
	binary.Write(&p.buf, binary.BigEndian, math.Float64bits(f))
}

func anys[T any](xs []T) []any {
	out := make([]any, len(xs))
	for i, x := range xs {
		out[i] = x
	}
	return out
}
