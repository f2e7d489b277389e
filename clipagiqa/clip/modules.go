package clip

import (
	"github.com/clipagiqa/clipagiqa/torch"
)

// LayerNorm holds a LayerNorm's affine parameters (kept in float32).
type LayerNorm struct {
	Weight *torch.Tensor `torch:"weight"`
	Bias   *torch.Tensor `torch:"bias"`
}

// Linear is a dense layer y = x·Wᵀ + b.
type Linear struct {
	Weight *torch.Tensor `torch:"weight"`
	Bias   *torch.Tensor `torch:"bias"`
}

// Attention is multi-head self-attention with a packed q/k/v projection.
type Attention struct {
	InProjWeight *torch.Tensor `torch:"in_proj_weight"` // [3W, W]
	InProjBias   *torch.Tensor `torch:"in_proj_bias"`   // [3W]
	OutProj      Linear        `torch:"out_proj"`
}

// MLP is c_fc → QuickGELU → c_proj.
type MLP struct {
	FC   Linear `torch:"c_fc"`   // W → 4W
	Proj Linear `torch:"c_proj"` // 4W → W
}

// ResidualBlock is x + attn(ln_1(x)), then x + mlp(ln_2(x)).
type ResidualBlock struct {
	Attn Attention `torch:"attn"`
	LN1  LayerNorm `torch:"ln_1"`
	MLP  MLP       `torch:"mlp"`
	LN2  LayerNorm `torch:"ln_2"`
}

// Transformer is a stack of residual blocks.
type Transformer struct {
	Blocks []*ResidualBlock `torch:"resblocks"`
	Heads  int
}

func newTransformer(layers, heads int) Transformer {
	return Transformer{Blocks: make([]*ResidualBlock, layers), Heads: heads}
}

// layerNorm runs in float32 whatever the compute dtype, as CLIP's LayerNorm
// subclass does for fp16 models.
func layerNorm(s *torch.Scope, x *torch.Tensor, ln LayerNorm, dt torch.DType) *torch.Tensor {
	if dt == torch.Float32 {
		return s.LayerNorm(x, ln.Weight, ln.Bias, 1e-5)
	}
	return s.Cast(s.LayerNorm(s.Cast(x, torch.Float32), ln.Weight, ln.Bias, 1e-5), dt)
}

// attention computes self-attention of x [N, L, W] with an optional additive
// mask [L, L].
func (a *Attention) forward(s *torch.Scope, x *torch.Tensor, heads int, mask *torch.Tensor) *torch.Tensor {
	shape := x.Shape()
	if shape == nil {
		s.Fail(errClosedInput)
		return nil
	}
	n, l, w := shape[0], shape[1], shape[2]
	hd := w / int64(heads)
	qkv := s.Linear(x, a.InProjWeight, a.InProjBias)                          // [N, L, 3W]
	qkv = s.Permute(s.Reshape(qkv, n, l, 3, int64(heads), hd), 2, 0, 3, 1, 4) // [3, N, H, L, hd]
	q, k, v := s.Select(qkv, 0, 0), s.Select(qkv, 0, 1), s.Select(qkv, 0, 2)
	o := s.Attention(q, k, v, mask)                      // [N, H, L, hd]
	o = s.Reshape(s.Permute(o, 0, 2, 1, 3), n, l, w)     // [N, L, W]
	return s.Linear(o, a.OutProj.Weight, a.OutProj.Bias) // [N, L, W]
}

func (b *ResidualBlock) forward(s *torch.Scope, x *torch.Tensor, heads int, mask *torch.Tensor, dt torch.DType) *torch.Tensor {
	x = s.Add(x, b.Attn.forward(s, layerNorm(s, x, b.LN1, dt), heads, mask))
	h := s.QuickGelu(s.Linear(layerNorm(s, x, b.LN2, dt), b.MLP.FC.Weight, b.MLP.FC.Bias))
	return s.Add(x, s.Linear(h, b.MLP.Proj.Weight, b.MLP.Proj.Bias))
}

// forward runs every block on x [N, L, W]. Each block's intermediates are
// freed as soon as the block is done.
func (t *Transformer) forward(s *torch.Scope, x *torch.Tensor, mask *torch.Tensor, dt torch.DType) *torch.Tensor {
	for i, b := range t.Blocks {
		sub := s.Sub()
		y := sub.Keep(b.forward(sub, x, t.Heads, mask, dt))
		sub.Close()
		if y == nil {
			return nil
		}
		if i > 0 { // x is the previous block's output, adopted below
			s.Keep(x).Close()
		}
		x = s.Adopt(y)
	}
	return x
}
