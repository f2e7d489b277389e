package clip

import (
	"fmt"
	"math"

	"github.com/clipagiqa/clipagiqa/torch"
)

// ClassAttention runs the ViT op by op on pixels [N, 3, R, R] and returns
// the image features [N, E] (as Encode) together with the last block's
// attention weights of the class-token query over all G²+1 tokens (the
// class token first, then the patch grid row-major), per head: [N, H, G²+1]
// float32. Heads are the attention's; the scores are q·kᵀ with q scaled by
// 1/sqrt(head dim) first, as nn.MultiheadAttention computes them.
func (v *VisionTransformer) ClassAttention(s *torch.Scope, pixels *torch.Tensor) (features, weights *torch.Tensor) {
	shape := pixels.Shape()
	r := int64(v.cfg.ImageResolution)
	if len(shape) != 4 || shape[1] != 3 || shape[2] != r || shape[3] != r {
		s.Fail(fmt.Errorf("class attention: pixels have shape %v, want [N 3 %d %d]", shape, r, r))
		return nil, nil
	}
	blocks := v.Transformer.Blocks
	if len(blocks) == 0 {
		s.Fail(fmt.Errorf("class attention: the vision transformer has no blocks"))
		return nil, nil
	}
	// The stem and head mirror Encode (a test holds the features equal).
	n, w := shape[0], int64(v.cfg.VisionWidth)
	x := s.Cast(pixels, v.dtype)
	x = s.Conv2D(x, v.Conv1, nil, int64(v.cfg.VisionPatchSize), 0)
	x = s.Permute(s.Reshape(x, n, w, -1), 0, 2, 1)
	cls := s.Expand(s.Reshape(v.ClassEmbedding, 1, 1, w), n, 1, w)
	x = s.Add(s.Cat(1, cls, x), v.PositionalEmbedding)
	x = layerNorm(s, x, v.LNPre, v.dtype)
	heads := v.Transformer.Heads
	front := Transformer{Blocks: blocks[:len(blocks)-1], Heads: heads} // frees each block's intermediates
	x = front.forward(s, x, nil, v.dtype)
	last := blocks[len(blocks)-1]
	weights = classTokenWeights(s, &last.Attn, layerNorm(s, x, last.LN1, v.dtype), int64(heads))
	x = last.forward(s, x, heads, nil, v.dtype)
	x = layerNorm(s, s.Select(x, 1, 0), v.LNPost, v.dtype)
	return s.MatMul(x, v.Proj), weights
}

// classTokenWeights is softmax(q₀·kᵀ) per head for the packed attention a
// on its (normalised) input h [N, L, W]: [N, H, L] float32.
func classTokenWeights(s *torch.Scope, a *Attention, h *torch.Tensor, heads int64) *torch.Tensor {
	shape := h.Shape()
	if len(shape) != 3 {
		s.Fail(errClosedInput)
		return nil
	}
	n, l, w := shape[0], shape[1], shape[2]
	hd := w / heads
	qkv := s.Linear(h, a.InProjWeight, a.InProjBias) // [N, L, 3W]
	q := s.Narrow(s.Narrow(qkv, 1, 0, 1), 2, 0, w)   // [N, 1, W] class-token query
	k := s.Narrow(qkv, 2, w, w)                      // [N, L, W]
	q = s.DivScalar(s.Cast(q, torch.Float32), math.Sqrt(float64(hd)))
	k = s.Cast(k, torch.Float32)
	qh := s.Permute(s.Reshape(q, n, 1, heads, hd), 0, 2, 1, 3) // [N, H, 1, hd]
	kh := s.Permute(s.Reshape(k, n, l, heads, hd), 0, 2, 3, 1) // [N, H, hd, L]
	return s.Reshape(s.Softmax(s.MatMul(qh, kh), -1), n, heads, l)
}

// ClassAttention is VisionTransformer.ClassAttention on the model's image
// tower (the op-by-op path also under EnableFused); pixels may sit on any
// device. A ResNet tower has no class token: that is an error.
func (m *Model) ClassAttention(s *torch.Scope, pixels *torch.Tensor) (features, weights *torch.Tensor) {
	var vit *VisionTransformer
	switch v := m.Visual.(type) {
	case *VisionTransformer:
		vit = v
	case *FusedEncoder:
		vit = v.ViT
	default:
		s.Fail(fmt.Errorf("class attention: CLIP %s has a %T image tower; class-token attention needs a ViT", m.path, m.Visual))
		return nil, nil
	}
	if pixels.Valid() && pixels.Device() != m.device {
		pixels = s.To(pixels, torch.Float32, m.device)
	}
	return vit.ClassAttention(s, pixels)
}
