package ptfile

import (
	"fmt"
	"math/big"
	"strings"
)

// StateDict returns the tensors of a checkpoint by name, plus the names in
// file order. root may be a dict of tensors (torch.save(model.state_dict())),
// a dict with a "state_dict" entry (Dassl/CLIP-AGIQA checkpoints), or a
// TorchScript module (then it is ModuleTensors). Non-tensor entries of the
// chosen dict are skipped, as torch's load_state_dict ignores extra state.
func StateDict(root any) (map[string]*Tensor, []string, error) {
	if o, ok := root.(*Object); ok {
		return ModuleTensors(o)
	}
	d, ok := root.(*Dict)
	if !ok {
		return nil, nil, fmt.Errorf("ptfile: state dict: root is a %s, not a dict", typeName(root))
	}
	if sd, ok := d.Get("state_dict"); ok {
		if d, ok = sd.(*Dict); !ok {
			return nil, nil, fmt.Errorf("ptfile: state dict: \"state_dict\" is a %s, not a dict", typeName(sd))
		}
	}
	out := make(map[string]*Tensor, d.Len())
	var names []string
	for i, k := range d.Keys {
		t, ok := d.Values[i].(*Tensor)
		if !ok {
			continue
		}
		name, ok := k.(string)
		if !ok {
			return nil, nil, fmt.Errorf("ptfile: state dict: tensor key %v is a %s, not a string", k, typeName(k))
		}
		out[name] = t
		names = append(names, name)
	}
	if len(names) == 0 {
		return nil, nil, fmt.Errorf("ptfile: state dict: no tensors in the dict")
	}
	return out, names, nil
}

// ModuleTensors walks a TorchScript module tree (data.pkl of torch.jit.save)
// and returns every tensor attribute (parameters and buffers) by dotted
// name, in depth-first attribute order, which is the order of the module's
// state_dict(). Submodules are the *Object attributes.
func ModuleTensors(root any) (map[string]*Tensor, []string, error) {
	o, ok := root.(*Object)
	if !ok {
		return nil, nil, fmt.Errorf("ptfile: module tensors: root is a %s, not a module object", typeName(root))
	}
	out := make(map[string]*Tensor)
	var names []string
	seen := make(map[*Object]bool)
	var walk func(o *Object, prefix string) error
	walk = func(o *Object, prefix string) error {
		if seen[o] {
			return nil // shared or cyclic reference: list its tensors once
		}
		seen[o] = true
		d, ok := o.State.(*Dict)
		if !ok {
			return nil
		}
		for i, k := range d.Keys {
			name, ok := k.(string)
			if !ok {
				continue
			}
			switch v := d.Values[i].(type) {
			case *Tensor:
				if _, dup := out[prefix+name]; dup {
					return fmt.Errorf("ptfile: module tensors: duplicate name %s", prefix+name)
				}
				out[prefix+name] = v
				names = append(names, prefix+name)
			case *Object:
				if err := walk(v, prefix+name+"."); err != nil {
					return err
				}
			}
		}
		return nil
	}
	if err := walk(o, ""); err != nil {
		return nil, nil, err
	}
	if len(names) == 0 {
		return nil, nil, fmt.Errorf("ptfile: module tensors: %s holds no tensors", o.Class)
	}
	return out, names, nil
}

// Get follows a path of dict keys (strings or ints), list/tuple indexes and
// object attributes from v, e.g. Get(root, "optimizer", "state", 0,
// "momentum_buffer").
func Get(v any, path ...any) (any, error) {
	cur := v
	for i, step := range path {
		next, err := getStep(cur, step)
		if err != nil {
			return nil, fmt.Errorf("ptfile: get %s: %w", formatPath(path[:i+1]), err)
		}
		cur = next
	}
	return cur, nil
}

func getStep(cur, step any) (any, error) {
	switch c := cur.(type) {
	case *Dict:
		if v, ok := c.Get(step); ok {
			return v, nil
		}
		if s, ok := step.(string); ok && c.Attrs != nil {
			if v, ok := c.Attrs.Get(s); ok {
				return v, nil
			}
		}
		return nil, fmt.Errorf("no key %v", step)
	case *Object:
		if s, ok := step.(string); ok {
			if v, ok := c.Attr(s); ok {
				return v, nil
			}
		}
		if c.Items != nil {
			if v, ok := c.Items.Get(step); ok {
				return v, nil
			}
		}
		return nil, fmt.Errorf("%s has no attribute %v", c.Class, step)
	case *List:
		return index(c.Items, step)
	case Tuple:
		return index(c, step)
	}
	return nil, fmt.Errorf("cannot index a %s", typeName(cur))
}

func index(items []any, step any) (any, error) {
	i, ok := normKey(step).(int64)
	if !ok {
		return nil, fmt.Errorf("list index %v is not an int", step)
	}
	if i < 0 {
		i += int64(len(items))
	}
	if i < 0 || i >= int64(len(items)) {
		return nil, fmt.Errorf("index %v out of range (len %d)", step, len(items))
	}
	return items[i], nil
}

func formatPath(path []any) string {
	parts := make([]string, len(path))
	for i, p := range path {
		if s, ok := p.(string); ok {
			parts[i] = fmt.Sprintf("%q", s)
		} else {
			parts[i] = fmt.Sprint(p)
		}
	}
	return "[" + strings.Join(parts, "][") + "]"
}

// GetTensor is Get for a tensor leaf.
func GetTensor(v any, path ...any) (*Tensor, error) {
	x, err := Get(v, path...)
	if err != nil {
		return nil, err
	}
	t, ok := x.(*Tensor)
	if !ok {
		return nil, fmt.Errorf("ptfile: get %s: a %s, not a tensor", formatPath(path), typeName(x))
	}
	return t, nil
}

// GetInt is Get for an int leaf (also accepts a 1-element integer tensor,
// like TorchScript's input_resolution buffer).
func GetInt(v any, path ...any) (int64, error) {
	x, err := Get(v, path...)
	if err != nil {
		return 0, err
	}
	switch n := x.(type) {
	case int64:
		return n, nil
	case *Tensor:
		if vals, err := n.Int64s(); err == nil && len(vals) == 1 {
			return vals[0], nil
		}
	}
	return 0, fmt.Errorf("ptfile: get %s: a %s, not an int", formatPath(path), typeName(x))
}

// GetFloat is Get for a float leaf; ints are converted.
func GetFloat(v any, path ...any) (float64, error) {
	x, err := Get(v, path...)
	if err != nil {
		return 0, err
	}
	switch n := x.(type) {
	case float64:
		return n, nil
	case int64:
		return float64(n), nil
	}
	return 0, fmt.Errorf("ptfile: get %s: a %s, not a float", formatPath(path), typeName(x))
}

// GetString is Get for a str leaf.
func GetString(v any, path ...any) (string, error) {
	x, err := Get(v, path...)
	if err != nil {
		return "", err
	}
	s, ok := x.(string)
	if !ok {
		return "", fmt.Errorf("ptfile: get %s: a %s, not a str", formatPath(path), typeName(x))
	}
	return s, nil
}

// typeName names a tree value in Python terms for error messages.
func typeName(v any) string {
	switch x := v.(type) {
	case nil:
		return "None"
	case bool:
		return "bool"
	case int64, *big.Int:
		return "int"
	case float64:
		return "float"
	case string:
		return "str"
	case []byte:
		return "bytes"
	case Tuple:
		return "tuple"
	case *List:
		return "list"
	case *Set:
		return "set"
	case *Dict:
		return x.Kind
	case *Tensor:
		return "tensor"
	case *Storage:
		return "storage"
	case *Class:
		return "class " + x.String()
	case *Object:
		return x.Class.String() + " object"
	}
	return fmt.Sprintf("%T", v)
}
