package clip

import (
	"fmt"

	"github.com/clipagiqa/clipagiqa/torch"
)

// FusedEncoder runs a VisionTransformer through torch.FusedViT: the whole
// encoder in one native call (CPU float32 inference). It computes the same
// features as the plain path to float32 rounding. Inputs it cannot take
// (another device or pixels that need gradients) go through the plain path.
type FusedEncoder struct {
	ViT   *VisionTransformer
	fused *torch.FusedViT
}

// NewFusedEncoder builds the fused forward over v's weights (shared, not
// copied). v must be on the CPU in float32.
func NewFusedEncoder(v *VisionTransformer) (*FusedEncoder, error) {
	if v == nil {
		return nil, fmt.Errorf("fused encoder: nil vision transformer")
	}
	if v.dtype != torch.Float32 && v.dtype != 0 {
		return nil, fmt.Errorf("fused encoder: needs float32 weights, model computes in %v", v.dtype)
	}
	ws := []*torch.Tensor{v.Conv1, v.ClassEmbedding, v.PositionalEmbedding, v.LNPre.Weight, v.LNPre.Bias,
		v.LNPost.Weight, v.LNPost.Bias, v.Proj}
	for _, b := range v.Transformer.Blocks {
		if b == nil {
			return nil, fmt.Errorf("fused encoder: missing block")
		}
		ws = append(ws, b.Attn.InProjWeight, b.Attn.InProjBias, b.Attn.OutProj.Weight, b.Attn.OutProj.Bias,
			b.LN1.Weight, b.LN1.Bias, b.MLP.FC.Weight, b.MLP.FC.Bias, b.MLP.Proj.Weight, b.MLP.Proj.Bias,
			b.LN2.Weight, b.LN2.Bias)
	}
	for i, w := range ws {
		if !w.Valid() {
			return nil, fmt.Errorf("fused encoder: weight %d is nil or closed", i)
		}
		if w.Device().Type != torch.CPUDevice {
			return nil, fmt.Errorf("fused encoder: weights are on %v; the fused forward is CPU-only", w.Device())
		}
	}
	f, err := torch.NewFusedViT(ws, len(v.Transformer.Blocks), v.Transformer.Heads)
	if err != nil {
		return nil, fmt.Errorf("fused encoder: %w", err)
	}
	return &FusedEncoder{ViT: v, fused: f}, nil
}

// Encode maps pixels [N, 3, R, R] to raw features [N, E].
func (e *FusedEncoder) Encode(s *torch.Scope, pixels *torch.Tensor) *torch.Tensor {
	if !pixels.Valid() || pixels.Device().Type != torch.CPUDevice || pixels.RequiresGrad() {
		return e.ViT.Encode(s, pixels)
	}
	shape := pixels.Shape()
	r := int64(e.ViT.cfg.ImageResolution)
	if len(shape) != 4 || shape[1] != 3 || shape[2] != r || shape[3] != r {
		s.Fail(fmt.Errorf("encode image: pixels have shape %v, want [N 3 %d %d]", shape, r, r))
		return nil
	}
	return e.fused.Forward(s, s.Cast(pixels, torch.Float32))
}

// Resolution is the input side length.
func (e *FusedEncoder) Resolution() int { return e.ViT.Resolution() }

// BufferBytes is the memory the fused forward keeps for activations.
func (e *FusedEncoder) BufferBytes() int64 { return e.fused.BufferBytes() }

// Trim frees the kept activation buffers.
func (e *FusedEncoder) Trim() { e.fused.Trim() }

// Close frees the fused handle and the weights.
func (e *FusedEncoder) Close() {
	e.fused.Close()
	e.ViT.Close()
}

// EnableFused switches EncodeImage to the fused native forward, and
// EncodeTextSharedPrefix to the fused text path (forward and a hand-written
// backward, torch.FusedText), when the model is a ViT computing in float32 on
// the CPU, and reports whether it did. Both give the plain paths' numbers to
// float32 rounding. It is opt-in because the image forward is inference-only
// (pixels that need gradients still take the plain path), it keeps activation
// buffers between calls (about 140 MB at batch 32 for ViT-B/16; see
// FusedEncoder.Trim), and the first differentiable text call makes transposed
// copies of the text blocks' weights (about 150 MB for ViT-B/16) when
// libtorch's oneDNN is reachable, for its faster few-row products.
//
// It also shrinks an OpenBLAS thread pool, if the process has one, to one
// thread (torch.SetBLASThreads): the fused forward parallelises its products
// on libtorch's threads, and with a second pool on the same cores the small
// ops of the text path and the regressor run several times slower (both
// pools' idle threads spin).
func (m *Model) EnableFused() (bool, error) {
	if _, ok := m.Visual.(*FusedEncoder); ok {
		return true, nil
	}
	v, ok := m.Visual.(*VisionTransformer)
	if !ok || m.device.Type != torch.CPUDevice || m.dtype != torch.Float32 {
		return false, nil
	}
	f, err := NewFusedEncoder(v)
	if err != nil {
		return false, err
	}
	text, err := m.newFusedText()
	if err != nil {
		f.fused.Close()
		return false, err
	}
	m.Visual, m.text = f, text
	torch.SetBLASThreads(1)
	return true, nil
}

func (m *Model) newFusedText() (*torch.FusedText, error) {
	ws := []*torch.Tensor{m.PositionalEmbedding, m.LNFinal.Weight, m.LNFinal.Bias, m.TextProjection}
	for _, b := range m.Transformer.Blocks {
		if b == nil {
			return nil, fmt.Errorf("fused text: missing block")
		}
		ws = append(ws, b.Attn.InProjWeight, b.Attn.InProjBias, b.Attn.OutProj.Weight, b.Attn.OutProj.Bias,
			b.LN1.Weight, b.LN1.Bias, b.MLP.FC.Weight, b.MLP.FC.Bias, b.MLP.Proj.Weight, b.MLP.Proj.Bias,
			b.LN2.Weight, b.LN2.Bias)
	}
	t, err := torch.NewFusedText(ws, len(m.Transformer.Blocks), m.Transformer.Heads)
	if err != nil {
		return nil, fmt.Errorf("fused text: %w", err)
	}
	return t, nil
}

// fusedTextInputs reports whether the fused text path takes these inputs.
func fusedTextInputs(prefix, suffix *torch.Tensor) bool {
	for _, t := range []*torch.Tensor{prefix, suffix} {
		if !t.Valid() || t.Device().Type != torch.CPUDevice || t.DType() != torch.Float32 {
			return false
		}
	}
	return true
}

// DisableFused returns EncodeImage and EncodeTextSharedPrefix to the plain
// op-by-op paths.
func (m *Model) DisableFused() {
	if f, ok := m.Visual.(*FusedEncoder); ok {
		f.fused.Close()
		m.Visual = f.ViT
	}
	m.text.Close()
	m.text = nil
}

// Fused reports whether EncodeImage uses the fused forward.
func (m *Model) Fused() bool {
	_, ok := m.Visual.(*FusedEncoder)
	return ok
}
