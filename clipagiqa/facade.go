// Package clipagiqa is the embedding API: LoadScorer loads a registered
// scoring method on a CLIP and scores images in micro-batches (Scorer.Score,
// ScoreBytes, ScoreBatch). The models live in their own packages and
// register themselves (clipagiqa/agiqa: CLIP-AGIQA, clipagiqa/clipiqa:
// CLIP-IQA, clipagiqa/ipiqa: IP-IQA); the contract and registry are
// clipagiqa/method. The names below keep the API of the time when CLIP-AGIQA
// lived here: they are the same types and functions, not copies.
package clipagiqa

import (
	"context"
	"time"

	"github.com/clipagiqa/clipagiqa/clipagiqa/agiqa"
	"github.com/clipagiqa/clipagiqa/clipagiqa/clip"
	"github.com/clipagiqa/clipagiqa/clipagiqa/clipiqa"
	"github.com/clipagiqa/clipagiqa/clipagiqa/ipiqa"
	"github.com/clipagiqa/clipagiqa/clipagiqa/loader"
	"github.com/clipagiqa/clipagiqa/clipagiqa/method"
	"github.com/clipagiqa/clipagiqa/clipagiqa/metrics"
	"github.com/clipagiqa/clipagiqa/clipagiqa/scorer"
	"github.com/clipagiqa/clipagiqa/data"
	"github.com/clipagiqa/clipagiqa/torch"
)

// Scoring methods built in (each package registers itself).
const (
	// MethodAGIQA is CLIP-AGIQA: learned prompts and a regressor (needs a checkpoint).
	MethodAGIQA = agiqa.MethodName
	// MethodCLIPIQA is zero-shot CLIP-IQA: softmax(100·cos) against
	// "Good photo." / "Bad photo.", probability of the first (no checkpoint).
	MethodCLIPIQA = clipiqa.MethodName
	// MethodIPIQA is IP-IQA (ICME 2024) from an official checkpoint on a
	// ResNet CLIP: each image is scored with its prompt; quality (and
	// alignment for a 2-output checkpoint).
	MethodIPIQA = ipiqa.MethodName
)

// The Scorer (package scorer).
type (
	// Scorer scores images with a registered method's head on a CLIP; safe
	// for concurrent use.
	Scorer = scorer.Scorer
	// ScorerOption configures LoadScorer.
	ScorerOption = scorer.Option
	// ScorerStats are cumulative counters of a Scorer.
	ScorerStats = scorer.Stats
)

// Scorer errors; returned errors wrap them (test with errors.Is).
var (
	// ErrOverloaded: the bounded queue is full; retry later.
	ErrOverloaded = scorer.ErrOverloaded
	// ErrClosed: the scorer was closed.
	ErrClosed = scorer.ErrClosed
	// ErrInvalidImage: the input could not be decoded or preprocessed. The error
	// also wraps imageprep's cause (imageprep.ErrTooManyPixels, ErrTruncated, ...).
	ErrInvalidImage = scorer.ErrInvalidImage
	// ErrNoPrompt: the method scores an image with its prompt (UsesPrompt)
	// and none, or an empty one, was given.
	ErrNoPrompt = scorer.ErrNoPrompt
)

// Batching defaults.
const (
	DefaultMaxBatch = scorer.DefaultMaxBatch
	DefaultMaxWait  = scorer.DefaultMaxWait
)

// LoadScorer loads a CLIP model and the checkpoint of the method (default
// MethodAGIQA: a CLIP-AGIQA checkpoint, ours or the official layout; none
// for MethodCLIPIQA), prepares what every batch reuses (text features)
// once, and starts the batching goroutine. Close frees everything.
func LoadScorer(clipPath, checkpointDir string, opts ...ScorerOption) (*Scorer, error) {
	return scorer.Load(clipPath, checkpointDir, append([]ScorerOption{scorer.WithMethod(MethodAGIQA)}, opts...)...)
}

// WithDevice picks the compute device (default CPU).
func WithDevice(d torch.Device) ScorerOption { return scorer.WithDevice(d) }

// WithPrecision sets CLIP's compute precision (default float32; fp16/bf16 on CUDA).
func WithPrecision(dt torch.DType) ScorerOption { return scorer.WithPrecision(dt) }

// WithMaxBatch caps the images per device batch (default 32).
func WithMaxBatch(n int) ScorerOption { return scorer.WithMaxBatch(n) }

// WithMaxWait is how long the first request of a batch waits for company
// (default DefaultMaxWait).
func WithMaxWait(d time.Duration) ScorerOption { return scorer.WithMaxWait(d) }

// WithQueueSize bounds the requests waiting for the device (default 8×max batch).
func WithQueueSize(n int) ScorerOption { return scorer.WithQueueSize(n) }

// WithMaxPixels is the decompression-bomb guard (default imageprep.DefaultMaxPixels).
func WithMaxPixels(n int64) ScorerOption { return scorer.WithMaxPixels(n) }

// WithFused runs CLIP through its fused native CPU paths (clip.Model.EnableFused).
func WithFused(on bool) ScorerOption { return scorer.WithFused(on) }

// WithThreads sets libtorch's intra-op threads (process-wide; 0 keeps the default).
func WithThreads(n int) ScorerOption { return scorer.WithThreads(n) }

// WithEpoch picks the epoch of an official checkpoint directory (0: the last).
func WithEpoch(n int) ScorerOption { return scorer.WithEpoch(n) }

// WithMethod picks a registered method: MethodAGIQA (default), MethodCLIPIQA,
// MethodIPIQA or one added with RegisterMethod.
func WithMethod(m string) ScorerOption { return scorer.WithMethod(m) }

// WithPreprocessWorkers bounds how many images are decoded and resized at once
// (default 2×GOMAXPROCS).
func WithPreprocessWorkers(n int) ScorerOption { return scorer.WithPreprocessWorkers(n) }

// The method contract (see package method).
type (
	// ScoringHead is a loaded scoring method on top of CLIP.
	ScoringHead = method.ScoringHead
	// ImageInputHead is a head with its own image preprocessing.
	ImageInputHead = method.ImageInputHead
	// MultiOutputHead is a head with several score columns.
	MultiOutputHead = method.MultiOutputHead
	// HeadLoader builds a method's ScoringHead on a loaded CLIP.
	HeadLoader = method.HeadLoader
	// Method is a registered scoring method.
	Method = method.Method
	// Tokenizer is the part of CLIP's BPE tokenizer the heads need.
	Tokenizer = method.Tokenizer
	// Description is what a loaded head reports about itself.
	Description = method.Description
	// Describer is a head that says what it loaded.
	Describer = method.Describer
	// PromptPairsHead is a zero-shot head with replaceable prompt pairs.
	PromptPairsHead = method.PromptPairsHead
	// Evaluator is a head that evaluates a dataset its own way.
	Evaluator = method.Evaluator
)

// EvaluateHead is method.EvaluateHead: h's own Evaluate, or the shared loop on c.
func EvaluateHead(ctx context.Context, c *clip.Model, h ScoringHead, ds *data.Dataset, opts EvalOptions) (metrics.Report, []Prediction, error) {
	return method.EvaluateHead(ctx, c, h, ds, opts)
}

// RegisterMethod is method.Register.
func RegisterMethod(m Method) error { return method.Register(m) }

// LookupMethod is method.Lookup.
func LookupMethod(name string) (Method, error) { return method.Lookup(name) }

// MethodNames is method.Names.
func MethodNames() []string { return method.Names() }

// Evaluation results and options (package method).
type (
	// Prediction is the score of one image.
	Prediction = method.Prediction
	// EvalOptions configure Evaluate and Predict.
	EvalOptions = method.EvalOptions
	// OutputReport is the metrics of one model output.
	OutputReport = method.OutputReport
)

// EvaluateScorer is scorer.EvaluateScorer: any method, through its Scorer,
// one report per output.
func EvaluateScorer(ctx context.Context, sc *Scorer, ds *data.Dataset, opts EvalOptions) ([]OutputReport, []Prediction, error) {
	return scorer.EvaluateScorer(ctx, sc, ds, opts)
}

// Loader types (package loader).
type (
	// ImageError is an image that could not be read, decoded or transformed.
	ImageError = loader.ImageError
	// ImageErrors lists unreadable images.
	ImageErrors = loader.ImageErrors
)

// CLIP-AGIQA (package agiqa).
type (
	// Model is CLIP-AGIQA: frozen CLIP, prompt learner and regressor.
	Model = agiqa.Model
	// Config describes the prompt learner and the regressor.
	Config = agiqa.Config
	// Checkpoint is a CLIP-AGIQA checkpoint.
	Checkpoint = agiqa.Checkpoint
	// Optimizer is CLIP-AGIQA's SGD over its two parameter groups.
	Optimizer = agiqa.Optimizer
	// TrainConfig configures Train.
	TrainConfig = agiqa.TrainConfig
	// Datasets are Train's splits.
	Datasets = agiqa.Datasets
	// StepInfo is a training step's report.
	StepInfo = agiqa.StepInfo
	// EpochReport is an epoch's metrics.
	EpochReport = agiqa.EpochReport
	// Callbacks observe Train.
	Callbacks = agiqa.Callbacks
	// TrainResult is Train's outcome.
	TrainResult = agiqa.TrainResult
	// FeatureCache is the feature-cache mode.
	FeatureCache = agiqa.FeatureCache
	// CacheOptions configure CacheImageFeatures.
	CacheOptions = agiqa.CacheOptions
	// CacheStats count CacheImageFeatures' work.
	CacheStats = agiqa.CacheStats
	// CachedFeatures are cached image features.
	CachedFeatures = agiqa.CachedFeatures
	// Gatherer is the data-parallel group Train and the cache shard over.
	Gatherer = agiqa.Gatherer
)

// CLIP-AGIQA constants (package agiqa).
const (
	PositionEnd         = agiqa.PositionEnd
	PositionMiddle      = agiqa.PositionMiddle
	PositionFront       = agiqa.PositionFront
	CacheOff            = agiqa.CacheOff
	CacheCenter         = agiqa.CacheCenter
	CacheViews          = agiqa.CacheViews
	DefaultFeatureCache = agiqa.DefaultFeatureCache
	FormatVersion       = agiqa.FormatVersion
	ModelFile           = agiqa.ModelFile
	LastDir             = agiqa.LastDir
	BestDir             = agiqa.BestDir
	MetricsJSON         = agiqa.MetricsJSON
	MetricsCSV          = agiqa.MetricsCSV
)

// DefaultCategories are CLIP-AGIQA's six quality words.
var DefaultCategories = agiqa.DefaultCategories

// DefaultConfig is agiqa.DefaultConfig.
func DefaultConfig() Config { return agiqa.DefaultConfig() }

// New is agiqa.New.
func New(c *clip.Model, tok Tokenizer, cfg Config) (*Model, error) { return agiqa.New(c, tok, cfg) }

// ReadCheckpoint is agiqa.ReadCheckpoint.
func ReadCheckpoint(path string, epoch int) (*Checkpoint, error) {
	return agiqa.ReadCheckpoint(path, epoch)
}

// ReadOfficial is agiqa.ReadOfficial.
func ReadOfficial(dir string, epoch int) (*Checkpoint, error) { return agiqa.ReadOfficial(dir, epoch) }

// FromCheckpoint is agiqa.FromCheckpoint.
func FromCheckpoint(c *clip.Model, tok Tokenizer, ck *Checkpoint) (*Model, error) {
	return agiqa.FromCheckpoint(c, tok, ck)
}

// IsOfficialDir is agiqa.IsOfficialDir.
func IsOfficialDir(dir string) bool { return agiqa.IsOfficialDir(dir) }

// OfficialEpochs is agiqa.OfficialEpochs.
func OfficialEpochs(dir string) ([]int, error) { return agiqa.OfficialEpochs(dir) }

// NewOptimizer is agiqa.NewOptimizer.
func NewOptimizer(m *Model, lr, momentum, weightDecay float64) (*Optimizer, error) {
	return agiqa.NewOptimizer(m, lr, momentum, weightDecay)
}

// LRAt is agiqa.LRAt.
func LRAt(epoch, epochs, warmupEpochs int, baseLR, warmupLR float64) float64 {
	return agiqa.LRAt(epoch, epochs, warmupEpochs, baseLR, warmupLR)
}

// DefaultTrainConfig is agiqa.DefaultTrainConfig.
func DefaultTrainConfig() TrainConfig { return agiqa.DefaultTrainConfig() }

// Train is agiqa.Train.
func Train(ctx context.Context, m *Model, ds Datasets, cfg TrainConfig, cb Callbacks) (*TrainResult, error) {
	return agiqa.Train(ctx, m, ds, cfg, cb)
}

// ReadMetrics is agiqa.ReadMetrics.
func ReadMetrics(path string) ([]EpochReport, error) { return agiqa.ReadMetrics(path) }

// ParseFeatureCache is agiqa.ParseFeatureCache.
func ParseFeatureCache(s string) (FeatureCache, error) { return agiqa.ParseFeatureCache(s) }

// WeightsSHA256 is agiqa.WeightsSHA256.
func WeightsSHA256(cacheDir, path string) (string, error) { return agiqa.WeightsSHA256(cacheDir, path) }

// CacheImageFeatures is agiqa.CacheImageFeatures.
func CacheImageFeatures(ctx context.Context, m *Model, samples []data.Sample, opts CacheOptions) (*CachedFeatures, error) {
	return agiqa.CacheImageFeatures(ctx, m, samples, opts)
}

// Evaluate is agiqa.Evaluate.
func Evaluate(ctx context.Context, m *Model, ds *data.Dataset, opts EvalOptions) (metrics.Report, []Prediction, error) {
	return agiqa.Evaluate(ctx, m, ds, opts)
}

// Predict is agiqa.Predict.
func Predict(ctx context.Context, m *Model, paths []string, opts EvalOptions) ([]Prediction, error) {
	return agiqa.Predict(ctx, m, paths, opts)
}

// CLIP-IQA (package clipiqa).

// DefaultCLIPIQAPairs is CLIP-IQA's antonym pair.
var DefaultCLIPIQAPairs = clipiqa.DefaultPairs

// CLIPIQALogitScale is CLIP-IQA's fixed softmax temperature.
const CLIPIQALogitScale = clipiqa.LogitScale

// EvaluateCLIPIQA is clipiqa.Evaluate.
func EvaluateCLIPIQA(ctx context.Context, c *clip.Model, tok Tokenizer, pairs [][2]string, ds *data.Dataset, opts EvalOptions) (metrics.Report, []Prediction, error) {
	return clipiqa.Evaluate(ctx, c, tok, pairs, ds, opts)
}

// PredictCLIPIQA is clipiqa.Predict.
func PredictCLIPIQA(ctx context.Context, c *clip.Model, tok Tokenizer, pairs [][2]string, paths []string, opts EvalOptions) ([]Prediction, error) {
	return clipiqa.Predict(ctx, c, tok, pairs, paths, opts)
}

// CLIPIQAScores is clipiqa.Scores.
func CLIPIQAScores(s *torch.Scope, c *clip.Model, tok Tokenizer, pixels *torch.Tensor, pairs [][2]string) *torch.Tensor {
	return clipiqa.Scores(s, c, tok, pixels, pairs)
}
