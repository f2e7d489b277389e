package optim

import (
	"fmt"

	"github.com/clipagiqa/clipagiqa/torch"
	"github.com/clipagiqa/clipagiqa/torch/ptfile"
)

// AdamOptions are the hyper-parameters of torch.optim.Adam and AdamW
// (PyTorch 1.13; amsgrad is not supported).
type AdamOptions struct {
	LR          float64
	Betas       [2]float64
	Eps         float64
	WeightDecay float64
	Maximize    bool
}

// AdamDefaults are torch.optim.Adam's defaults.
func AdamDefaults() AdamOptions {
	return AdamOptions{LR: 1e-3, Betas: [2]float64{0.9, 0.999}, Eps: 1e-8}
}

// AdamWDefaults are torch.optim.AdamW's defaults.
func AdamWDefaults() AdamOptions {
	o := AdamDefaults()
	o.WeightDecay = 1e-2
	return o
}

func (o AdamOptions) check(where string) error {
	switch {
	case o.LR < 0:
		return fmt.Errorf("%s: invalid learning rate %v", where, o.LR)
	case o.Eps < 0:
		return fmt.Errorf("%s: invalid epsilon %v", where, o.Eps)
	case o.Betas[0] < 0 || o.Betas[0] >= 1:
		return fmt.Errorf("%s: invalid beta parameter at index 0: %v", where, o.Betas[0])
	case o.Betas[1] < 0 || o.Betas[1] >= 1:
		return fmt.Errorf("%s: invalid beta parameter at index 1: %v", where, o.Betas[1])
	case o.WeightDecay < 0:
		return fmt.Errorf("%s: invalid weight decay %v", where, o.WeightDecay)
	}
	return nil
}

// AdamGroup is one parameter group of an Adam or AdamW optimizer.
type AdamGroup struct {
	// AdamOptions are this group's hyper-parameters; LR is the current one.
	AdamOptions
	groupBase
}

// Adam is torch.optim.Adam (L2 weight decay added to the gradient) or, built
// with NewAdamW, torch.optim.AdamW (decoupled weight decay: p *= 1-lr·wd
// before the moments), with PyTorch 1.13's single-tensor arithmetic:
//
//	m = β1·m + (1-β1)·g;  v = β2·v + (1-β2)·g²;
//	denom = sqrt(v)/sqrt(1-β2^t) + eps;  p -= lr/(1-β1^t) · m/denom.
type Adam struct {
	decoupled bool
	groups    []*AdamGroup
	params    []Param
	state     []torch.AdamState // by flat index
}

// NewAdam builds torch.optim.Adam over groups.
func NewAdam(groups []ParamGroup, opts AdamOptions) (*Adam, error) {
	return newAdam(groups, opts, false)
}

// NewAdamW builds torch.optim.AdamW over groups.
func NewAdamW(groups []ParamGroup, opts AdamOptions) (*Adam, error) {
	return newAdam(groups, opts, true)
}

func newAdam(groups []ParamGroup, opts AdamOptions, decoupled bool) (*Adam, error) {
	name := map[bool]string{false: "adam", true: "adamw"}[decoupled]
	if err := opts.check(name); err != nil {
		return nil, err
	}
	flat, err := checkParams(groups)
	if err != nil {
		return nil, err
	}
	o := &Adam{decoupled: decoupled, params: flat, state: make([]torch.AdamState, len(flat))}
	for gi, g := range groups {
		h := opts
		h.LR = opts.LR * scaleOf(g)
		h.WeightDecay = decayOf(g, opts.WeightDecay)
		if err := h.check(fmt.Sprintf("%s group %d", name, gi)); err != nil {
			return nil, err
		}
		o.groups = append(o.groups, &AdamGroup{AdamOptions: h, groupBase: groupBase{InitialLR: h.LR, params: g.Params, extra: o.flags()}})
	}
	return o, nil
}

// Decoupled reports whether this is AdamW.
func (o *Adam) Decoupled() bool { return o.decoupled }

// Groups returns the parameter groups; change their hyper-parameters in
// place (the parameter lists are fixed).
func (o *Adam) Groups() []*AdamGroup { return o.groups }

// Params lists the parameters in state-dict index order.
func (o *Adam) Params() []Param { return append([]Param(nil), o.params...) }

// NumGroups is the number of parameter groups.
func (o *Adam) NumGroups() int { return len(o.groups) }

// LR is group g's learning rate.
func (o *Adam) LR(g int) float64 { return o.groups[g].LR }

// SetLR sets group g's learning rate.
func (o *Adam) SetLR(g int, lr float64) { o.groups[g].LR = lr }

// InitialLR is group g's initial learning rate.
func (o *Adam) InitialLR(g int) float64 { return o.groups[g].InitialLR }

// ZeroGrad drops all gradients.
func (o *Adam) ZeroGrad() error { return zeroGrad(o.params) }

// Step updates every parameter that has a gradient.
func (o *Adam) Step() error {
	i := 0
	for gi, g := range o.groups {
		if err := g.check(fmt.Sprintf("adam group %d", gi)); err != nil {
			return err
		}
		for _, p := range g.params {
			if _, err := torch.AdamUpdate(p.T, &o.state[i], g.LR, g.Betas[0], g.Betas[1], g.Eps,
				g.WeightDecay, o.decoupled, g.Maximize); err != nil {
				return fmt.Errorf("adam step of %s: %w", p.Name, err)
			}
			i++
		}
	}
	return nil
}

// State returns new handles (shared storage) to the named parameter's
// state; all nil before its first step. The caller closes them.
func (o *Adam) State(name string) (torch.AdamState, error) {
	for i, p := range o.params {
		if p.Name != name {
			continue
		}
		st := o.state[i]
		if st.Step == nil {
			return torch.AdamState{}, nil
		}
		var out torch.AdamState
		var err error
		for _, c := range []struct {
			dst **torch.Tensor
			src *torch.Tensor
		}{{&out.Step, st.Step}, {&out.ExpAvg, st.ExpAvg}, {&out.ExpAvgSq, st.ExpAvgSq}} {
			if *c.dst, err = c.src.Clone(); err != nil {
				out.Close()
				return torch.AdamState{}, err
			}
		}
		return out, nil
	}
	return torch.AdamState{}, fmt.Errorf("adam: no parameter %s", name)
}

func (g *AdamGroup) known() []entry {
	return []entry{{"lr", g.LR}, {"betas", ptfile.Tuple{g.Betas[0], g.Betas[1]}}, {"eps", g.Eps},
		{"weight_decay", g.WeightDecay}, {"amsgrad", false}, {"maximize", g.Maximize}}
}

// flags are the group keys of torch.optim.Adam / AdamW that change no
// arithmetic on the single-tensor CPU path when off; they are written as
// PyTorch does and kept as loaded.
func (o *Adam) flags() []entry {
	if o.decoupled {
		return []entry{{"foreach", nil}, {"capturable", false}}
	}
	return []entry{{"foreach", nil}, {"capturable", false}, {"differentiable", false}, {"fused", false}}
}

// StateDict returns {"state": {i: {"step": T, "exp_avg": T, "exp_avg_sq":
// T}}, "param_groups": [...]}, the layout of torch.optim.Adam(W).state_dict().
func (o *Adam) StateDict() (*ptfile.Dict, error) {
	state := ptfile.NewDict(ptfile.KindDict)
	for i, p := range o.params {
		st := o.state[i]
		if st.Step == nil {
			continue
		}
		e := ptfile.NewDict(ptfile.KindDict)
		for _, kv := range []struct {
			k string
			t *torch.Tensor
		}{{"step", st.Step}, {"exp_avg", st.ExpAvg}, {"exp_avg_sq", st.ExpAvgSq}} {
			r, err := toRaw(kv.t, kv.k+" of "+p.Name)
			if err != nil {
				return nil, err
			}
			e.Set(kv.k, r)
		}
		state.Set(int64(i), e)
	}
	var groups []any
	first := 0
	for _, g := range o.groups {
		groups = append(groups, packGroup(g.known(), &g.groupBase, first))
		first += len(g.params)
	}
	return stateDictRoot(state, groups), nil
}

// LoadStateDict loads a torch.optim.Adam or AdamW state dict: per-parameter
// step and moments by index, and every group's hyper-parameters.
func (o *Adam) LoadStateDict(sd *ptfile.Dict) error {
	var mine [][]Param
	for _, g := range o.groups {
		mine = append(mine, g.params)
	}
	lgs, state, err := parseStateDict(sd, mine)
	if err != nil {
		return fmt.Errorf("adam: load state dict: %w", err)
	}
	var groups []*AdamGroup
	for gi, lg := range lgs {
		g, err := loadAdamGroup(lg, mine[gi])
		if err != nil {
			return fmt.Errorf("adam: load state dict: %w", err)
		}
		groups = append(groups, g)
	}
	sts := make([]torch.AdamState, len(o.params))
	fail := func(err error) error {
		for i := range sts {
			sts[i].Close()
		}
		return fmt.Errorf("adam: load state dict: %w", err)
	}
	for i, e := range state {
		p := o.params[i]
		st := &sts[i]
		slot := map[string]**torch.Tensor{"step": &st.Step, "exp_avg": &st.ExpAvg, "exp_avg_sq": &st.ExpAvgSq}
		for k, key := range e.Keys {
			ks, _ := key.(string)
			dst, ok := slot[ks]
			if !ok || *dst != nil {
				return fail(fmt.Errorf("unexpected state %v for %s (amsgrad is not supported)", key, p.Name))
			}
			t, err := stateTensor(e.Values[k], p, ks, ks == "step")
			if err != nil {
				return fail(err)
			}
			*dst = t
		}
		if st.Step == nil || st.ExpAvg == nil || st.ExpAvgSq == nil {
			return fail(fmt.Errorf("state of %s lacks step, exp_avg or exp_avg_sq", p.Name))
		}
		if sts[i].Step.Numel() != 1 {
			return fail(fmt.Errorf("state step of %s has %d elements, want 1", p.Name, sts[i].Step.Numel()))
		}
		for _, kv := range []struct {
			k string
			t *torch.Tensor
		}{{"exp_avg", sts[i].ExpAvg}, {"exp_avg_sq", sts[i].ExpAvgSq}} {
			if err := checkLike(kv.t, p, kv.k); err != nil {
				return fail(err)
			}
		}
	}
	o.Close()
	o.groups, o.state = groups, sts
	return nil
}

func loadAdamGroup(lg *loadedGroup, params []Param) (*AdamGroup, error) {
	if err := lg.unsupported("amsgrad", "capturable", "fused"); err != nil {
		return nil, err
	}
	lg.used["amsgrad"] = true
	var h AdamOptions
	var err error
	get := func(key string, dst *float64) {
		if err == nil {
			*dst, err = lg.float(key, 0)
		}
	}
	get("lr", &h.LR)
	get("eps", &h.Eps)
	get("weight_decay", &h.WeightDecay)
	if err == nil {
		h.Betas, err = lg.pair("betas", [2]float64{})
	}
	if err == nil {
		h.Maximize, err = lg.bool("maximize", false)
	}
	if err != nil {
		return nil, err
	}
	if err := h.check(lg.where); err != nil {
		return nil, err
	}
	b, err := lg.base(params, h.LR)
	if err != nil {
		return nil, err
	}
	return &AdamGroup{AdamOptions: h, groupBase: b}, nil
}

// Close frees the optimizer state; closing twice is harmless.
func (o *Adam) Close() {
	for i := range o.state {
		o.state[i].Close()
	}
}
