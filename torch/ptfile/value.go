package ptfile

import (
	"math/big"
)

// Tuple is a Python tuple.
type Tuple []any

// List is a Python list (a pointer, because pickles mutate shared lists).
type List struct {
	Items []any
}

// Set is a Python set or frozenset.
type Set struct {
	Items  []any
	Frozen bool
}

// Class is a reference to a Python global (module + qualified name).
type Class struct {
	Module string
	Name   string
}

// String returns "module.Name".
func (c *Class) String() string { return c.Module + "." + c.Name }

// Object is an instance of a class this package does not model (an
// optimizer, a scheduler, a TorchScript module ...). Its pickled state is
// kept as-is so callers can still navigate it.
type Object struct {
	Class *Class
	Args  []any // arguments given to the constructor (REDUCE/NEWOBJ)
	State any   // argument of BUILD, usually a *Dict of attributes
	Items *Dict // entries added by SETITEM(S), for dict subclasses
	List  []any // entries added by APPEND(S), for list subclasses
}

// Attr returns the attribute name from the object's BUILD state.
func (o *Object) Attr(name string) (any, bool) {
	switch s := o.State.(type) {
	case *Dict:
		return s.Get(name)
	case Tuple:
		// (dict, slotstate) form: look in both.
		for _, part := range s {
			if d, ok := part.(*Dict); ok {
				if v, ok := d.Get(name); ok {
					return v, true
				}
			}
		}
	}
	return nil, false
}

// Dict kinds, from the Python class that built the dict.
const (
	KindDict        = "dict"
	KindOrderedDict = "collections.OrderedDict"
	KindDefaultDict = "collections.defaultdict"
)

// Dict is an insertion-ordered Python dict, OrderedDict or defaultdict.
type Dict struct {
	Kind   string // KindDict, KindOrderedDict or KindDefaultDict
	Keys   []any
	Values []any
	Attrs  *Dict // instance attributes set by BUILD (OrderedDict._metadata)

	index map[any]int // position of hashable keys
}

// NewDict returns an empty dict of the given kind.
func NewDict(kind string) *Dict { return &Dict{Kind: kind} }

// Len is the number of entries.
func (d *Dict) Len() int { return len(d.Keys) }

// normKey maps Go integer types onto the int64 the unpickler produces, so
// d.Get(0) finds the Python key 0.
func normKey(k any) any {
	switch v := k.(type) {
	case int:
		return int64(v)
	case int32:
		return int64(v)
	case uint8:
		return int64(v)
	case uint32:
		return int64(v)
	}
	return k
}

// indexable reports whether k can be a Go map key with Python's equality.
func indexable(k any) bool {
	switch k.(type) {
	case nil, string, int64, bool, *Tensor, *Object, *Class, *Storage, *List, *Dict, *Set:
		return true
	}
	return false
}

func keyEqual(a, b any) bool {
	switch x := a.(type) {
	case Tuple:
		y, ok := b.(Tuple)
		if !ok || len(x) != len(y) {
			return false
		}
		for i := range x {
			if !keyEqual(x[i], y[i]) {
				return false
			}
		}
		return true
	case *big.Int:
		y, ok := b.(*big.Int)
		return ok && x.Cmp(y) == 0
	case float64:
		y, ok := b.(float64)
		return ok && x == y
	case []byte:
		y, ok := b.([]byte)
		return ok && string(x) == string(y)
	}
	if indexable(a) && indexable(b) {
		return a == b
	}
	return false
}

func (d *Dict) find(k any) int {
	if indexable(k) {
		if i, ok := d.index[k]; ok {
			return i
		}
		return -1
	}
	for i, kk := range d.Keys {
		if keyEqual(kk, k) {
			return i
		}
	}
	return -1
}

// Get returns the value stored under key.
func (d *Dict) Get(key any) (any, bool) {
	i := d.find(normKey(key))
	if i < 0 {
		return nil, false
	}
	return d.Values[i], true
}

// Set inserts or replaces key, keeping first-insertion order like Python.
func (d *Dict) Set(key, value any) {
	key = normKey(key)
	if i := d.find(key); i >= 0 {
		d.Values[i] = value
		return
	}
	if indexable(key) {
		if d.index == nil {
			d.index = make(map[any]int)
		}
		d.index[key] = len(d.Keys)
	}
	d.Keys = append(d.Keys, key)
	d.Values = append(d.Values, value)
}

// Storage is a typed PyTorch storage referenced by a persistent id. It
// appears in the tree only where a file pickles a bare storage.
type Storage struct {
	DType    DType
	Key      string
	Location string
	Numel    int64
	Data     []byte // Numel*DType.Size() bytes, little-endian
}
