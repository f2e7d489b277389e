package train

import (
	"fmt"
	"math"
	"slices"

	"github.com/clipagiqa/clipagiqa/clipagiqa/metrics"
	"github.com/clipagiqa/clipagiqa/torch/optim"
	"github.com/clipagiqa/clipagiqa/torch/ptfile"
)

// EvalPart is an evaluation set scored after every epoch: Predict(Name)
// returns one row per Targets row.
type EvalPart struct {
	Name    string      // "val", "test", ...
	Targets [][]float64 // [sample][output], the MOS of each output
}

// Selection says how the best epoch is chosen.
type Selection struct {
	// Part is the evaluation part that chooses ("" : the lowest training
	// loss). Choosing on a part named "test" is optimistic and is labelled
	// so (Result.BestLabel), as the official protocols report it.
	Part string
	// Metric is "srcc" (the first output's SRCC) or "sum_corr" (the sum of
	// SRCC, PLCC and KRCC over every output: the official IP-IQA choice).
	Metric string
}

// By is the selection's name in metrics and checkpoints: "val_srcc",
// "test_sum_corr", "train_loss".
func (s Selection) By() string {
	if s.Part == "" {
		return "train_loss"
	}
	return s.Part + "_" + s.metric()
}

func (s Selection) metric() string {
	if s.Metric == "" {
		return "srcc"
	}
	return s.Metric
}

// score is the selection value of one part's per-output reports (higher is
// better); NaN when it cannot be computed.
func (s Selection) score(reps []metrics.Report) float64 {
	if len(reps) == 0 {
		return math.NaN()
	}
	if s.metric() == "srcc" {
		return reps[0].SRCC
	}
	var sum float64
	for _, r := range reps {
		sum += r.SRCC + r.PLCC + r.KRCC
	}
	return sum
}

// Config configures Run. Zero values are the documented defaults where one
// is given; the rest must be set.
type Config struct {
	Epochs    int
	BatchSize int // the global batch (each rank takes BatchSize / world size)
	// KeepLastPartial trains on the last partial batch of an epoch too
	// (default: dropped when there is a full batch).
	KeepLastPartial bool
	// Seed fixes the sampler, augmentation (SampleSeed) and libtorch's
	// generator, which is reseeded with EpochSeed at every epoch.
	Seed uint64
	// Train lists the usable training-set positions (bad images left out).
	Train []int
	Loss  Loss // default MSE
	// ClipGradNorm clips the gradients' joint 2-norm to this value after
	// they are averaged (0: no clipping).
	ClipGradNorm float64
	// Scaler, when set, scales the loss before backward and unscales the
	// gradients after the all-reduce, before clipping; a step with
	// non-finite gradients is skipped (fp16 mixed precision,
	// *optim.GradScaler).
	Scaler LossScaler
	// Optimizer updates Model.Trainable(); the trainer saves and resumes its
	// state. Its groups' initial learning rates are what Schedule scales.
	Optimizer optim.Optimizer
	Schedule  optim.Schedule // default optim.Constant
	Interval  optim.Interval // schedule clock: per epoch (default) or per step
	// Eval parts are scored after every epoch; Outputs name the model's
	// output columns in reports ("quality", "alignment"; default "score").
	Eval    []EvalPart
	Outputs []string
	Select  Selection
	// OutDir receives checkpoints, metrics and plots ("" : nothing written).
	OutDir string
	// Resume continues from the newest checkpoint in OutDir, or from
	// ResumeFrom (a checkpoint file, also an official IP-IQA one) when set.
	Resume     bool
	ResumeFrom string
	// Hyper are the schedule settings a resume must agree with (epochs,
	// batch size and seed are always checked) unless OverrideSchedule.
	Hyper            map[string]float64
	OverrideSchedule bool
	// ModelConfig is stored in every checkpoint's "config" (e.g. the
	// official YAML as a dict); the trainer adds its state under "trainer".
	ModelConfig *ptfile.Dict
	// Persist, when set, keeps checkpoints and metrics in the model's own
	// layout instead of the trainer's (see Persister).
	Persist Persister
	// Parallel is this rank of data-parallel training (nil: one process).
	Parallel Parallel
	// FeatureCache asks a FeatureCacher model to cache its image features.
	FeatureCache bool
	// Plots writes loss.png and metrics.png in OutDir after every epoch.
	Plots bool
}

func (c *Config) check(m Model) error {
	switch {
	case m == nil:
		return fmt.Errorf("no model")
	case c.Epochs <= 0:
		return fmt.Errorf("epochs %d must be positive", c.Epochs)
	case c.BatchSize <= 0:
		return fmt.Errorf("batch size %d must be positive", c.BatchSize)
	case len(c.Train) == 0:
		return fmt.Errorf("no training samples")
	case c.Optimizer == nil:
		return fmt.Errorf("no optimizer")
	case c.ClipGradNorm < 0 || math.IsNaN(c.ClipGradNorm):
		return fmt.Errorf("gradient clipping norm %v must not be negative", c.ClipGradNorm)
	case (c.Resume || c.ResumeFrom != "") && c.OutDir == "" && c.Persist == nil:
		return fmt.Errorf("resume needs an output directory")
	}
	if c.Loss == nil {
		c.Loss = MSE
	}
	if c.Schedule == nil {
		c.Schedule = optim.Constant{}
	}
	if len(c.Outputs) == 0 {
		c.Outputs = []string{"score"}
	}
	if c.Parallel == nil {
		c.Parallel = single{}
	}
	if w := c.Parallel.WorldSize(); c.BatchSize%w != 0 {
		return fmt.Errorf("batch size %d (the global batch) does not divide by the world size %d", c.BatchSize, w)
	}
	if m := c.Select.metric(); m != "srcc" && m != "sum_corr" {
		return fmt.Errorf("selection metric %q: want srcc or sum_corr", m)
	}
	var names []string
	for _, p := range c.Eval {
		if p.Name == "" || slices.Contains(names, p.Name) {
			return fmt.Errorf("evaluation parts need distinct names, got %q", p.Name)
		}
		for i, row := range p.Targets {
			if len(row) != len(c.Outputs) {
				return fmt.Errorf("evaluation part %s: sample %d has %d targets for %d outputs", p.Name, i, len(row), len(c.Outputs))
			}
		}
		names = append(names, p.Name)
	}
	if c.Select.Part != "" && !slices.Contains(names, c.Select.Part) {
		return fmt.Errorf("best epoch chosen on part %q, which is not evaluated (parts %v)", c.Select.Part, names)
	}
	return nil
}
