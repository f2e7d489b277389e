package scorer

import (
	"context"
	"errors"
	"fmt"

	"github.com/clipagiqa/clipagiqa/clipagiqa/method"
	"github.com/clipagiqa/clipagiqa/clipagiqa/metrics"
	"github.com/clipagiqa/clipagiqa/data"
	"github.com/clipagiqa/clipagiqa/internal/regularfile"
)

// EvaluateScorer scores ds with a loaded Scorer, any method: the method's
// own preprocessing and batching, each image with its prompt (opts.Prompt,
// else Sample.Prompt) when the method reads prompts (an image without one gets Err, as an unreadable
// image does, and is left out of the metrics). It returns one report per
// output: a one-output method against MOS; a multi-output one (IP-IQA on
// AGIQA-3K: quality and alignment) output by output against the sample's
// Ratings of that name, the first falling back to MOS. An output the
// dataset does not rate (e.g. alignment on AGIQA-1K) has no report.
// Predictions are in dataset order; the error of a report that cannot be
// computed is returned alongside them. Of opts only Prompt is read: batch
// size, pixel limit and decoding workers are the Scorer's.
func EvaluateScorer(ctx context.Context, sc *Scorer, ds *data.Dataset, opts method.EvalOptions) ([]method.OutputReport, []method.Prediction, error) {
	outs := sc.Outputs()
	preds := make([]method.Prediction, len(ds.Samples))
	for i, s := range ds.Samples {
		preds[i] = method.Prediction{Name: s.Name, Path: s.Path, MOS: s.MOS}
		if len(outs) > 1 {
			preds[i].Ratings = map[string]float64{}
			for j, o := range outs {
				if v, ok := s.Ratings[o]; ok {
					preds[i].Ratings[o] = v
				} else if j == 0 {
					preds[i].Ratings[o] = s.MOS
				}
			}
		}
	}
	chunk := 4 * sc.MaxBatch() // a few device batches in flight, bounded memory
	for lo := 0; lo < len(ds.Samples); lo += chunk {
		if err := ctx.Err(); err != nil {
			return nil, preds, fmt.Errorf("evaluate %s: %w", ds.Name, err)
		}
		part := ds.Samples[lo:min(lo+chunk, len(ds.Samples))]
		imgs := make([][]byte, 0, len(part))
		var idx []int
		var prompts []string
		for k, s := range part {
			i := lo + k
			prompt := s.Prompt
			if sc.UsesPrompt() && opts.Prompt != nil {
				var err error
				if prompt, err = opts.Prompt(s); err != nil {
					preds[i].Err = err.Error()
					continue
				}
			}
			if sc.UsesPrompt() && prompt == "" {
				preds[i].Err = fmt.Sprintf("no prompt for this image in the %s table (method %s scores each image with its prompt)", ds.Name, sc.Method())
				continue
			}
			b, err := readImageFile(s.Path)
			if err != nil {
				preds[i].Err = err.Error()
				continue
			}
			imgs, idx = append(imgs, b), append(idx, i)
			if sc.UsesPrompt() {
				prompts = append(prompts, prompt)
			}
		}
		outputs, errs := sc.ScoreBatchOutputs(ctx, imgs, prompts)
		for k, i := range idx {
			if errs[k] != nil {
				if ctx.Err() != nil {
					return nil, preds, fmt.Errorf("evaluate %s: %w", ds.Name, ctx.Err())
				}
				if !errors.Is(errs[k], ErrInvalidImage) && !errors.Is(errs[k], ErrNoPrompt) {
					return nil, preds, fmt.Errorf("evaluate %s: %s: %w", ds.Name, ds.Samples[i].Name, errs[k])
				}
				preds[i].Err = errs[k].Error()
				continue
			}
			preds[i].Score = outputs[k][0]
			if len(outs) > 1 {
				preds[i].Outputs = make(map[string]float64, len(outs))
				for j, o := range outs {
					preds[i].Outputs[o] = outputs[k][j]
				}
			}
		}
	}
	var reps []method.OutputReport
	for j, o := range outs {
		var p, q []float64
		for _, x := range preds {
			if x.Err != "" {
				continue
			}
			if len(outs) == 1 {
				p, q = append(p, x.Score), append(q, x.MOS)
			} else if r, ok := x.Ratings[o]; ok {
				p, q = append(p, x.Outputs[o]), append(q, r)
			}
		}
		if len(q) == 0 && j > 0 {
			continue // the dataset does not rate this output
		}
		rep, err := metrics.Compute(p, q)
		if err != nil {
			return reps, preds, fmt.Errorf("evaluate %s: %s: %w", ds.Name, o, err)
		}
		reps = append(reps, method.OutputReport{Output: o, Report: rep})
	}
	return reps, preds, nil
}

// readImageFile reads an image file whole (regular files only).
func readImageFile(path string) ([]byte, error) {
	b, err := regularfile.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidImage, err)
	}
	return b, nil
}
