package agiqa

import (
	"context"
	"fmt"

	"github.com/clipagiqa/clipagiqa/clipagiqa/clip"
	"github.com/clipagiqa/clipagiqa/clipagiqa/method"
	"github.com/clipagiqa/clipagiqa/clipagiqa/metrics"
	"github.com/clipagiqa/clipagiqa/data"
	"github.com/clipagiqa/clipagiqa/torch"
)

// MethodName is CLIP-AGIQA's name in the method registry (--method agiqa).
const MethodName = "agiqa"

func init() {
	err := method.Register(method.Method{
		Name:            MethodName,
		Description:     "CLIP-AGIQA: learned prompts and a regressor (needs a checkpoint)",
		NeedsCheckpoint: true,
		Open:            openAGIQA,
		Export:          Export,
	})
	if err != nil {
		panic(err) // a duplicate built-in name is a programming error
	}
}

// agiqaHead is CLIP-AGIQA's head: text features of the learned prompts, then
// the regressor over the similarity features. owned: Close frees m.
type agiqaHead struct {
	m     *Model
	owned bool
	desc  method.Description
}

func openAGIQA(checkpoint string, epoch int) (method.HeadLoader, error) {
	if checkpoint == "" {
		return nil, fmt.Errorf("method %s needs a checkpoint", MethodName)
	}
	ck, err := ReadCheckpoint(checkpoint, epoch)
	if err != nil {
		return nil, err
	}
	return func(c *clip.Model, tok method.Tokenizer) (method.ScoringHead, error) {
		m, err := FromCheckpoint(c, tok, ck)
		if err != nil {
			return nil, err
		}
		return &agiqaHead{m: m, owned: true, desc: method.Description{Checkpoint: checkpoint, Epoch: ck.Epoch}}, nil
	}, nil
}

func (h *agiqaHead) Prepare(s *torch.Scope) *torch.Tensor { return h.m.TextFeatures(s) }
func (h *agiqaHead) Score(s *torch.Scope, pixels, text *torch.Tensor, _ []string) *torch.Tensor {
	return h.m.Head(s, h.m.ImageFeatures(s, pixels), text, false)
}
func (h *agiqaHead) UsesPrompt() bool { return false }

// Describe names the checkpoint and the epoch it resolved to.
func (h *agiqaHead) Describe() method.Description { return h.desc }
func (h *agiqaHead) Close() {
	if h.owned {
		h.m.Close()
	}
}

// Evaluate scores ds with m (centre transform, batched, inference mode) and
// computes PLCC/SRCC/KRCC/RMSE against the MOS. Unreadable images are
// listed with Err and excluded from the metrics; predictions are in dataset
// order. The report's error (too few readable images, constant scores) is
// returned alongside the predictions.
func Evaluate(ctx context.Context, m *Model, ds *data.Dataset, opts method.EvalOptions) (metrics.Report, []method.Prediction, error) {
	return method.Evaluate(ctx, m.CLIP, &agiqaHead{m: m}, ds, opts)
}

// Predict scores image files with m; a file that cannot be read gets Err
// and does not stop the others. Name is the path as given.
func Predict(ctx context.Context, m *Model, paths []string, opts method.EvalOptions) ([]method.Prediction, error) {
	return method.Predict(ctx, m.CLIP, &agiqaHead{m: m}, paths, opts)
}
