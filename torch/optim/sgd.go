package optim

import (
	"fmt"

	"github.com/clipagiqa/clipagiqa/torch"
	"github.com/clipagiqa/clipagiqa/torch/ptfile"
)

// SGDOptions are torch.optim.SGD's hyper-parameters (PyTorch 1.13).
type SGDOptions struct {
	LR          float64
	Momentum    float64
	Dampening   float64
	WeightDecay float64
	Nesterov    bool
	Maximize    bool
}

func (o SGDOptions) check(where string) error {
	switch {
	case o.LR < 0:
		return fmt.Errorf("%s: invalid learning rate %v", where, o.LR)
	case o.Momentum < 0:
		return fmt.Errorf("%s: invalid momentum %v", where, o.Momentum)
	case o.WeightDecay < 0:
		return fmt.Errorf("%s: invalid weight decay %v", where, o.WeightDecay)
	case o.Nesterov && (o.Momentum <= 0 || o.Dampening != 0):
		return fmt.Errorf("%s: Nesterov momentum requires a momentum and zero dampening", where)
	}
	return nil
}

// SGDGroup is one parameter group of an SGD optimizer.
type SGDGroup struct {
	// SGDOptions are this group's hyper-parameters; LR is the current one.
	SGDOptions
	groupBase
}

// SGD is stochastic gradient descent with PyTorch 1.13's update rule, bit
// for bit:
//
//	d = grad (+ weight_decay·p);  buf = d on the first step, else
//	momentum·buf + (1-dampening)·d;  d = d + momentum·buf (Nesterov) or buf;
//	p -= lr·d.
type SGD struct {
	groups []*SGDGroup
	params []Param
	bufs   []*torch.Tensor // momentum buffers by flat index
	has    []bool          // parameter has a state entry (stepped at least once)
}

// NewSGD builds SGD over groups; opts are the defaults each group scales or
// overrides.
func NewSGD(groups []ParamGroup, opts SGDOptions) (*SGD, error) {
	if err := opts.check("sgd"); err != nil {
		return nil, err
	}
	flat, err := checkParams(groups)
	if err != nil {
		return nil, err
	}
	o := &SGD{params: flat, bufs: make([]*torch.Tensor, len(flat)), has: make([]bool, len(flat))}
	for gi, g := range groups {
		h := opts
		h.LR = opts.LR * scaleOf(g)
		h.WeightDecay = decayOf(g, opts.WeightDecay)
		if err := h.check(fmt.Sprintf("sgd group %d", gi)); err != nil {
			return nil, err
		}
		o.groups = append(o.groups, &SGDGroup{SGDOptions: h, groupBase: groupBase{InitialLR: h.LR, params: g.Params, extra: sgdFlags()}})
	}
	return o, nil
}

// Groups returns the parameter groups; change their hyper-parameters in
// place (the parameter lists are fixed).
func (o *SGD) Groups() []*SGDGroup { return o.groups }

// Params lists the parameters in state-dict index order.
func (o *SGD) Params() []Param { return append([]Param(nil), o.params...) }

// NumGroups is the number of parameter groups.
func (o *SGD) NumGroups() int { return len(o.groups) }

// LR is group g's learning rate.
func (o *SGD) LR(g int) float64 { return o.groups[g].LR }

// SetLR sets group g's learning rate.
func (o *SGD) SetLR(g int, lr float64) { o.groups[g].LR = lr }

// InitialLR is group g's initial learning rate.
func (o *SGD) InitialLR(g int) float64 { return o.groups[g].InitialLR }

// ZeroGrad drops all gradients.
func (o *SGD) ZeroGrad() error { return zeroGrad(o.params) }

// Step updates every parameter that has a gradient.
func (o *SGD) Step() error {
	i := 0
	for gi, g := range o.groups {
		if err := g.check(fmt.Sprintf("sgd group %d", gi)); err != nil {
			return err
		}
		for _, p := range g.params {
			buf, stepped, err := torch.SGDUpdate(p.T, o.bufs[i], g.LR, g.Momentum, g.Dampening, g.WeightDecay, g.Nesterov, g.Maximize)
			o.bufs[i] = buf
			if err != nil {
				return fmt.Errorf("sgd step of %s: %w", p.Name, err)
			}
			o.has[i] = o.has[i] || stepped
			i++
		}
	}
	return nil
}

func (o *SGD) index(name string) (int, error) {
	for i, p := range o.params {
		if p.Name == name {
			return i, nil
		}
	}
	return 0, fmt.Errorf("sgd: no parameter %s", name)
}

// MomentumBuffer returns a new handle (shared storage) to the named
// parameter's momentum buffer, or nil before its first step with momentum.
func (o *SGD) MomentumBuffer(name string) (*torch.Tensor, error) {
	i, err := o.index(name)
	if err != nil {
		return nil, err
	}
	if o.bufs[i] == nil {
		return nil, nil
	}
	return o.bufs[i].Clone()
}

// SetMomentumBuffer makes buf (shared storage, same shape as the parameter)
// the named parameter's momentum buffer; nil clears it.
func (o *SGD) SetMomentumBuffer(name string, buf *torch.Tensor) error {
	i, err := o.index(name)
	if err != nil {
		return err
	}
	var h *torch.Tensor
	if buf != nil {
		if err := checkLike(buf, o.params[i], "momentum_buffer"); err != nil {
			return fmt.Errorf("sgd: %w", err)
		}
		if h, err = buf.Clone(); err != nil {
			return fmt.Errorf("sgd: momentum buffer of %s: %w", name, err)
		}
	}
	o.bufs[i].Close()
	o.bufs[i] = h
	o.has[i] = o.has[i] || h != nil
	return nil
}

func (g *SGDGroup) known() []entry {
	return []entry{{"lr", g.LR}, {"momentum", g.Momentum}, {"dampening", g.Dampening},
		{"weight_decay", g.WeightDecay}, {"nesterov", g.Nesterov}, {"maximize", g.Maximize}}
}

// sgdFlags are torch.optim.SGD's group keys that change no arithmetic on the
// single-tensor CPU path; they are written as PyTorch does and kept as loaded.
func sgdFlags() []entry { return []entry{{"foreach", nil}, {"differentiable", false}} }

// StateDict returns {"state": {i: {"momentum_buffer": T or None}},
// "param_groups": [...]}, the layout of torch.optim.SGD.state_dict().
func (o *SGD) StateDict() (*ptfile.Dict, error) {
	state := ptfile.NewDict(ptfile.KindDict)
	for i, p := range o.params {
		if !o.has[i] {
			continue
		}
		e := ptfile.NewDict(ptfile.KindDict)
		if o.bufs[i] == nil {
			e.Set("momentum_buffer", nil)
		} else {
			r, err := toRaw(o.bufs[i], "momentum_buffer of "+p.Name)
			if err != nil {
				return nil, err
			}
			e.Set("momentum_buffer", r)
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

// LoadStateDict loads a torch.optim.SGD state dict: momentum buffers by
// index and every group's hyper-parameters.
func (o *SGD) LoadStateDict(sd *ptfile.Dict) error {
	var mine [][]Param
	for _, g := range o.groups {
		mine = append(mine, g.params)
	}
	lgs, state, err := parseStateDict(sd, mine)
	if err != nil {
		return fmt.Errorf("sgd: load state dict: %w", err)
	}
	var groups []*SGDGroup
	for gi, lg := range lgs {
		g, err := loadSGDGroup(lg, mine[gi])
		if err != nil {
			return fmt.Errorf("sgd: load state dict: %w", err)
		}
		groups = append(groups, g)
	}
	bufs := make([]*torch.Tensor, len(o.params))
	has := make([]bool, len(o.params))
	fail := func(err error) error {
		for _, b := range bufs {
			b.Close()
		}
		return fmt.Errorf("sgd: load state dict: %w", err)
	}
	for i, e := range state {
		p := o.params[i]
		for k, key := range e.Keys {
			if key != "momentum_buffer" {
				return fail(fmt.Errorf("unexpected state %v for %s", key, p.Name))
			}
			has[i] = true
			if e.Values[k] == nil {
				continue
			}
			t, err := stateTensor(e.Values[k], p, "momentum_buffer", false)
			if err != nil {
				return fail(err)
			}
			bufs[i] = t
			if err := checkLike(t, p, "momentum_buffer"); err != nil {
				return fail(err)
			}
		}
	}
	o.Close()
	o.groups, o.bufs, o.has = groups, bufs, has
	return nil
}

func loadSGDGroup(lg *loadedGroup, params []Param) (*SGDGroup, error) {
	var h SGDOptions
	var err error
	get := func(key string, dst *float64) {
		if err == nil {
			*dst, err = lg.float(key, 0)
		}
	}
	get("lr", &h.LR)
	get("momentum", &h.Momentum)
	get("dampening", &h.Dampening)
	get("weight_decay", &h.WeightDecay)
	if err == nil {
		h.Nesterov, err = lg.bool("nesterov", false)
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
	return &SGDGroup{SGDOptions: h, groupBase: b}, nil
}

// Close frees the momentum buffers; closing twice is harmless.
func (o *SGD) Close() {
	for i, b := range o.bufs {
		b.Close()
		o.bufs[i] = nil
	}
}
