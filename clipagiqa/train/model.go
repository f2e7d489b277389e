// Package train is the generic training loop: epochs over a seeded
// shuffling sampler, a loss, gradient clipping, an optimizer and learning
// rate schedule from torch/optim, evaluation after every epoch with the
// protocol's epoch choice, atomic last/best checkpoints (model, optimizer,
// schedule and sampler state) that resume bit-identically, progress
// callbacks, metrics.jsonl/.csv and plots.
//
// The model plugs in through Model, so the loop knows nothing about
// CLIP-AGIQA or IP-IQA: it hands the model sample indices, and the model
// loads, augments and forwards them. Data-parallel training hooks in at
// three points through Parallel: each rank takes its shard of every global
// batch, gradients are averaged after backward, and only rank 0 writes.
package train

import (
	"context"

	"github.com/clipagiqa/clipagiqa/torch"
	"github.com/clipagiqa/clipagiqa/torch/nn"
	"github.com/clipagiqa/clipagiqa/torch/optim"
	"github.com/clipagiqa/clipagiqa/torch/ptfile"
)

// Batch is one optimisation step's share of training samples.
type Batch struct {
	Epoch int // 0-based
	Step  int // 0-based within the epoch
	// Indices are training-set positions (this rank's shard of the global
	// batch). Augmentation should derive its randomness from
	// SampleSeed(seed, Epoch, index) so that it does not depend on batching.
	Indices []int
}

// Model is what the trainer drives. Errors inside TrainBatch go to the scope
// (s.Fail or a failed op); the trainer checks s.Err().
type Model interface {
	// Trainable lists the parameters the optimizer updates, by PyTorch
	// name, in the optimizer's order (gradients are averaged and clipped
	// over these).
	Trainable() []nn.NamedParam
	// TrainBatch runs the forward pass in training mode on b's samples and
	// returns the outputs and the targets the loss compares them with
	// (e.g. [B, K] scores and MOS, or image and prompt embeddings). The
	// outputs' first dimension counts the samples used; a model that skips
	// unusable samples returns fewer rows, and nil outputs without an error
	// skip the step.
	TrainBatch(s *torch.Scope, b Batch) (outputs, targets *torch.Tensor)
	// Predict scores every sample of an evaluation part in eval mode:
	// [sample][output], in the order of the part's Targets.
	Predict(ctx context.Context, part string) ([][]float64, error)
	// SaveCheckpoint writes the model's state, opt's state dict and config
	// to path (atomically) as one torch.save file; epoch is the 0-based
	// index of the last completed epoch (the official IP-IQA "epoch").
	SaveCheckpoint(path string, opt optim.Optimizer, config *ptfile.Dict, epoch int) error
	// LoadCheckpoint restores what SaveCheckpoint wrote into the model
	// (and opt when not nil) and returns the file's config and epoch.
	LoadCheckpoint(path string, opt optim.Optimizer) (config any, epoch int, err error)
}

// BufferedModel is a Model with buffers that training changes (BatchNorm
// running statistics): in data-parallel training rank 0's buffers are
// broadcast before every training forward, as PyTorch DDP does by default
// (broadcast_buffers=True), and once more before each evaluation (DDP's
// first forward after training), so every rank evaluates the same model;
// rank 0 saves its own, which are the ones that persist.
type BufferedModel interface {
	Model
	Buffers() []nn.NamedParam
}

// FeatureCacher is a Model whose image encoder is frozen, so image features
// can be computed once: with Config.FeatureCache the trainer calls
// BuildFeatureCache once before the first epoch (after a resume too, unless
// the run is already complete); the model's TrainBatch and Predict then read
// the cached features.
type FeatureCacher interface {
	Model
	// EncoderFrozen reports whether caching is exact (false: the encoder
	// trains, and the trainer refuses Config.FeatureCache).
	EncoderFrozen() bool
	// BuildFeatureCache encodes what the run needs. It returns the training
	// positions that are usable (a subset of Config.Train, e.g. without
	// unreadable images; nil: all of them).
	BuildFeatureCache(ctx context.Context, p Parallel) (usable []int, err error)
}

// TargetedModel is a Model that knows its evaluation targets only once
// prepared (e.g. unreadable images left out by the feature cache): an
// EvalPart without Targets takes them from EvalTargets at every
// evaluation; a part with no targets is not evaluated.
type TargetedModel interface {
	Model
	EvalTargets(part string) [][]float64
}

// Persister replaces the trainer's own files (checkpoint_N.pth, metrics,
// plots) for a model that keeps an on-disk layout of its own. The trainer
// then never reads or writes Config.OutDir itself.
type Persister interface {
	// Resume is called once before training, whatever Config.Resume says
	// (the persister knows its own settings): it restores model and
	// optimizer and returns the state and history to continue from, or ok
	// false for a fresh start. now is the state a fresh run starts with.
	Resume(now State) (st State, history []EpochReport, ok bool, err error)
	// SaveEpoch persists a finished epoch (rank 0 only).
	SaveEpoch(st State, better bool, history []EpochReport) error
}

// Parallel is this process's place in data-parallel training
// (*dist.DataParallel implements it; nil is a single process).
type Parallel interface {
	Rank() int
	WorldSize() int
	// Sampler is this rank's shard of a global batch.
	Sampler(batch []int) []int
	// AverageGradients turns gradients of this rank's mean loss over n
	// samples into those of the global batch's mean loss, and returns the
	// global mean loss.
	AverageGradients(params []*torch.Tensor, loss float64, n int) (float64, error)
	// BroadcastParams overwrites the tensors with rank 0's values.
	BroadcastParams(params ...*torch.Tensor) error
}

// single is the one-process Parallel.
type single struct{}

func (single) Rank() int                 { return 0 }
func (single) WorldSize() int            { return 1 }
func (single) Sampler(batch []int) []int { return batch }
func (single) AverageGradients(_ []*torch.Tensor, loss float64, _ int) (float64, error) {
	return loss, nil
}
func (single) BroadcastParams(...*torch.Tensor) error { return nil }

func tensors(ps []nn.NamedParam) []*torch.Tensor {
	out := make([]*torch.Tensor, len(ps))
	for i, p := range ps {
		out[i] = p.T
	}
	return out
}
