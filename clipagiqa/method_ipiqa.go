package clipagiqa

import (
	"fmt"

	"github.com/clipagiqa/clipagiqa/clipagiqa/clip"
	"github.com/clipagiqa/clipagiqa/clipagiqa/imageprep"
	"github.com/clipagiqa/clipagiqa/clipagiqa/ipiqa"
	"github.com/clipagiqa/clipagiqa/internal/regularfile"
	"github.com/clipagiqa/clipagiqa/torch"
)

// ipiqaHead is IP-IQA as a ScoringHead: the model's own preprocessing
// (squash to its input resolution), one prompt per image, and its outputs
// (quality[, alignment]). The CLIP stays the Scorer's.
type ipiqaHead struct {
	m *ipiqa.Model
}

// openIPIQA reads the settings of an official IP-IQA checkpoint (input
// resolution and outputs from its shapes); the weights load onto the CLIP.
func openIPIQA(checkpoint string, _ int) (HeadLoader, error) {
	if checkpoint == "" {
		return nil, fmt.Errorf("method %s needs a checkpoint (the official checkpoint_best.pth or an exported one)", MethodIPIQA)
	}
	if err := regularfile.Check(checkpoint); err != nil {
		return nil, fmt.Errorf("method %s: checkpoint: %w (want the checkpoint file, e.g. checkpoint_best.pth)", MethodIPIQA, err)
	}
	opts, err := ipiqa.OptionsFromOfficial(checkpoint)
	if err != nil {
		return nil, err
	}
	return func(c *clip.Model, _ Tokenizer) (ScoringHead, error) {
		m, err := ipiqa.New(c, opts)
		if err != nil {
			return nil, err
		}
		if _, err := m.LoadOfficial(checkpoint, nil); err != nil {
			m.Store().Close() // the CLIP stays the caller's
			return nil, fmt.Errorf("IP-IQA checkpoint does not fit CLIP %s (trained on another CLIP?): %w", c.Path(), err)
		}
		return &ipiqaHead{m: m}, nil
	}, nil
}

func (h *ipiqaHead) Prepare(*torch.Scope) *torch.Tensor { return nil }

// Score runs the model in eval mode; repeated prompts in the batch are
// encoded once (ipiqa.Model.ForwardIDs).
func (h *ipiqaHead) Score(s *torch.Scope, pixels, _ *torch.Tensor, prompts []string) *torch.Tensor {
	if len(prompts) != int(pixels.Shape()[0]) {
		s.Fail(fmt.Errorf("method %s: %d prompts for %d images (every image needs its prompt)", MethodIPIQA, len(prompts), pixels.Shape()[0]))
		return nil
	}
	out := h.m.Forward(s, pixels, prompts, false)
	if h.m.Options().Outputs == 1 {
		return s.Reshape(out, -1)
	}
	return out
}

func (h *ipiqaHead) UsesPrompt() bool { return true }

// Close frees the IP-IQA tensors; the CLIP is closed by the Scorer.
func (h *ipiqaHead) Close() { h.m.Store().Close() }

// ImageInput is the official eval transform: convert("RGB"), Resize((S,S)).
func (h *ipiqaHead) ImageInput() (imageprep.Options, bool) {
	return ipiqa.PreprocessOptions(h.m.Options().InputResolution), true
}

// Outputs names the checkpoint's output columns.
func (h *ipiqaHead) Outputs() []string {
	if h.m.Options().Outputs == 1 {
		return []string{"quality"}
	}
	return []string{"quality", "alignment"}
}
