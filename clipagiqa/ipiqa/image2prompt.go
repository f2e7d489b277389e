package ipiqa

import (
	"fmt"

	"github.com/clipagiqa/clipagiqa/torch"
	"github.com/clipagiqa/clipagiqa/torch/optim"
)

// Image2PromptParams are the CLIP image tower's parameters, named as
// visual.parameters() names them ("conv1.weight", …, "attnpool.c_proj.bias",
// its own 7×7 attnpool included), for the Image2Prompt optimizer. They share
// storage with the IP-IQA tensors (resnet50.*, attnpool projections).
func (m *Model) Image2PromptParams() ([]optim.Param, error) {
	var out []optim.Param
	err := torch.WalkTagged(m.rn, "", func(f torch.TaggedField) error {
		if f.Buffer || *f.Ptr == nil {
			return nil
		}
		if err := (*f.Ptr).SetRequiresGrad(true); err != nil {
			return fmt.Errorf("%s: %w", f.Name, err)
		}
		out = append(out, optim.Param{Name: f.Name, T: *f.Ptr})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("ipiqa: image2prompt parameters: %w", err)
	}
	return out, nil
}

// Image2PromptLoss is the Image2Prompt pre-training loss (the official
// Image2PromptTask's train_fn): CosineEmbeddingLoss(visual(pixels),
// prompt embeddings, 1) = mean(1 − cos), where visual is CLIP's own image
// tower with its attnpool (pixels [B, 3, R, R] at CLIP's resolution R) and
// the prompt embeddings are the frozen CLIP text features of each image's
// own prompt (ids), computed without gradient. train puts BatchNorm in
// training mode. It returns the loss and the visual output [B, E].
func (m *Model) Image2PromptLoss(s *torch.Scope, pixels *torch.Tensor, ids [][]int64, train bool) (loss, output *torch.Tensor) {
	if pixels.Valid() && int64(len(ids)) != pixels.Shape()[0] {
		s.Fail(fmt.Errorf("ipiqa: image2prompt: %d prompts for %d images", len(ids), pixels.Shape()[0]))
		return nil, nil
	}
	ns := s.Sub().WithGrad(torch.NoGrad)
	emb := ns.Keep(m.clip.EncodeText(ns, ids))
	ns.Close()
	if emb == nil {
		return nil, nil
	}
	s.Adopt(emb)
	m.rn.SetTraining(train)
	defer m.rn.SetTraining(false)
	output = m.clip.EncodeImage(s, pixels)
	n := int64(len(ids))
	ones := s.Full(1, torch.Float32, n)
	if ones.Valid() && ones.Device() != m.clip.Device() {
		ones = s.To(ones, torch.Float32, m.clip.Device())
	}
	return s.CosineEmbeddingLoss(output, emb, ones, 0), output
}
