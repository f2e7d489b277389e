package method

import (
	"context"
	"fmt"
	"math"

	"github.com/clipagiqa/clipagiqa/clipagiqa/clip"
	"github.com/clipagiqa/clipagiqa/clipagiqa/imageprep"
	"github.com/clipagiqa/clipagiqa/clipagiqa/loader"
	"github.com/clipagiqa/clipagiqa/clipagiqa/metrics"
	"github.com/clipagiqa/clipagiqa/data"
	"github.com/clipagiqa/clipagiqa/torch"
)

// Prediction is the score of one image. Err is set (and Score is 0) when the
// image could not be read.
type Prediction struct {
	Name  string  `json:"name"`
	Path  string  `json:"path"`
	MOS   float64 `json:"mos,omitempty"` // Evaluate only
	Score float64 `json:"score"`
	Err   string  `json:"error,omitempty"`
	// Outputs are all of a multi-output model's scores by output name
	// (IP-IQA: quality, alignment; Score is the first); nil for one output.
	Outputs map[string]float64 `json:"outputs,omitempty"`
	// Ratings are the dataset's scores compared with Outputs, by the same
	// names (EvaluateScorer only; absent names have no rating).
	Ratings map[string]float64 `json:"ratings,omitempty"`
}

// OutputReport is the metrics of one model output against the dataset's
// rating of the same name.
type OutputReport struct {
	// Output names the model output (Scorer.Outputs: "quality",
	// "alignment"; "score" for a one-output method).
	Output string `json:"output"`
	metrics.Report
}

// EvalOptions configure Evaluate and Predict.
type EvalOptions struct {
	BatchSize int   // images per forward pass (0: 32)
	Workers   int   // decoding goroutines (0: runtime.NumCPU())
	MaxPixels int64 // largest image accepted (0: imageprep.DefaultMaxPixels)
	// Prompt gives EvaluateScorer each sample's prompt, or why it has none
	// (that image then gets Err); nil: Sample.Prompt.
	Prompt func(s data.Sample) (string, error)
}

// Evaluate scores ds with h on c (CLIP's centre transform, batched,
// inference mode) and computes PLCC/SRCC/KRCC/RMSE against the MOS.
// Unreadable images are listed with Err and excluded from the metrics;
// predictions are in dataset order. The report's error (too few readable
// images, constant scores) is returned alongside the predictions. h is for
// heads on CLIP's own preprocessing that read no prompts; it stays open.
func Evaluate(ctx context.Context, c *clip.Model, h ScoringHead, ds *data.Dataset, opts EvalOptions) (metrics.Report, []Prediction, error) {
	preds, err := scoreSamples(ctx, c, ds.Samples, opts, h)
	if err != nil {
		return metrics.Report{}, preds, fmt.Errorf("evaluate %s: %w", ds.Name, err)
	}
	rep, err := reportOf(preds)
	if err != nil {
		return rep, preds, fmt.Errorf("evaluate %s: %w", ds.Name, err)
	}
	return rep, preds, nil
}

// Evaluator is implemented by a head that evaluates a dataset its own way
// (its own preprocessing, the samples' prompts, several outputs); the
// others go through Evaluate's loop. EvaluateHead picks.
type Evaluator interface {
	ScoringHead
	Evaluate(ctx context.Context, ds *data.Dataset, opts EvalOptions) (metrics.Report, []Prediction, error)
}

// EvaluateHead is h's own Evaluate when it is an Evaluator, else Evaluate
// on c, which takes heads on CLIP's preprocessing that read no prompts.
func EvaluateHead(ctx context.Context, c *clip.Model, h ScoringHead, ds *data.Dataset, opts EvalOptions) (metrics.Report, []Prediction, error) {
	if e, ok := h.(Evaluator); ok {
		return e.Evaluate(ctx, ds, opts)
	}
	if _, ok := h.(ImageInputHead); ok || h.UsesPrompt() {
		return metrics.Report{}, nil, fmt.Errorf("evaluate %s: this method's head has its own input (prompts or preprocessing) and no Evaluate of its own", ds.Name)
	}
	return Evaluate(ctx, c, h, ds, opts)
}

// Predict scores image files with h on c; a file that cannot be read gets
// Err and does not stop the others. Name is the path as given.
func Predict(ctx context.Context, c *clip.Model, h ScoringHead, paths []string, opts EvalOptions) ([]Prediction, error) {
	return scoreSamples(ctx, c, pathSamples(paths), opts, h)
}

func pathSamples(paths []string) []data.Sample {
	out := make([]data.Sample, len(paths))
	for i, p := range paths {
		out[i] = data.Sample{Name: p, Path: p}
	}
	return out
}

func reportOf(preds []Prediction) (metrics.Report, error) {
	var p, q []float64
	for _, x := range preds {
		if x.Err == "" {
			p = append(p, x.Score)
			q = append(q, x.MOS)
		}
	}
	return metrics.Compute(p, q)
}

// scoreSamples runs the loader and the scorer in inference mode.
func scoreSamples(ctx context.Context, c *clip.Model, samples []data.Sample, opts EvalOptions, h ScoringHead) ([]Prediction, error) {
	if h.UsesPrompt() {
		return nil, fmt.Errorf("this evaluation loop has no prompts for a head that scores with them")
	}
	if opts.BatchSize <= 0 {
		opts.BatchSize = 32
	}
	dev := c.Device()
	prep := imageprep.DefaultOptions(c.Config.ImageResolution)
	if opts.MaxPixels > 0 {
		prep.MaxPixels = opts.MaxPixels
	}
	preds := make([]Prediction, len(samples))
	for i, s := range samples {
		preds[i] = Prediction{Name: s.Name, Path: s.Path, MOS: s.MOS}
	}
	s := torch.NewScope().WithGrad(torch.InferenceMode).WithDevice(dev)
	defer s.Close()
	text := h.Prepare(s)
	if err := s.Err(); err != nil {
		return preds, fmt.Errorf("text features: %w", err)
	}
	r := int64(prep.Size)
	lo := loader.Options{Prep: prep, BatchSize: opts.BatchSize, Workers: opts.Workers}
	for b, err := range loader.LoadBatches(ctx, samples, nil, lo) {
		if err != nil {
			return preds, err
		}
		for _, f := range b.Failed {
			preds[f.Index].Err = f.Err.Error()
		}
		if b.Len() == 0 {
			continue
		}
		scores, err := scoreBatch(s, h, text, dev, b.Pixels, b.Len(), r)
		if err != nil {
			return preds, err
		}
		for k, i := range b.Indices {
			if math.IsNaN(scores[k]) || math.IsInf(scores[k], 0) {
				return preds, fmt.Errorf("%s: score is %v (the model or checkpoint produces non-finite values)", samples[i].Name, scores[k])
			}
			preds[i].Score = scores[k]
		}
	}
	return preds, nil
}

func scoreBatch(parent *torch.Scope, h ScoringHead, text *torch.Tensor, dev torch.Device, px []float32, n int, r int64) ([]float64, error) {
	s := parent.Sub()
	defer s.Close()
	out := h.Score(s, s.FromFloat32On(dev, px, int64(n), 3, r, r), text, nil)
	if err := s.Err(); err != nil {
		return nil, fmt.Errorf("score batch of %d: %w", n, err)
	}
	v, err := out.Float64s()
	if err != nil {
		return nil, fmt.Errorf("score batch of %d: %w", n, err)
	}
	return v, nil
}
