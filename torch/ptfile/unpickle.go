package ptfile

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/big"
	"strconv"
	"strings"
	"unicode/utf8"
)

// unpickler decodes a whole pickle held in memory. Every length read from
// the stream is checked against the bytes that remain, so malformed input
// cannot trigger large allocations or out-of-range slicing.
type unpickler struct {
	data  []byte
	pos   int
	stack []any
	marks []int // stack heights at each MARK
	memo  map[int64]any

	// persistentLoad resolves a persistent id (torch storages).
	persistentLoad func(pid any) (any, error)
	// call builds the value of a class applied to arguments.
	call func(c *Class, args []any) (any, error)
}

var errTruncated = errors.New("pickle data truncated")

// unpickle decodes data. Panics inside are turned into errors as a last line
// of defence; the decoder is written not to panic.
func unpickle(data []byte, persistentLoad func(any) (any, error), call func(*Class, []any) (any, error)) (v any, err error) {
	u := &unpickler{data: data, memo: make(map[int64]any), persistentLoad: persistentLoad, call: call}
	defer func() {
		if r := recover(); r != nil {
			v, err = nil, fmt.Errorf("malformed pickle at byte %d: %v", u.pos, r)
		}
	}()
	return u.run()
}

func (u *unpickler) read(n int) ([]byte, error) {
	if n < 0 || n > len(u.data)-u.pos {
		return nil, errTruncated
	}
	b := u.data[u.pos : u.pos+n]
	u.pos += n
	return b, nil
}

func (u *unpickler) readByte() (byte, error) {
	if u.pos >= len(u.data) {
		return 0, errTruncated
	}
	b := u.data[u.pos]
	u.pos++
	return b, nil
}

func (u *unpickler) readUint(n int) (uint64, error) {
	b, err := u.read(n)
	if err != nil {
		return 0, err
	}
	var v uint64
	for i := n - 1; i >= 0; i-- {
		v = v<<8 | uint64(b[i])
	}
	return v, nil
}

// readLine returns the text up to (not including) the next newline.
func (u *unpickler) readLine() (string, error) {
	i := bytes.IndexByte(u.data[u.pos:], '\n')
	if i < 0 {
		return "", errTruncated
	}
	s := string(u.data[u.pos : u.pos+i])
	u.pos += i + 1
	return s, nil
}

// readSized reads a length of lenBytes bytes followed by that many bytes.
func (u *unpickler) readSized(lenBytes int) ([]byte, error) {
	n, err := u.readUint(lenBytes)
	if err != nil {
		return nil, err
	}
	if n > uint64(len(u.data)-u.pos) {
		return nil, errTruncated
	}
	return u.read(int(n))
}

func (u *unpickler) push(v any) { u.stack = append(u.stack, v) }

func (u *unpickler) pop() (any, error) {
	if len(u.stack) == 0 || (len(u.marks) > 0 && len(u.stack) <= u.marks[len(u.marks)-1]) {
		return nil, errors.New("stack underflow")
	}
	v := u.stack[len(u.stack)-1]
	u.stack = u.stack[:len(u.stack)-1]
	return v, nil
}

func (u *unpickler) top() (any, error) {
	if len(u.stack) == 0 || (len(u.marks) > 0 && len(u.stack) <= u.marks[len(u.marks)-1]) {
		return nil, errors.New("stack underflow")
	}
	return u.stack[len(u.stack)-1], nil
}

// popMark removes and returns the items pushed since the last MARK.
func (u *unpickler) popMark() ([]any, error) {
	if len(u.marks) == 0 {
		return nil, errors.New("no MARK on the stack")
	}
	m := u.marks[len(u.marks)-1]
	u.marks = u.marks[:len(u.marks)-1]
	items := make([]any, len(u.stack)-m)
	copy(items, u.stack[m:])
	u.stack = u.stack[:m]
	return items, nil
}

func (u *unpickler) memoGet(i int64) error {
	v, ok := u.memo[i]
	if !ok {
		return fmt.Errorf("memo key %d missing", i)
	}
	u.push(v)
	return nil
}

func (u *unpickler) memoPut(i int64) error {
	v, err := u.top()
	if err != nil {
		return err
	}
	u.memo[i] = v
	return nil
}

// decodeLong decodes a little-endian two's-complement integer.
func decodeLong(b []byte) any {
	if len(b) == 0 {
		return int64(0)
	}
	if len(b) <= 8 {
		var v uint64
		for i := len(b) - 1; i >= 0; i-- {
			v = v<<8 | uint64(b[i])
		}
		if b[len(b)-1]&0x80 != 0 && len(b) < 8 {
			v |= ^uint64(0) << (8 * uint(len(b)))
		}
		return int64(v)
	}
	be := make([]byte, len(b))
	for i := range b {
		be[len(b)-1-i] = b[i]
	}
	x := new(big.Int).SetBytes(be)
	if b[len(b)-1]&0x80 != 0 {
		x.Sub(x, new(big.Int).Lsh(big.NewInt(1), uint(8*len(b))))
	}
	return normInt(x)
}

// normInt returns an int64 when x fits, else x.
func normInt(x *big.Int) any {
	if x.IsInt64() {
		return x.Int64()
	}
	return x
}

func parseIntLine(s string) (any, error) {
	if len(s) > 0 && s[len(s)-1] == 'L' {
		s = s[:len(s)-1]
	}
	if v, err := strconv.ParseInt(s, 10, 64); err == nil {
		return v, nil
	}
	x, ok := new(big.Int).SetString(s, 10)
	if !ok {
		return nil, fmt.Errorf("invalid integer %q", s)
	}
	return normInt(x), nil
}

// unquote decodes the argument of the text STRING opcode.
func unquote(s string) (string, error) {
	if len(s) < 2 || s[0] != s[len(s)-1] || (s[0] != '\'' && s[0] != '"') {
		return "", fmt.Errorf("STRING argument %q not quoted", s)
	}
	if v, err := strconv.Unquote(`"` + s[1:len(s)-1] + `"`); err == nil {
		return v, nil
	}
	return s[1 : len(s)-1], nil
}

// rawUnicodeUnescape decodes Python's raw-unicode-escape: bytes are
// Latin-1 code points, except \uXXXX and \UXXXXXXXX escapes.
func rawUnicodeUnescape(s string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '\\' && i+1 < len(s) && (s[i+1] == 'u' || s[i+1] == 'U') {
			n := 4
			if s[i+1] == 'U' {
				n = 8
			}
			if i+2+n > len(s) {
				return "", fmt.Errorf("truncated \\%c escape", s[i+1])
			}
			r, err := strconv.ParseUint(s[i+2:i+2+n], 16, 32)
			if err != nil || r > utf8.MaxRune {
				return "", fmt.Errorf("bad escape %q", s[i:i+2+n])
			}
			b.WriteRune(rune(r))
			i += 1 + n
			continue
		}
		b.WriteRune(rune(c))
	}
	return b.String(), nil
}

// asArgs converts a pickled argument tuple to a slice.
func asArgs(v any) ([]any, error) {
	switch a := v.(type) {
	case Tuple:
		return a, nil
	case *List:
		return a.Items, nil
	}
	return nil, fmt.Errorf("expected an argument tuple, got %T", v)
}

func (u *unpickler) instantiate(cls any, args []any) error {
	c, ok := cls.(*Class)
	if !ok {
		return fmt.Errorf("cannot call a %T", cls)
	}
	v, err := u.call(c, args)
	if err != nil {
		return err
	}
	u.push(v)
	return nil
}

func (u *unpickler) run() (any, error) {
	for {
		start := u.pos
		op, err := u.readByte()
		if err != nil {
			return nil, fmt.Errorf("%w: no STOP opcode", errTruncated)
		}
		done, err := u.step(op)
		if err != nil {
			return nil, fmt.Errorf("pickle opcode 0x%02x at byte %d: %w", op, start, err)
		}
		if done {
			v, err := u.pop()
			if err != nil {
				return nil, fmt.Errorf("pickle STOP at byte %d: %w", start, err)
			}
			return v, nil
		}
	}
}

// step executes one opcode; it returns true at STOP.
func (u *unpickler) step(op byte) (bool, error) {
	switch op {
	case 0x80: // PROTO
		p, err := u.readByte()
		if err != nil {
			return false, err
		}
		if p > 5 {
			return false, fmt.Errorf("unsupported pickle protocol %d", p)
		}
	case 0x95: // FRAME: the whole pickle is in memory, so just skip the size
		if _, err := u.read(8); err != nil {
			return false, err
		}
	case '.': // STOP
		return true, nil
	case '(': // MARK
		u.marks = append(u.marks, len(u.stack))
	case '0': // POP
		if len(u.marks) > 0 && len(u.stack) == u.marks[len(u.marks)-1] {
			_, err := u.popMark()
			return false, err
		}
		_, err := u.pop()
		return false, err
	case '1': // POP_MARK
		_, err := u.popMark()
		return false, err
	case '2': // DUP
		v, err := u.top()
		if err != nil {
			return false, err
		}
		u.push(v)
	case 'N':
		u.push(nil)
	case 0x88:
		u.push(true)
	case 0x89:
		u.push(false)
	case 'I': // INT (text); "00"/"01" are protocol-0 booleans
		s, err := u.readLine()
		if err != nil {
			return false, err
		}
		switch s {
		case "00":
			u.push(false)
		case "01":
			u.push(true)
		default:
			v, err := parseIntLine(s)
			if err != nil {
				return false, err
			}
			u.push(v)
		}
	case 'L': // LONG (text)
		s, err := u.readLine()
		if err != nil {
			return false, err
		}
		v, err := parseIntLine(s)
		if err != nil {
			return false, err
		}
		u.push(v)
	case 'J': // BININT
		v, err := u.readUint(4)
		if err != nil {
			return false, err
		}
		u.push(int64(int32(uint32(v))))
	case 'K': // BININT1
		v, err := u.readUint(1)
		if err != nil {
			return false, err
		}
		u.push(int64(v))
	case 'M': // BININT2
		v, err := u.readUint(2)
		if err != nil {
			return false, err
		}
		u.push(int64(v))
	case 0x8a: // LONG1
		b, err := u.readSized(1)
		if err != nil {
			return false, err
		}
		u.push(decodeLong(b))
	case 0x8b: // LONG4
		n, err := u.readUint(4)
		if err != nil {
			return false, err
		}
		if int32(uint32(n)) < 0 {
			return false, errors.New("negative LONG4 length")
		}
		b, err := u.read(int(n))
		if err != nil {
			return false, err
		}
		u.push(decodeLong(b))
	case 'F': // FLOAT (text)
		s, err := u.readLine()
		if err != nil {
			return false, err
		}
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return false, err
		}
		u.push(f)
	case 'G': // BINFLOAT, big-endian
		b, err := u.read(8)
		if err != nil {
			return false, err
		}
		u.push(math.Float64frombits(binary.BigEndian.Uint64(b)))
	case 'S': // STRING (text, quoted)
		s, err := u.readLine()
		if err != nil {
			return false, err
		}
		v, err := unquote(s)
		if err != nil {
			return false, err
		}
		u.push(v)
	case 'T', 'U': // BINSTRING, SHORT_BINSTRING: Python 2 str, read as text
		n := 4
		if op == 'U' {
			n = 1
		}
		b, err := u.readSized(n)
		if err != nil {
			return false, err
		}
		u.push(string(b))
	case 'V': // UNICODE (raw-unicode-escape text)
		s, err := u.readLine()
		if err != nil {
			return false, err
		}
		v, err := rawUnicodeUnescape(s)
		if err != nil {
			return false, err
		}
		u.push(v)
	case 'X', 0x8c, 0x8d: // BINUNICODE, SHORT_BINUNICODE, BINUNICODE8
		b, err := u.readSized(lengthBytes(op))
		if err != nil {
			return false, err
		}
		u.push(string(b))
	case 'B', 'C', 0x8e, 0x96: // BINBYTES, SHORT_BINBYTES, BINBYTES8, BYTEARRAY8
		b, err := u.readSized(lengthBytes(op))
		if err != nil {
			return false, err
		}
		u.push(append([]byte(nil), b...))
	case 0x97: // NEXT_BUFFER
		return false, errors.New("out-of-band buffers are not supported")
	case 0x98: // READONLY_BUFFER: no-op here
	case ')':
		u.push(Tuple{})
	case 't':
		items, err := u.popMark()
		if err != nil {
			return false, err
		}
		u.push(Tuple(items))
	case 0x85, 0x86, 0x87: // TUPLE1..3
		n := int(op - 0x84)
		items := make(Tuple, n)
		for i := n - 1; i >= 0; i-- {
			v, err := u.pop()
			if err != nil {
				return false, err
			}
			items[i] = v
		}
		u.push(items)
	case ']':
		u.push(&List{})
	case 'l':
		items, err := u.popMark()
		if err != nil {
			return false, err
		}
		u.push(&List{Items: items})
	case '}':
		u.push(NewDict(KindDict))
	case 'd':
		items, err := u.popMark()
		if err != nil {
			return false, err
		}
		if len(items)%2 != 0 {
			return false, errors.New("DICT with an odd number of items")
		}
		d := NewDict(KindDict)
		for i := 0; i < len(items); i += 2 {
			d.Set(items[i], items[i+1])
		}
		u.push(d)
	case 0x8f:
		u.push(&Set{})
	case 0x91: // FROZENSET
		items, err := u.popMark()
		if err != nil {
			return false, err
		}
		u.push(&Set{Items: items, Frozen: true})
	case 'a': // APPEND
		v, err := u.pop()
		if err != nil {
			return false, err
		}
		return false, u.appendTo([]any{v})
	case 'e': // APPENDS
		items, err := u.popMark()
		if err != nil {
			return false, err
		}
		return false, u.appendTo(items)
	case 's': // SETITEM
		v, err := u.pop()
		if err != nil {
			return false, err
		}
		k, err := u.pop()
		if err != nil {
			return false, err
		}
		return false, u.setItems([]any{k, v})
	case 'u': // SETITEMS
		items, err := u.popMark()
		if err != nil {
			return false, err
		}
		if len(items)%2 != 0 {
			return false, errors.New("SETITEMS with an odd number of items")
		}
		return false, u.setItems(items)
	case 0x90: // ADDITEMS
		items, err := u.popMark()
		if err != nil {
			return false, err
		}
		t, err := u.top()
		if err != nil {
			return false, err
		}
		s, ok := t.(*Set)
		if !ok {
			return false, fmt.Errorf("ADDITEMS on a %T", t)
		}
		s.Items = append(s.Items, items...)
	case 'g': // GET
		s, err := u.readLine()
		if err != nil {
			return false, err
		}
		i, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return false, err
		}
		return false, u.memoGet(i)
	case 'h': // BINGET
		i, err := u.readUint(1)
		if err != nil {
			return false, err
		}
		return false, u.memoGet(int64(i))
	case 'j': // LONG_BINGET
		i, err := u.readUint(4)
		if err != nil {
			return false, err
		}
		return false, u.memoGet(int64(i))
	case 'p': // PUT
		s, err := u.readLine()
		if err != nil {
			return false, err
		}
		i, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return false, err
		}
		return false, u.memoPut(i)
	case 'q': // BINPUT
		i, err := u.readUint(1)
		if err != nil {
			return false, err
		}
		return false, u.memoPut(int64(i))
	case 'r': // LONG_BINPUT
		i, err := u.readUint(4)
		if err != nil {
			return false, err
		}
		return false, u.memoPut(int64(i))
	case 0x94: // MEMOIZE
		return false, u.memoPut(int64(len(u.memo)))
	case 'c': // GLOBAL
		mod, err := u.readLine()
		if err != nil {
			return false, err
		}
		name, err := u.readLine()
		if err != nil {
			return false, err
		}
		u.push(&Class{Module: mod, Name: name})
	case 0x93: // STACK_GLOBAL
		name, err := u.pop()
		if err != nil {
			return false, err
		}
		mod, err := u.pop()
		if err != nil {
			return false, err
		}
		ms, ok1 := mod.(string)
		ns, ok2 := name.(string)
		if !ok1 || !ok2 {
			return false, errors.New("STACK_GLOBAL needs two strings")
		}
		u.push(&Class{Module: ms, Name: ns})
	case 'R': // REDUCE
		a, err := u.pop()
		if err != nil {
			return false, err
		}
		f, err := u.pop()
		if err != nil {
			return false, err
		}
		args, err := asArgs(a)
		if err != nil {
			return false, err
		}
		return false, u.instantiate(f, args)
	case 0x81: // NEWOBJ
		a, err := u.pop()
		if err != nil {
			return false, err
		}
		c, err := u.pop()
		if err != nil {
			return false, err
		}
		args, err := asArgs(a)
		if err != nil {
			return false, err
		}
		return false, u.instantiate(c, args)
	case 0x92: // NEWOBJ_EX: keyword arguments are kept as a trailing *Dict
		kw, err := u.pop()
		if err != nil {
			return false, err
		}
		a, err := u.pop()
		if err != nil {
			return false, err
		}
		c, err := u.pop()
		if err != nil {
			return false, err
		}
		args, err := asArgs(a)
		if err != nil {
			return false, err
		}
		if d, ok := kw.(*Dict); ok && d.Len() > 0 {
			args = append(append([]any(nil), args...), d)
		}
		return false, u.instantiate(c, args)
	case 'o': // OBJ
		items, err := u.popMark()
		if err != nil {
			return false, err
		}
		if len(items) == 0 {
			return false, errors.New("OBJ without a class")
		}
		return false, u.instantiate(items[0], items[1:])
	case 'i': // INST
		mod, err := u.readLine()
		if err != nil {
			return false, err
		}
		name, err := u.readLine()
		if err != nil {
			return false, err
		}
		items, err := u.popMark()
		if err != nil {
			return false, err
		}
		return false, u.instantiate(&Class{Module: mod, Name: name}, items)
	case 'b': // BUILD
		state, err := u.pop()
		if err != nil {
			return false, err
		}
		t, err := u.top()
		if err != nil {
			return false, err
		}
		return false, build(t, state)
	case 'P': // PERSID
		s, err := u.readLine()
		if err != nil {
			return false, err
		}
		return false, u.persistent(s)
	case 'Q': // BINPERSID
		pid, err := u.pop()
		if err != nil {
			return false, err
		}
		return false, u.persistent(pid)
	case 0x82, 0x83, 0x84:
		return false, errors.New("extension registry codes are not supported")
	default:
		return false, errors.New("unknown opcode")
	}
	return false, nil
}

// lengthBytes is the size of the length prefix of a string/bytes opcode.
func lengthBytes(op byte) int {
	switch op {
	case 'C', 0x8c:
		return 1
	case 'X', 'B':
		return 4
	}
	return 8
}

func (u *unpickler) persistent(pid any) error {
	if u.persistentLoad == nil {
		return errors.New("persistent id without a resolver")
	}
	v, err := u.persistentLoad(pid)
	if err != nil {
		return err
	}
	u.push(v)
	return nil
}

func (u *unpickler) appendTo(items []any) error {
	t, err := u.top()
	if err != nil {
		return err
	}
	switch l := t.(type) {
	case *List:
		l.Items = append(l.Items, items...)
	case *Object:
		l.List = append(l.List, items...)
	case *Set:
		l.Items = append(l.Items, items...)
	default:
		return fmt.Errorf("APPEND to a %T", t)
	}
	return nil
}

func (u *unpickler) setItems(items []any) error {
	t, err := u.top()
	if err != nil {
		return err
	}
	var d *Dict
	switch o := t.(type) {
	case *Dict:
		d = o
	case *Object:
		if o.Items == nil {
			o.Items = NewDict(KindDict)
		}
		d = o.Items
	default:
		return fmt.Errorf("SETITEM on a %T", t)
	}
	for i := 0; i+1 < len(items); i += 2 {
		d.Set(items[i], items[i+1])
	}
	return nil
}

// build applies BUILD state the way object.__setstate__ would, keeping the
// state for objects this package does not model.
func build(target, state any) error {
	switch t := target.(type) {
	case *Object:
		if old, ok := t.State.(*Dict); ok {
			if nd, ok := state.(*Dict); ok {
				for i, k := range nd.Keys {
					old.Set(k, nd.Values[i])
				}
				return nil
			}
		}
		t.State = state
	case *Dict:
		// OrderedDict instance attributes such as _metadata.
		if nd, ok := state.(*Dict); ok {
			if t.Attrs == nil {
				t.Attrs = NewDict(KindDict)
			}
			for i, k := range nd.Keys {
				t.Attrs.Set(k, nd.Values[i])
			}
		}
	case *Tensor, *List, *Set:
		// Python-side attributes on tensors or containers carry nothing we use.
	default:
		return fmt.Errorf("BUILD on a %T", target)
	}
	return nil
}
