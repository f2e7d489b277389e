package clip

import (
	"errors"
	"fmt"

	"github.com/clipagiqa/clipagiqa/torch"
)

var errClosedInput = errors.New("input tensor is nil or closed")

// ImageEncoder is a CLIP image backbone: *VisionTransformer, *FusedEncoder
// (the ViT with its blocks on the fused CPU op) or *ModifiedResNet.
type ImageEncoder interface {
	// Encode maps pixels [N, 3, R, R] to raw image features [N, E].
	Encode(s *torch.Scope, pixels *torch.Tensor) *torch.Tensor
	// Resolution is the input side length R.
	Resolution() int
	// Close frees the weights.
	Close()
}

// VisionTransformer is CLIP's ViT image encoder.
type VisionTransformer struct {
	Conv1               *torch.Tensor `torch:"conv1.weight"`         // [W, 3, P, P], no bias
	ClassEmbedding      *torch.Tensor `torch:"class_embedding"`      // [W]
	PositionalEmbedding *torch.Tensor `torch:"positional_embedding"` // [G²+1, W]
	LNPre               LayerNorm     `torch:"ln_pre"`
	Transformer         Transformer   `torch:"transformer"`
	LNPost              LayerNorm     `torch:"ln_post"`
	Proj                *torch.Tensor `torch:"proj"` // [W, E]

	cfg   Config
	dtype torch.DType
}

// Resolution is the input side length.
func (v *VisionTransformer) Resolution() int { return v.cfg.ImageResolution }

// Close frees the weights.
func (v *VisionTransformer) Close() { torch.CloseAll(v) }

// transformerBlocks is nil for a nil encoder (a ResNet model has no ViT).
func (v *VisionTransformer) transformerBlocks() []*ResidualBlock {
	if v == nil {
		return nil
	}
	return v.Transformer.Blocks
}

// Encode maps pixels [N, 3, R, R] to raw (un-normalised) features [N, E].
func (v *VisionTransformer) Encode(s *torch.Scope, pixels *torch.Tensor) *torch.Tensor {
	return v.encode(s, pixels, nil)
}

// encode is the ViT forward; with blocks (the fused op over v's own
// transformer) the residual blocks run natively, stem and head stay here.
func (v *VisionTransformer) encode(s *torch.Scope, pixels *torch.Tensor, blocks *torch.FusedBlocks) *torch.Tensor {
	shape := pixels.Shape()
	r := int64(v.cfg.ImageResolution)
	if len(shape) != 4 || shape[1] != 3 || shape[2] != r || shape[3] != r {
		s.Fail(fmt.Errorf("encode image: pixels have shape %v, want [N 3 %d %d]", shape, r, r))
		return nil
	}
	n, w := shape[0], int64(v.cfg.VisionWidth)
	x := v.patchEmbed(s, s.Cast(pixels, v.dtype), n, blocks != nil) // [N, G², W]
	cls := s.Expand(s.Reshape(v.ClassEmbedding, 1, 1, w), n, 1, w)  // [N, 1, W]
	x = s.Add(s.Cat(1, cls, x), v.PositionalEmbedding)              // [N, G²+1, W]
	if blocks != nil {
		// The blocks' own row kernel: at batch 1 libtorch's layer norm would
		// wake the thread pool once more for a few rows.
		x = blocks.Forward(s, s.FusedLayerNorm(x, v.LNPre.Weight, v.LNPre.Bias, 1e-5))
	} else {
		x = v.Transformer.forward(s, layerNorm(s, x, v.LNPre, v.dtype), nil, v.dtype)
	}
	x = layerNorm(s, s.Select(x, 1, 0), v.LNPost, v.dtype) // class token [N, W]
	return s.MatMul(x, v.Proj)                             // [N, E]
}

// patchEmbed is conv1 (kernel = stride = P, no bias) on x [N, 3, R, R] as
// tokens [N, G², W]; fused, the same product on the fused op (libtorch's CPU
// conv2d is several times slower at this shape).
func (v *VisionTransformer) patchEmbed(s *torch.Scope, x *torch.Tensor, n int64, fused bool) *torch.Tensor {
	if fused {
		return s.FusedPatchEmbed(x, v.Conv1)
	}
	w := int64(v.cfg.VisionWidth)
	x = s.Conv2D(x, v.Conv1, nil, int64(v.cfg.VisionPatchSize), 0) // [N, W, G, G]
	return s.Permute(s.Reshape(x, n, w, -1), 0, 2, 1)              // [N, G², W]
}
