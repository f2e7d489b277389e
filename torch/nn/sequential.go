package nn

import "github.com/clipagiqa/clipagiqa/torch"

// Module is a layer with one input and one output.
type Module interface {
	Forward(s *torch.Scope, x *torch.Tensor) *torch.Tensor
}

// Sequential is torch.nn.Sequential: each module's output feeds the next.
// Its children register under their index (Path.Subf("%d", i)) or, as in
// CLIP's OrderedDict downsample, under any names they choose.
type Sequential []Module

// Forward runs the modules in order.
func (q Sequential) Forward(s *torch.Scope, x *torch.Tensor) *torch.Tensor {
	for _, m := range q {
		x = m.Forward(s, x)
	}
	return x
}

// Func adapts a function to Module (torch.nn.functional calls in a Sequential).
type Func func(s *torch.Scope, x *torch.Tensor) *torch.Tensor

// Forward calls f.
func (f Func) Forward(s *torch.Scope, x *torch.Tensor) *torch.Tensor { return f(s, x) }
