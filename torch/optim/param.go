package optim

import (
	"fmt"

	"github.com/clipagiqa/clipagiqa/torch"
	"github.com/clipagiqa/clipagiqa/torch/nn"
)

// Param is a trainable tensor T and its PyTorch dotted path Name
// ("visual.conv1.weight"). The optimizer updates the tensor in place and does
// not own it. It is torch/nn's NamedParam (one type for both packages), so a
// store's Trainable passes straight in.
type Param = nn.NamedParam

// Named converts named parameters of any type laid out as Param into Params
// (kept for callers with their own identical struct types).
func Named[P ~struct {
	Name string
	T    *torch.Tensor
}](ps []P) []Param {
	out := make([]Param, len(ps))
	for i, p := range ps {
		out[i] = Param(p)
	}
	return out
}

// ParamGroup is one of PyTorch's param_groups as requested: its parameters
// and how its hyper-parameters differ from the optimizer's defaults.
type ParamGroup struct {
	Params []Param
	// LRScale multiplies the optimizer's learning rate for this group; 0
	// means 1.
	LRScale float64
	// WeightDecay, when not nil, replaces the optimizer's weight decay for
	// this group (e.g. Decay(0) for biases and norms).
	WeightDecay *float64
}

// Decay returns a pointer to v, for ParamGroup.WeightDecay.
func Decay(v float64) *float64 { return &v }

// Single puts all params in one group with the optimizer's defaults.
func Single(params []Param) []ParamGroup { return []ParamGroup{{Params: params}} }

// GroupBy splits params into groups by name: assign returns the index into
// groups of each parameter's group, or -1 to leave it out (a frozen tensor).
// groups give each group's options; their Params are replaced. Inside a
// group, parameters keep their order in params. Empty groups are kept, so
// group indices are the ones given (as in PyTorch's param_groups).
func GroupBy(params []Param, assign func(name string) int, groups ...ParamGroup) ([]ParamGroup, error) {
	out := make([]ParamGroup, len(groups))
	for i, g := range groups {
		out[i] = g
		out[i].Params = nil
	}
	for _, p := range params {
		i := assign(p.Name)
		if i == -1 {
			continue
		}
		if i < 0 || i >= len(out) {
			return nil, fmt.Errorf("optim: parameter %s assigned to group %d of %d", p.Name, i, len(out))
		}
		out[i].Params = append(out[i].Params, p)
	}
	return out, nil
}

// checkParams validates the groups' parameters: named, valid, each name and
// tensor once. It returns them flattened in state-dict index order.
func checkParams(groups []ParamGroup) ([]Param, error) {
	var flat []Param
	seen := map[string]bool{}
	for gi, g := range groups {
		if g.LRScale < 0 {
			return nil, fmt.Errorf("optim: group %d: negative lr scale %v", gi, g.LRScale)
		}
		if g.WeightDecay != nil && *g.WeightDecay < 0 {
			return nil, fmt.Errorf("optim: group %d: negative weight decay %v", gi, *g.WeightDecay)
		}
		for _, p := range g.Params {
			switch {
			case p.Name == "":
				return nil, fmt.Errorf("optim: group %d has a parameter without a name", gi)
			case !p.T.Valid():
				return nil, fmt.Errorf("optim: parameter %s is nil or closed", p.Name)
			case seen[p.Name]:
				return nil, fmt.Errorf("optim: parameter %s appears more than once", p.Name)
			}
			seen[p.Name] = true
			flat = append(flat, p)
		}
	}
	if len(flat) == 0 {
		return nil, fmt.Errorf("optim: empty parameter list")
	}
	return flat, nil
}

func scaleOf(g ParamGroup) float64 {
	if g.LRScale == 0 {
		return 1
	}
	return g.LRScale
}

func decayOf(g ParamGroup, def float64) float64 {
	if g.WeightDecay != nil {
		return *g.WeightDecay
	}
	return def
}
