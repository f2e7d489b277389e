// Package clipiqa is zero-shot CLIP-IQA (Wang et al., AAAI 2023) on any
// CLIP: the score is the probability of "Good photo." against "Bad photo."
// under softmax(100·cos). It needs no checkpoint and trains nothing.
package clipiqa

import (
	"context"
	"fmt"
	"strings"

	"github.com/clipagiqa/clipagiqa/clipagiqa/clip"
	"github.com/clipagiqa/clipagiqa/clipagiqa/method"
	"github.com/clipagiqa/clipagiqa/clipagiqa/metrics"
	"github.com/clipagiqa/clipagiqa/data"
	"github.com/clipagiqa/clipagiqa/torch"
)

// MethodName is CLIP-IQA's name in the method registry (--method clipiqa).
const MethodName = "clipiqa"

// DefaultPairs is CLIP-IQA's antonym pair.
var DefaultPairs = [][2]string{{"Good photo.", "Bad photo."}}

// LogitScale is CLIP-IQA's fixed softmax temperature (not the model's
// own logit_scale).
const LogitScale = 100

func init() {
	err := method.Register(method.Method{
		Name:        MethodName,
		Description: "zero-shot CLIP-IQA: softmax(100·cos) against good/bad photo prompts (no checkpoint)",
		Open:        openCLIPIQA,
	})
	if err != nil {
		panic(err) // a duplicate built-in name is a programming error
	}
}

// head is zero-shot CLIP-IQA with its prompt pairs (nil: DefaultPairs).
type head struct {
	c     *clip.Model
	tok   method.Tokenizer
	pairs [][2]string
}

func openCLIPIQA(string, int) (method.HeadLoader, error) {
	return func(c *clip.Model, tok method.Tokenizer) (method.ScoringHead, error) {
		return &head{c: c, tok: tok}, nil
	}, nil
}

func (h *head) Prepare(s *torch.Scope) *torch.Tensor {
	return textFeatures(s, h.c, h.tok, h.pairs)
}
func (h *head) Score(s *torch.Scope, pixels, text *torch.Tensor, _ []string) *torch.Tensor {
	return fromText(s, h.c, pixels, text)
}
func (h *head) UsesPrompt() bool { return false }

// SetPromptPairs replaces the antonym pairs (nil: DefaultPairs); call it
// before the head's Prepare.
func (h *head) SetPromptPairs(pairs [][2]string) error {
	for i, p := range pairs {
		if strings.TrimSpace(p[0]) == "" || strings.TrimSpace(p[1]) == "" {
			return fmt.Errorf("clip-iqa: pair %d has an empty prompt", i)
		}
	}
	h.pairs = pairs
	return nil
}
func (h *head) Close() {}

// Evaluate is agiqa.Evaluate with zero-shot CLIP-IQA scores (pairs nil:
// DefaultPairs): PLCC/SRCC/KRCC/RMSE of ds against its MOS, predictions in
// dataset order, unreadable images listed with Err.
func Evaluate(ctx context.Context, c *clip.Model, tok method.Tokenizer, pairs [][2]string, ds *data.Dataset, opts method.EvalOptions) (metrics.Report, []method.Prediction, error) {
	return method.Evaluate(ctx, c, &head{c: c, tok: tok, pairs: pairs}, ds, opts)
}

// Predict scores image files with zero-shot CLIP-IQA.
func Predict(ctx context.Context, c *clip.Model, tok method.Tokenizer, pairs [][2]string, paths []string, opts method.EvalOptions) ([]method.Prediction, error) {
	return method.Predict(ctx, c, &head{c: c, tok: tok, pairs: pairs}, paths, opts)
}

// Scores is zero-shot CLIP-IQA on preprocessed pixels [N, 3, R, R]:
// for each antonym pair (positive, negative), softmax(100·cos(image,
// prompt)) over the two prompts; the score is the positive's probability,
// averaged over the pairs (nil: DefaultPairs). Returns [N] float32;
// errors are in s.Err().
func Scores(s *torch.Scope, c *clip.Model, tok method.Tokenizer, pixels *torch.Tensor, pairs [][2]string) *torch.Tensor {
	return fromText(s, c, pixels, textFeatures(s, c, tok, pairs))
}

// textFeatures returns the normalised text features [P, 2, E] of the pairs.
func textFeatures(s *torch.Scope, c *clip.Model, tok method.Tokenizer, pairs [][2]string) *torch.Tensor {
	if len(pairs) == 0 {
		pairs = DefaultPairs
	}
	ids := make([][]int64, 0, 2*len(pairs))
	for _, p := range pairs {
		for _, t := range p {
			row, err := method.TokenizeRow(tok, t, c.Config.ContextLength)
			if err != nil {
				s.Fail(fmt.Errorf("clip-iqa: %w", err))
				return nil
			}
			ids = append(ids, row)
		}
	}
	txt := s.Normalize(s.Cast(c.EncodeText(s, ids), torch.Float32), -1)
	return s.Reshape(txt, int64(len(pairs)), 2, -1)
}

// fromText scores pixels against text features [P, 2, E].
func fromText(s *torch.Scope, c *clip.Model, pixels, text *torch.Tensor) *torch.Tensor {
	if s.Err() != nil {
		return nil
	}
	shape := text.Shape()
	p := shape[0]
	img := s.Normalize(s.Cast(c.EncodeImage(s, pixels), torch.Float32), -1) // [N, E]
	txt := s.Transpose(s.Reshape(text, 2*p, shape[2]), 0, 1)
	cos := method.ByRow(s, img, func(row *torch.Tensor) *torch.Tensor { return s.MatMul(row, txt) }) // [N, 2P]
	n := s.ErrSafeDim(cos, 0)
	prob := s.Softmax(s.Reshape(s.MulScalar(cos, LogitScale), n, p, 2), -1)
	return s.Mean(s.Select(prob, 2, 0), false, 1) // [N]
}
