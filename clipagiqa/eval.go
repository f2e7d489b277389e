package clipagiqa

import (
	"context"
	"errors"
	"fmt"
	"math"

	"github.com/clipagiqa/clipagiqa/clipagiqa/clip"
	"github.com/clipagiqa/clipagiqa/clipagiqa/imageprep"
	"github.com/clipagiqa/clipagiqa/clipagiqa/metrics"
	"github.com/clipagiqa/clipagiqa/data"
	"github.com/clipagiqa/clipagiqa/internal/regularfile"
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

// DefaultCLIPIQAPairs is CLIP-IQA's antonym pair.
var DefaultCLIPIQAPairs = [][2]string{{"Good photo.", "Bad photo."}}

// CLIPIQALogitScale is CLIP-IQA's fixed softmax temperature (not the model's
// own logit_scale).
const CLIPIQALogitScale = 100

// Evaluate scores ds with m (centre transform, batched, inference mode) and
// computes PLCC/SRCC/KRCC/RMSE against the MOS. Unreadable images are
// listed with Err and excluded from the metrics; predictions are in dataset
// order. The report's error (too few readable images, constant scores) is
// returned alongside the predictions.
func Evaluate(ctx context.Context, m *Model, ds *data.Dataset, opts EvalOptions) (metrics.Report, []Prediction, error) {
	preds, err := scoreSamples(ctx, m.CLIP, ds.Samples, opts, agiqaScorer(m))
	if err != nil {
		return metrics.Report{}, preds, fmt.Errorf("evaluate %s: %w", ds.Name, err)
	}
	rep, err := reportOf(preds)
	if err != nil {
		return rep, preds, fmt.Errorf("evaluate %s: %w", ds.Name, err)
	}
	return rep, preds, nil
}

// Predict scores image files with m; a file that cannot be read gets Err
// and does not stop the others. Name is the path as given.
func Predict(ctx context.Context, m *Model, paths []string, opts EvalOptions) ([]Prediction, error) {
	return scoreSamples(ctx, m.CLIP, pathSamples(paths), opts, agiqaScorer(m))
}

// EvaluateCLIPIQA is Evaluate with zero-shot CLIP-IQA scores (pairs nil:
// DefaultCLIPIQAPairs).
func EvaluateCLIPIQA(ctx context.Context, c *clip.Model, tok Tokenizer, pairs [][2]string, ds *data.Dataset, opts EvalOptions) (metrics.Report, []Prediction, error) {
	preds, err := scoreSamples(ctx, c, ds.Samples, opts, clipIQAScorer(c, tok, pairs))
	if err != nil {
		return metrics.Report{}, preds, fmt.Errorf("evaluate %s: %w", ds.Name, err)
	}
	rep, err := reportOf(preds)
	if err != nil {
		return rep, preds, fmt.Errorf("evaluate %s: %w", ds.Name, err)
	}
	return rep, preds, nil
}

// PredictCLIPIQA is Predict with zero-shot CLIP-IQA scores.
func PredictCLIPIQA(ctx context.Context, c *clip.Model, tok Tokenizer, pairs [][2]string, paths []string, opts EvalOptions) ([]Prediction, error) {
	return scoreSamples(ctx, c, pathSamples(paths), opts, clipIQAScorer(c, tok, pairs))
}

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
func EvaluateScorer(ctx context.Context, sc *Scorer, ds *data.Dataset, opts EvalOptions) ([]OutputReport, []Prediction, error) {
	outs := sc.Outputs()
	preds := make([]Prediction, len(ds.Samples))
	for i, s := range ds.Samples {
		preds[i] = Prediction{Name: s.Name, Path: s.Path, MOS: s.MOS}
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
	var reps []OutputReport
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
		reps = append(reps, OutputReport{Output: o, Report: rep})
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

// batchScorer prepares once (text features) and scores pixel batches; the
// returned tensor is owned by s.
type batchScorer struct {
	prepare func(s *torch.Scope) *torch.Tensor
	score   func(s *torch.Scope, pixels, text *torch.Tensor) *torch.Tensor
}

func agiqaScorer(m *Model) batchScorer {
	return batchScorer{
		prepare: m.TextFeatures,
		score: func(s *torch.Scope, px, text *torch.Tensor) *torch.Tensor {
			return m.Head(s, m.ImageFeatures(s, px), text, false)
		},
	}
}

func clipIQAScorer(c *clip.Model, tok Tokenizer, pairs [][2]string) batchScorer {
	return batchScorer{
		prepare: func(s *torch.Scope) *torch.Tensor { return clipIQAText(s, c, tok, pairs) },
		score: func(s *torch.Scope, px, text *torch.Tensor) *torch.Tensor {
			return clipIQAFromText(s, c, px, text)
		},
	}
}

// scoreSamples runs the loader and the scorer in inference mode.
func scoreSamples(ctx context.Context, c *clip.Model, samples []data.Sample, opts EvalOptions, sc batchScorer) ([]Prediction, error) {
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
	text := sc.prepare(s)
	if err := s.Err(); err != nil {
		return preds, fmt.Errorf("text features: %w", err)
	}
	r := int64(prep.Size)
	lo := LoaderOptions{Prep: prep, BatchSize: opts.BatchSize, Workers: opts.Workers}
	for b, err := range LoadBatches(ctx, samples, nil, lo) {
		if err != nil {
			return preds, err
		}
		for _, f := range b.Failed {
			preds[f.Index].Err = f.Err.Error()
		}
		if b.Len() == 0 {
			continue
		}
		scores, err := scoreBatch(s, sc, text, dev, b.Pixels, b.Len(), r)
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

func scoreBatch(parent *torch.Scope, sc batchScorer, text *torch.Tensor, dev torch.Device, px []float32, n int, r int64) ([]float64, error) {
	s := parent.Sub()
	defer s.Close()
	out := sc.score(s, s.FromFloat32On(dev, px, int64(n), 3, r, r), text)
	if err := s.Err(); err != nil {
		return nil, fmt.Errorf("score batch of %d: %w", n, err)
	}
	v, err := out.Float64s()
	if err != nil {
		return nil, fmt.Errorf("score batch of %d: %w", n, err)
	}
	return v, nil
}

// CLIPIQAScores is zero-shot CLIP-IQA on preprocessed pixels [N, 3, R, R]:
// for each antonym pair (positive, negative), softmax(100·cos(image,
// prompt)) over the two prompts; the score is the positive's probability,
// averaged over the pairs (nil: DefaultCLIPIQAPairs). Returns [N] float32;
// errors are in s.Err().
func CLIPIQAScores(s *torch.Scope, c *clip.Model, tok Tokenizer, pixels *torch.Tensor, pairs [][2]string) *torch.Tensor {
	return clipIQAFromText(s, c, pixels, clipIQAText(s, c, tok, pairs))
}

// clipIQAText returns the normalised text features [P, 2, E] of the pairs.
func clipIQAText(s *torch.Scope, c *clip.Model, tok Tokenizer, pairs [][2]string) *torch.Tensor {
	if len(pairs) == 0 {
		pairs = DefaultCLIPIQAPairs
	}
	ids := make([][]int64, 0, 2*len(pairs))
	for _, p := range pairs {
		for _, t := range p {
			row, err := tokenizeRow(tok, t, c.Config.ContextLength)
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

// clipIQAFromText scores pixels against text features [P, 2, E].
func clipIQAFromText(s *torch.Scope, c *clip.Model, pixels, text *torch.Tensor) *torch.Tensor {
	if s.Err() != nil {
		return nil
	}
	shape := text.Shape()
	p := shape[0]
	img := s.Normalize(s.Cast(c.EncodeImage(s, pixels), torch.Float32), -1) // [N, E]
	txt := s.Transpose(s.Reshape(text, 2*p, shape[2]), 0, 1)
	cos := byRow(s, img, func(row *torch.Tensor) *torch.Tensor { return s.MatMul(row, txt) }) // [N, 2P]
	n := s.ErrSafeDim(cos, 0)
	prob := s.Softmax(s.Reshape(s.MulScalar(cos, CLIPIQALogitScale), n, p, 2), -1)
	return s.Mean(s.Select(prob, 2, 0), false, 1) // [N]
}
