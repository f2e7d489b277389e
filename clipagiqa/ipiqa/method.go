package ipiqa

import (
	"fmt"

	"github.com/clipagiqa/clipagiqa/clipagiqa/clip"
	"github.com/clipagiqa/clipagiqa/clipagiqa/imageprep"
	"github.com/clipagiqa/clipagiqa/clipagiqa/method"
	"github.com/clipagiqa/clipagiqa/internal/regularfile"
	"github.com/clipagiqa/clipagiqa/torch"
)

// MethodName is IP-IQA's name in the method registry (--method ipiqa).
const MethodName = "ipiqa"

func init() {
	err := method.Register(method.Method{
		Name:            MethodName,
		Description:     "IP-IQA: a ResNet CLIP fine-tuned with the image's prompt (official checkpoint_best.pth; quality and alignment)",
		UsesPrompt:      true,
		NeedsCheckpoint: true,
		Open:            openIPIQA,
	})
	if err != nil {
		panic(err) // a duplicate built-in name is a programming error
	}
}

// ipiqaHead is IP-IQA as a method.ScoringHead: the model's own preprocessing
// (squash to its input resolution), one prompt per image, and its outputs
// (quality[, alignment]). The CLIP stays the Scorer's.
type ipiqaHead struct {
	m          *Model
	checkpoint string
}

// openIPIQA reads the settings of an official IP-IQA checkpoint (input
// resolution and outputs from its shapes); the weights load onto the CLIP.
func openIPIQA(checkpoint string, _ int) (method.HeadLoader, error) {
	if checkpoint == "" {
		return nil, fmt.Errorf("method %s needs a checkpoint (the official checkpoint_best.pth or an exported one)", MethodName)
	}
	if err := regularfile.Check(checkpoint); err != nil {
		return nil, fmt.Errorf("method %s: checkpoint: %w (want the checkpoint file, e.g. checkpoint_best.pth)", MethodName, err)
	}
	opts, err := OptionsFromOfficial(checkpoint)
	if err != nil {
		return nil, err
	}
	return func(c *clip.Model, _ method.Tokenizer) (method.ScoringHead, error) {
		m, err := New(c, opts)
		if err != nil {
			return nil, err
		}
		if _, err := m.LoadOfficial(checkpoint, nil); err != nil {
			m.Store().Close() // the CLIP stays the caller's
			return nil, fmt.Errorf("IP-IQA checkpoint does not fit CLIP %s (trained on another CLIP?): %w", c.Path(), err)
		}
		return &ipiqaHead{m: m, checkpoint: checkpoint}, nil
	}, nil
}

func (h *ipiqaHead) Prepare(*torch.Scope) *torch.Tensor { return nil }

// Score runs the model in eval mode; repeated prompts in the batch are
// encoded once (Model.ForwardIDs).
func (h *ipiqaHead) Score(s *torch.Scope, pixels, _ *torch.Tensor, prompts []string) *torch.Tensor {
	if len(prompts) != int(pixels.Shape()[0]) {
		s.Fail(fmt.Errorf("method %s: %d prompts for %d images (every image needs its prompt)", MethodName, len(prompts), pixels.Shape()[0]))
		return nil
	}
	out := h.m.Forward(s, pixels, prompts, false)
	if h.m.Options().Outputs == 1 {
		return s.Reshape(out, -1)
	}
	return out
}

func (h *ipiqaHead) UsesPrompt() bool { return true }

// Describe names the checkpoint file (IP-IQA's has no epoch).
func (h *ipiqaHead) Describe() method.Description {
	return method.Description{Checkpoint: h.checkpoint}
}

// Close frees the IP-IQA tensors; the CLIP is closed by the Scorer.
func (h *ipiqaHead) Close() { h.m.Store().Close() }

// ImageInput is the official eval transform: convert("RGB"), Resize((S,S)).
func (h *ipiqaHead) ImageInput() (imageprep.Options, bool) {
	return PreprocessOptions(h.m.Options().InputResolution), true
}

// Outputs names the checkpoint's output columns.
func (h *ipiqaHead) Outputs() []string {
	if h.m.Options().Outputs == 1 {
		return []string{"quality"}
	}
	return []string{"quality", "alignment"}
}
