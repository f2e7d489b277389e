package ptfile

import (
	"errors"
	"fmt"
	"strings"
)

// storageLoader resolves persistent ids to storages, reading each storage
// record once, on first use.
type storageLoader struct {
	read     func(key string) ([]byte, error)
	storages map[string]*Storage
}

func (l *storageLoader) load(pid any) (any, error) {
	t, ok := pid.(Tuple)
	if !ok || len(t) == 0 {
		return nil, fmt.Errorf("persistent id %T is not a tuple", pid)
	}
	if tag, _ := t[0].(string); tag != "storage" {
		return nil, fmt.Errorf("persistent id of kind %v is not supported", t[0])
	}
	if len(t) < 5 {
		return nil, fmt.Errorf("storage persistent id has %d fields, want 5", len(t))
	}
	cls, ok := t[1].(*Class)
	if !ok {
		return nil, fmt.Errorf("storage type is a %T, not a class", t[1])
	}
	var key string
	switch k := t[2].(type) {
	case string:
		key = k
	case int64:
		key = fmt.Sprint(k)
	default:
		return nil, fmt.Errorf("storage key is a %T", t[2])
	}
	loc, _ := t[3].(string)
	numel, ok := t[4].(int64)
	if !ok || numel < 0 {
		return nil, fmt.Errorf("storage %s: bad element count %v", key, t[4])
	}
	if !strings.HasPrefix(cls.Module, "torch") {
		return nil, fmt.Errorf("storage %s: unexpected storage class %s", key, cls)
	}
	dt, ok := dtypeFromStorage(cls.Name)
	if !ok {
		return nil, fmt.Errorf("storage %s: unsupported dtype (storage class %s)", key, cls)
	}
	if s, ok := l.storages[key]; ok {
		if s.DType != dt {
			return nil, fmt.Errorf("storage %s used as both %s and %s", key, s.DType, dt)
		}
		return s, nil
	}
	data, err := l.read(key)
	if err != nil {
		return nil, err
	}
	need := numel * int64(dt.Size())
	if numel > int64(len(data)) || int64(len(data)) < need {
		return nil, fmt.Errorf("storage data/%s holds %d bytes, %d %s elements need %d", key, len(data), numel, dt, need)
	}
	s := &Storage{DType: dt, Key: key, Location: loc, Numel: numel, Data: data[:need]}
	l.storages[key] = s
	return s, nil
}

// dtypeNames maps torch dtype globals (torch.float32, torch.half ...) used
// by _rebuild_tensor_v3.
var dtypeNames = map[string]DType{
	"float32": Float32, "float": Float32, "float16": Float16, "half": Float16,
	"bfloat16": BFloat16, "float64": Float64, "double": Float64,
	"int64": Int64, "long": Int64, "int32": Int32, "int": Int32,
	"int16": Int16, "short": Int16, "int8": Int8, "uint8": Uint8, "bool": Bool,
}

func toInt64(v any) (int64, bool) {
	switch x := v.(type) {
	case int64:
		return x, true
	case bool:
		if x {
			return 1, true
		}
		return 0, true
	}
	return 0, false
}

func toInt64s(v any) ([]int64, error) {
	var items []any
	switch x := v.(type) {
	case Tuple:
		items = x
	case *List:
		items = x.Items
	default:
		return nil, fmt.Errorf("expected a tuple of ints, got %T", v)
	}
	out := make([]int64, len(items))
	for i, it := range items {
		n, ok := toInt64(it)
		if !ok {
			return nil, fmt.Errorf("expected an int, got %T", it)
		}
		out[i] = n
	}
	return out, nil
}

// rebuildTensor applies torch's view rules (storage, offset, size, stride)
// and copies non-contiguous views into a contiguous buffer.
func rebuildTensor(args []any, dtype DType) (*Tensor, error) {
	if len(args) < 4 {
		return nil, fmt.Errorf("tensor rebuild needs 4 arguments, got %d", len(args))
	}
	st, ok := args[0].(*Storage)
	if !ok {
		return nil, fmt.Errorf("tensor storage is a %T", args[0])
	}
	off, ok := toInt64(args[1])
	if !ok || off < 0 {
		return nil, fmt.Errorf("bad storage offset %v", args[1])
	}
	shape, err := toInt64s(args[2])
	if err != nil {
		return nil, fmt.Errorf("tensor size: %w", err)
	}
	strides, err := toInt64s(args[3])
	if err != nil {
		return nil, fmt.Errorf("tensor stride: %w", err)
	}
	if len(strides) != len(shape) {
		return nil, fmt.Errorf("tensor size %v and stride %v differ in rank", shape, strides)
	}
	if dtype == Invalid {
		dtype = st.DType
	}
	es := int64(dtype.Size())
	avail := int64(len(st.Data)) / es
	n, err := numElements(shape)
	if err != nil {
		return nil, err
	}
	t := &Tensor{DType: dtype, Shape: shape, Strides: ContiguousStrides(shape)}
	if n == 0 {
		t.Data = []byte{}
		return t, nil
	}
	last := off
	for i, s := range shape {
		if strides[i] < 0 {
			return nil, fmt.Errorf("negative stride %v", strides)
		}
		if strides[i] > 0 && (s-1) > (avail-last)/strides[i] {
			return nil, fmt.Errorf("view (offset %d, size %v, stride %v) exceeds storage %s of %d elements", off, shape, strides, st.Key, avail)
		}
		last += (s - 1) * strides[i]
	}
	if last >= avail {
		return nil, fmt.Errorf("view (offset %d, size %v, stride %v) exceeds storage %s of %d elements", off, shape, strides, st.Key, avail)
	}
	if isContiguous(shape, strides) {
		t.Data = st.Data[off*es : (off+n)*es : (off+n)*es]
		return t, nil
	}
	// Zero strides (expand) let a tiny storage describe a huge view; bound
	// what a crafted file can make us allocate.
	if n > avail && n*es > maxExpandedBytes {
		return nil, fmt.Errorf("view of %d elements over storage %s of %d elements is too large to materialise", n, st.Key, avail)
	}
	t.Data = gather(st.Data, int(es), off, shape, strides, n)
	return t, nil
}

// maxExpandedBytes caps views larger than their storage (expanded tensors).
const maxExpandedBytes = 1 << 30

func isContiguous(shape, strides []int64) bool {
	want := ContiguousStrides(shape)
	for i := range shape {
		if shape[i] != 1 && strides[i] != want[i] {
			return false
		}
	}
	return true
}

func iterItems(v any) ([]any, bool) {
	switch x := v.(type) {
	case Tuple:
		return x, true
	case *List:
		return x.Items, true
	case *Set:
		return x.Items, true
	case *Dict:
		return x.Keys, true
	}
	return nil, false
}

// fillPairs adds (key, value) pairs from a list or dict argument.
func fillPairs(d *Dict, src any) error {
	if sd, ok := src.(*Dict); ok {
		for i, k := range sd.Keys {
			d.Set(k, sd.Values[i])
		}
		return nil
	}
	items, ok := iterItems(src)
	if !ok {
		return fmt.Errorf("cannot build a dict from a %T", src)
	}
	for _, it := range items {
		p, ok := iterItems(it)
		if !ok || len(p) != 2 {
			return errors.New("dict item is not a pair")
		}
		d.Set(p[0], p[1])
	}
	return nil
}

// callClass is the unpickler's view of Python callables: a few torch and
// builtin functions are modelled, everything else becomes an *Object.
func callClass(c *Class, args []any) (any, error) {
	mod := c.Module
	if mod == "__builtin__" {
		mod = "builtins"
	}
	if mod == "copy_reg" {
		mod = "copyreg"
	}
	switch mod + "." + c.Name {
	case "torch._utils._rebuild_tensor", "torch._utils._rebuild_tensor_v2":
		return rebuildTensor(args, Invalid)
	case "torch._utils._rebuild_tensor_v3":
		if len(args) < 7 {
			return nil, fmt.Errorf("_rebuild_tensor_v3 needs 7 arguments, got %d", len(args))
		}
		dc, ok := args[6].(*Class)
		if !ok {
			return nil, fmt.Errorf("_rebuild_tensor_v3 dtype is a %T", args[6])
		}
		dt, ok := dtypeNames[dc.Name]
		if !ok {
			return nil, fmt.Errorf("unsupported dtype torch.%s", dc.Name)
		}
		return rebuildTensor(args, dt)
	case "torch._utils._rebuild_parameter", "torch._utils._rebuild_parameter_with_state":
		if len(args) == 0 {
			return nil, errors.New("_rebuild_parameter without data")
		}
		return args[0], nil
	case "torch._tensor._rebuild_from_type", "torch._tensor._rebuild_from_type_v2":
		// (func, new_type, args, state): a tensor subclass; rebuild the base.
		if len(args) < 3 {
			return nil, fmt.Errorf("%s needs 3 arguments", c.Name)
		}
		f, ok := args[0].(*Class)
		if !ok {
			return nil, fmt.Errorf("%s: function is a %T", c.Name, args[0])
		}
		inner, err := asArgs(args[2])
		if err != nil {
			return nil, err
		}
		return callClass(f, inner)
	case "torch.jit._pickle.build_intlist", "torch.jit._pickle.build_tensorlist",
		"torch.jit._pickle.build_doublelist", "torch.jit._pickle.build_boollist",
		"torch.jit._pickle.restore_type_tag", "torch.Size":
		if len(args) == 0 {
			return nil, fmt.Errorf("%s without arguments", c)
		}
		return args[0], nil
	case "collections.OrderedDict", "collections.defaultdict", "builtins.dict":
		kind := KindDict
		switch c.Name {
		case "OrderedDict":
			kind = KindOrderedDict
		case "defaultdict":
			kind = KindDefaultDict
			args = nil // the default factory
		}
		d := NewDict(kind)
		if len(args) > 0 && args[0] != nil {
			if err := fillPairs(d, args[0]); err != nil {
				return nil, err
			}
		}
		return d, nil
	case "builtins.list", "builtins.tuple", "builtins.set", "builtins.frozenset":
		var items []any
		if len(args) > 0 {
			it, ok := iterItems(args[0])
			if !ok {
				return nil, fmt.Errorf("%s of a %T", c.Name, args[0])
			}
			items = append(items, it...)
		}
		switch c.Name {
		case "list":
			return &List{Items: items}, nil
		case "tuple":
			return Tuple(items), nil
		}
		return &Set{Items: items, Frozen: c.Name == "frozenset"}, nil
	case "copyreg._reconstructor":
		// (cls, base, state): object.__new__(cls) then the state.
		if len(args) == 0 {
			return nil, errors.New("_reconstructor without a class")
		}
		cls, ok := args[0].(*Class)
		if !ok {
			return nil, fmt.Errorf("_reconstructor class is a %T", args[0])
		}
		o := &Object{Class: cls}
		if len(args) > 2 && args[2] != nil {
			o.Args = []any{args[2]}
		}
		return o, nil
	case "copyreg.__newobj__":
		if len(args) == 0 {
			return nil, errors.New("__newobj__ without a class")
		}
		cls, ok := args[0].(*Class)
		if !ok {
			return nil, fmt.Errorf("__newobj__ class is a %T", args[0])
		}
		return callClass(cls, args[1:])
	case "_codecs.encode":
		// Protocol 2 stores Python 3 bytes as encode(latin-1 text, "latin1").
		if len(args) == 0 {
			return nil, errors.New("_codecs.encode without arguments")
		}
		s, ok := args[0].(string)
		if !ok {
			return nil, fmt.Errorf("_codecs.encode of a %T", args[0])
		}
		b := make([]byte, 0, len(s))
		for _, r := range s {
			if r > 0xff {
				return nil, errors.New("_codecs.encode: non-latin-1 text")
			}
			b = append(b, byte(r))
		}
		return b, nil
	}
	return &Object{Class: c, Args: args}, nil
}
