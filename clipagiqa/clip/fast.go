package clip

import (
	"fmt"

	"github.com/clipagiqa/clipagiqa/torch"
)

// FusedEncoder runs a VisionTransformer with its residual blocks on the fused
// native op (torch.FusedBlocks, CPU float32 inference); the patch embedding,
// class token, positions and head are the ViT's own Go code. It computes the
// same features as the plain path to float32 rounding. Inputs it cannot take
// (another device or pixels that need gradients) go through the plain path.
type FusedEncoder struct {
	ViT    *VisionTransformer
	blocks *torch.FusedBlocks
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
	blocks, err := newFusedBlocks(&v.Transformer)
	if err != nil {
		return nil, fmt.Errorf("fused encoder: %w", err)
	}
	return &FusedEncoder{ViT: v, blocks: blocks}, nil
}

// newFusedBlocks hands t's block weights to the fused op by their names in
// the checkpoint (relative to the transformer), as the struct tags say.
func newFusedBlocks(t *Transformer) (*torch.FusedBlocks, error) {
	for i, b := range t.Blocks {
		if b == nil {
			return nil, fmt.Errorf("missing block %d", i)
		}
	}
	weights := map[string]*torch.Tensor{}
	err := torch.WalkTagged(t, "", func(f torch.TaggedField) error {
		w := *f.Ptr
		if !w.Valid() {
			return fmt.Errorf("weight %s is nil or closed", f.Name)
		}
		if w.Device().Type != torch.CPUDevice {
			return fmt.Errorf("weight %s is on %v; the fused blocks are CPU-only", f.Name, w.Device())
		}
		weights[f.Name] = w
		return nil
	})
	if err != nil {
		return nil, err
	}
	blocks, err := torch.NewFusedBlocks(weights, t.Heads)
	if err != nil {
		return nil, err
	}
	if blocks.Layers() != len(t.Blocks) {
		n := blocks.Layers()
		blocks.Close()
		return nil, fmt.Errorf("fused blocks took %d of %d blocks", n, len(t.Blocks))
	}
	return blocks, nil
}

// Encode maps pixels [N, 3, R, R] to raw features [N, E].
func (e *FusedEncoder) Encode(s *torch.Scope, pixels *torch.Tensor) *torch.Tensor {
	if !pixels.Valid() || pixels.Device().Type != torch.CPUDevice || pixels.RequiresGrad() {
		return e.ViT.Encode(s, pixels)
	}
	return e.ViT.encode(s, pixels, e.blocks)
}

// Resolution is the input side length.
func (e *FusedEncoder) Resolution() int { return e.ViT.Resolution() }

// BufferBytes is the memory the fused forward keeps for activations.
func (e *FusedEncoder) BufferBytes() int64 { return e.blocks.BufferBytes() }

// Trim frees the kept activation buffers.
func (e *FusedEncoder) Trim() { e.blocks.Trim() }

// Close frees the fused handle and the weights.
func (e *FusedEncoder) Close() {
	e.blocks.Close()
	e.ViT.Close()
}

// EnableFused switches EncodeImage's residual blocks to the fused native op
// and EncodeTextSharedPrefix's to the fused shared-prefix op (forward and a
// hand-written backward, torch.FusedBlocks.ForwardSharedPrefix), when the
// model is a ViT computing in float32 on the CPU, and reports whether it did.
// Stems and heads stay the Go model's own. Both give the plain paths'
// numbers to float32 rounding. It is opt-in because the image forward is
// inference-only (pixels that need gradients still take the plain path), it
// keeps activation buffers between calls (about 120 MB at batch 32 for
// ViT-B/16; see FusedEncoder.Trim), and the first differentiable text call
// makes transposed copies of the text blocks' weights (about 150 MB for
// ViT-B/16) when libtorch's oneDNN is reachable, for its faster few-row
// products.
//
// It also shrinks an OpenBLAS thread pool, if the process has one, to one
// thread (torch.SetBLASThreads): the fused forward parallelises its products
// on libtorch's threads, and with a second pool on the same cores the small
// ops of the text path and the regressor run several times slower (both
// pools' idle threads spin).
//
// On a ResNet CLIP in float32 on the CPU it switches the encoder's fused
// eval trunk on (ModifiedResNet.SetFusedEval, BatchNorm folded into the
// convolutions; the ResNet's own default) and reports true; the text tower
// stays op by op there.
func (m *Model) EnableFused() (bool, error) {
	if _, ok := m.Visual.(*FusedEncoder); ok {
		return true, nil
	}
	if rn, ok := m.Visual.(*ModifiedResNet); ok {
		if m.device.Type != torch.CPUDevice || m.dtype != torch.Float32 {
			return false, nil
		}
		rn.SetFusedEval(true)
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
	text, err := newFusedBlocks(&m.Transformer)
	if err != nil {
		f.blocks.Close()
		return false, fmt.Errorf("fused text blocks: %w", err)
	}
	m.Visual, m.text = f, text
	torch.SetBLASThreads(1)
	return true, nil
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
// op-by-op paths (for a ResNet, also its eval trunk).
func (m *Model) DisableFused() {
	if f, ok := m.Visual.(*FusedEncoder); ok {
		f.blocks.Close()
		m.Visual = f.ViT
	}
	if rn, ok := m.Visual.(*ModifiedResNet); ok {
		rn.SetFusedEval(false)
	}
	m.text.Close()
	m.text = nil
}

// Fused reports whether EncodeImage uses a fused forward (for a ResNet: its
// fused eval trunk, on for a float32 CPU model unless DisableFused).
func (m *Model) Fused() bool {
	if rn, ok := m.Visual.(*ModifiedResNet); ok {
		return rn.FusedEval() && m.device.Type == torch.CPUDevice && m.dtype == torch.Float32
	}
	_, ok := m.Visual.(*FusedEncoder)
	return ok
}
