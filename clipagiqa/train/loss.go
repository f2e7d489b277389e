package train

import (
	"fmt"

	"github.com/clipagiqa/clipagiqa/torch"
)

// Loss turns a batch's outputs and targets into a scalar loss (mean over
// the batch, so gradients of equal shards average across ranks).
type Loss func(s *torch.Scope, outputs, targets *torch.Tensor) *torch.Tensor

// MSE is the mean squared error over every element (torch.nn.MSELoss()).
func MSE(s *torch.Scope, outputs, targets *torch.Tensor) *torch.Tensor {
	return s.MSELoss(outputs, targets)
}

// CosineEmbedding is torch.nn.CosineEmbeddingLoss with target +1 for every
// row (pull each output towards its target row): mean(1 − cos).
func CosineEmbedding(s *torch.Scope, outputs, targets *torch.Tensor) *torch.Tensor {
	if !outputs.Valid() {
		s.Fail(fmt.Errorf("cosine embedding loss: no outputs"))
		return nil
	}
	ones := s.Full(1, torch.Float32, outputs.Shape()[0])
	if ones.Valid() && ones.Device() != outputs.Device() {
		ones = s.To(ones, torch.Float32, outputs.Device())
	}
	return s.CosineEmbeddingLoss(outputs, targets, ones, 0)
}

// LossByName returns "mse" or "cosine".
func LossByName(name string) (Loss, error) {
	switch name {
	case "", "mse":
		return MSE, nil
	case "cosine", "cosine-embedding":
		return CosineEmbedding, nil
	}
	return nil, fmt.Errorf("loss %q: want mse or cosine", name)
}
