package optim

import (
	"fmt"
	"math/big"
	"slices"

	"github.com/clipagiqa/clipagiqa/torch"
	"github.com/clipagiqa/clipagiqa/torch/ptfile"
)

// Optimizer is what training loops and schedules need from SGD, Adam and
// AdamW.
type Optimizer interface {
	// Step applies one update to every parameter that has a gradient.
	Step() error
	// ZeroGrad drops all gradients (set_to_none=True).
	ZeroGrad() error
	// Params lists the parameters in state-dict index order.
	Params() []Param
	// NumGroups is the number of parameter groups.
	NumGroups() int
	// LR is group g's current learning rate.
	LR(g int) float64
	// SetLR sets group g's learning rate.
	SetLR(g int, lr float64)
	// InitialLR is the learning rate group g started with, which schedules
	// scale (PyTorch's "initial_lr").
	InitialLR(g int) float64
	// StateDict returns the state in PyTorch's optimizer layout, tensors
	// copied to the host.
	StateDict() (*ptfile.Dict, error)
	// LoadStateDict replaces state and hyper-parameters with sd's, as
	// PyTorch's load_state_dict does; on error nothing has changed.
	LoadStateDict(sd *ptfile.Dict) error
	// Close frees the optimizer's state tensors (not the parameters).
	Close()
}

// entry is one key of a param_groups dict.
type entry struct {
	key   string
	value any
}

// groupBase is what every optimizer's parameter group shares.
type groupBase struct {
	// InitialLR is the learning rate schedules start from.
	InitialLR float64
	params    []Param
	// extra holds keys of a loaded param group that this package does not
	// model, written back unchanged.
	extra []entry
}

// Params lists the group's parameters.
func (g *groupBase) Params() []Param { return slices.Clone(g.params) }

func zeroGrad(params []Param) error {
	for _, p := range params {
		if err := p.T.ZeroGrad(); err != nil {
			return fmt.Errorf("optim: zero_grad of %s: %w", p.Name, err)
		}
	}
	return nil
}

// packGroup writes one param_groups entry: known keys in PyTorch's order,
// then the unmodelled ones, then "initial_lr", "params" (indices) and
// "param_names" (as recent PyTorch versions write them when given named
// parameters; 1.13 ignores the key).
func packGroup(known []entry, g *groupBase, first int) *ptfile.Dict {
	d := ptfile.NewDict(ptfile.KindDict)
	for _, e := range known {
		d.Set(e.key, e.value)
	}
	for _, e := range g.extra {
		d.Set(e.key, e.value)
	}
	d.Set("initial_lr", g.InitialLR)
	idx := make([]any, len(g.params))
	names := make([]any, len(g.params))
	for i, p := range g.params {
		idx[i] = int64(first + i)
		names[i] = p.Name
	}
	d.Set("params", idx)
	d.Set("param_names", names)
	return d
}

func stateDictRoot(state *ptfile.Dict, groups []any) *ptfile.Dict {
	root := ptfile.NewDict(ptfile.KindDict)
	root.Set("state", state)
	root.Set("param_groups", groups)
	return root
}

// loadedGroup is a param_groups entry read back: its keys, and which of them
// the optimizer consumed.
type loadedGroup struct {
	where string
	d     *ptfile.Dict
	used  map[string]bool
}

// parseStateDict checks sd against the optimizer's groups (count and sizes,
// names where the file has them) and returns the groups and the state by
// flat parameter index.
func parseStateDict(sd *ptfile.Dict, groups [][]Param) ([]*loadedGroup, map[int]*ptfile.Dict, error) {
	if sd == nil {
		return nil, nil, fmt.Errorf("optimizer state dict is nil")
	}
	rawGroups, ok := sd.Get("param_groups")
	if !ok {
		return nil, nil, fmt.Errorf("optimizer state dict has no param_groups")
	}
	gl, ok := asList(rawGroups)
	if !ok {
		return nil, nil, fmt.Errorf("param_groups is a %T, want a list", rawGroups)
	}
	if len(gl) != len(groups) {
		return nil, nil, fmt.Errorf("state dict has %d parameter groups, the optimizer %d", len(gl), len(groups))
	}
	var out []*loadedGroup
	fileIndex := map[int64]int{} // index in the file -> our flat index
	flat := 0
	for gi, raw := range gl {
		d, ok := raw.(*ptfile.Dict)
		if !ok {
			return nil, nil, fmt.Errorf("param_groups[%d] is a %T, want a dict", gi, raw)
		}
		lg := &loadedGroup{where: fmt.Sprintf("param_groups[%d]", gi), d: d, used: map[string]bool{"params": true, "param_names": true, "initial_lr": true}}
		rawIdx, _ := d.Get("params")
		il, ok := asList(rawIdx)
		if !ok {
			return nil, nil, fmt.Errorf("%s.params is a %T, want a list", lg.where, rawIdx)
		}
		if len(il) != len(groups[gi]) {
			return nil, nil, fmt.Errorf("%s has %d parameters, the optimizer's group %d has %d", lg.where, len(il), gi, len(groups[gi]))
		}
		var names []any
		if rn, ok := d.Get("param_names"); ok {
			if names, ok = asList(rn); !ok || len(names) != len(il) {
				return nil, nil, fmt.Errorf("%s.param_names does not list one name per parameter", lg.where)
			}
		}
		for i, v := range il {
			k, ok := asInt(v)
			if !ok {
				return nil, nil, fmt.Errorf("%s.params[%d] is a %T, want an int", lg.where, i, v)
			}
			if _, dup := fileIndex[k]; dup {
				return nil, nil, fmt.Errorf("%s lists parameter index %d twice", lg.where, k)
			}
			if names != nil {
				if n, _ := names[i].(string); n != groups[gi][i].Name {
					return nil, nil, fmt.Errorf("%s: parameter %d is %v in the state dict, %s here", lg.where, i, names[i], groups[gi][i].Name)
				}
			}
			fileIndex[k] = flat
			flat++
		}
		out = append(out, lg)
	}
	state := map[int]*ptfile.Dict{}
	rawState, ok := sd.Get("state")
	if !ok {
		return nil, nil, fmt.Errorf("optimizer state dict has no state")
	}
	sdict, ok := rawState.(*ptfile.Dict)
	if !ok {
		return nil, nil, fmt.Errorf("state is a %T, want a dict", rawState)
	}
	for i, k := range sdict.Keys {
		ki, ok := asInt(k)
		if !ok {
			return nil, nil, fmt.Errorf("state key %v is not a parameter index", k)
		}
		fi, ok := fileIndex[ki]
		if !ok {
			return nil, nil, fmt.Errorf("state for parameter index %d, which no param group lists", ki)
		}
		e, ok := sdict.Values[i].(*ptfile.Dict)
		if !ok {
			return nil, nil, fmt.Errorf("state[%d] is a %T, want a dict", ki, sdict.Values[i])
		}
		state[fi] = e
	}
	return out, state, nil
}

// float reads a number key of the group; def when absent.
func (g *loadedGroup) float(key string, def float64) (float64, error) {
	g.used[key] = true
	v, ok := g.d.Get(key)
	if !ok {
		return def, nil
	}
	f, ok := asFloat(v)
	if !ok {
		return 0, fmt.Errorf("%s.%s is a %T, want a number", g.where, key, v)
	}
	return f, nil
}

// bool reads a bool key of the group (None counts as false); def when absent.
func (g *loadedGroup) bool(key string, def bool) (bool, error) {
	g.used[key] = true
	v, ok := g.d.Get(key)
	if !ok {
		return def, nil
	}
	switch b := v.(type) {
	case nil:
		return false, nil
	case bool:
		return b, nil
	}
	return false, fmt.Errorf("%s.%s is a %T, want a bool", g.where, key, v)
}

// pair reads a two-number tuple key (betas); def when absent.
func (g *loadedGroup) pair(key string, def [2]float64) ([2]float64, error) {
	g.used[key] = true
	v, ok := g.d.Get(key)
	if !ok {
		return def, nil
	}
	l, ok := asList(v)
	if ok && len(l) == 2 {
		a, ok1 := asFloat(l[0])
		b, ok2 := asFloat(l[1])
		if ok1 && ok2 {
			return [2]float64{a, b}, nil
		}
	}
	return def, fmt.Errorf("%s.%s is %v, want two numbers", g.where, key, v)
}

// unsupported refuses a flag this package cannot honour when it is set.
func (g *loadedGroup) unsupported(keys ...string) error {
	for _, k := range keys {
		if v, _ := g.d.Get(k); v == true {
			return fmt.Errorf("%s: %s=True is not supported", g.where, k)
		}
	}
	return nil
}

// base fills InitialLR (lr when the file has none) and the unmodelled keys.
func (g *loadedGroup) base(params []Param, lr float64) (groupBase, error) {
	initial, err := g.float("initial_lr", lr)
	if err != nil {
		return groupBase{}, err
	}
	b := groupBase{InitialLR: initial, params: params}
	for i, k := range g.d.Keys {
		ks, ok := k.(string)
		if !ok {
			return groupBase{}, fmt.Errorf("%s has a non-string key %v", g.where, k)
		}
		if !g.used[ks] {
			b.extra = append(b.extra, entry{ks, g.d.Values[i]})
		}
	}
	return b, nil
}

// stateTensor converts one loaded state entry to a tensor on p's device,
// floating state in p's dtype, unless asSaved (PyTorch's load_state_dict
// leaves "step" as saved: a CPU float32 scalar). Python numbers (old "step"
// values) become float32 scalars.
func stateTensor(v any, p Param, key string, asSaved bool) (*torch.Tensor, error) {
	var t *torch.Tensor
	var err error
	switch x := v.(type) {
	case *ptfile.Tensor:
		t, err = torch.FromRaw(x)
	default:
		f, ok := asFloat(v)
		if !ok {
			return nil, fmt.Errorf("state %s of %s is a %T, want a tensor", key, p.Name, v)
		}
		t, err = torch.FromFloat32([]float32{float32(f)})
		if err == nil {
			s := torch.NewScope().WithGrad(torch.NoGrad)
			t2 := s.Keep(s.Reshape(t))
			err = s.Err()
			s.Close()
			t.Close()
			t = t2
		}
	}
	if err != nil {
		return nil, fmt.Errorf("state %s of %s: %w", key, p.Name, err)
	}
	if asSaved {
		return t, nil
	}
	dt, dev := t.DType(), p.T.Device()
	if dt.IsFloat() {
		dt = p.T.DType()
	}
	if dt == t.DType() && dev == t.Device() {
		return t, nil
	}
	s := torch.NewScope().WithGrad(torch.NoGrad)
	defer s.Close()
	out := s.Keep(s.To(t, dt, dev))
	t.Close()
	if err := s.Err(); err != nil {
		return nil, fmt.Errorf("state %s of %s: %w", key, p.Name, err)
	}
	return out, nil
}

// checkLike refuses state tensor t unless it has p's shape.
func checkLike(t *torch.Tensor, p Param, key string) error {
	if !slices.Equal(t.Shape(), p.T.Shape()) {
		return fmt.Errorf("state %s of %s has shape %v, the parameter %v", key, p.Name, t.Shape(), p.T.Shape())
	}
	return nil
}

func toRaw(t *torch.Tensor, what string) (*ptfile.Tensor, error) {
	r, err := torch.ToRaw(t)
	if err != nil {
		return nil, fmt.Errorf("optim: state dict: %s: %w", what, err)
	}
	return r, nil
}

func asList(v any) ([]any, bool) {
	switch x := v.(type) {
	case *ptfile.List:
		return x.Items, true
	case []any:
		return x, true
	case ptfile.Tuple:
		return x, true
	}
	return nil, false
}

func asInt(v any) (int64, bool) {
	switch x := v.(type) {
	case int64:
		return x, true
	case int:
		return int64(x), true
	case *big.Int:
		if x.IsInt64() {
			return x.Int64(), true
		}
	}
	return 0, false
}

func asFloat(v any) (float64, bool) {
	switch x := v.(type) {
	case float64:
		return x, true
	case bool:
		return 0, false
	}
	if i, ok := asInt(v); ok {
		return float64(i), true
	}
	return 0, false
}

var (
	_ Optimizer = (*SGD)(nil)
	_ Optimizer = (*Adam)(nil)
)
