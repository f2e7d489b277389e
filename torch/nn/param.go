// Package nn holds named parameters and buffers of models (Store, Path) and
// the layers built on torch's ops (Linear, LayerNorm, Conv2d, BatchNorm2d,
// pooling, Dropout, Embedding, MultiheadAttention, Interpolate). Names are
// PyTorch's dotted state_dict paths, so checkpoints map one to one.
package nn

import "github.com/clipagiqa/clipagiqa/torch"

// NamedParam is a parameter with its PyTorch dotted path, as yielded by
// named_parameters(); optimizers key their state by Name (torch/optim.Param
// is this type).
type NamedParam struct {
	Name string
	T    *torch.Tensor
}

// Tensors returns the tensors of ps in order (for torch.NewSGD).
func Tensors(ps []NamedParam) []*torch.Tensor {
	out := make([]*torch.Tensor, len(ps))
	for i, p := range ps {
		out[i] = p.T
	}
	return out
}
