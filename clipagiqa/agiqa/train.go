package agiqa

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/clipagiqa/clipagiqa/clipagiqa/imageprep"
	"github.com/clipagiqa/clipagiqa/clipagiqa/loader"
	"github.com/clipagiqa/clipagiqa/clipagiqa/metrics"
	"github.com/clipagiqa/clipagiqa/clipagiqa/train"
	"github.com/clipagiqa/clipagiqa/data"
	"github.com/clipagiqa/clipagiqa/torch"
	"github.com/clipagiqa/clipagiqa/torch/dist"
	"github.com/clipagiqa/clipagiqa/torch/nn"
	"github.com/clipagiqa/clipagiqa/torch/optim"
	"github.com/clipagiqa/clipagiqa/torch/ptfile"
)

// DefaultFeatureCache is Train's default: one centre view per image, encoded
// once. The paper's "off" costs a full encoder pass per epoch (100 passes);
// "center" costs one, and the frozen encoder makes it exact for the test
// transform (the model loses only the crop/flip augmentation).
const DefaultFeatureCache = CacheCenter

// Output layout of a training run.
const (
	LastDir     = "last"
	BestDir     = "best"
	MetricsJSON = "metrics.jsonl"
	MetricsCSV  = "metrics.csv"
)

// TrainConfig configures Train. Zero fields are not defaults: start from
// DefaultTrainConfig.
type TrainConfig struct {
	Epochs       int
	BatchSize    int
	LR           float64 // base learning rate, cosine-annealed over Epochs
	WarmupLR     float64 // constant learning rate of the warm-up epochs
	WarmupEpochs int
	Momentum     float64
	WeightDecay  float64
	// Seed makes the run reproducible: shuffling, augmentation, dropout.
	Seed uint64
	// FeatureCache is "off", "center" or "views=K" (see ParseFeatureCache).
	FeatureCache string
	// CacheDir keeps cached features on disk across runs ("" : memory only).
	CacheDir string
	// OutDir receives metrics and checkpoints ("": nothing is written).
	OutDir string
	// Resume continues from OutDir/last when it exists. The seed, batch size,
	// feature cache and schedule (epochs, learning rates, warm-up, momentum,
	// weight decay) must match the saved run's, unless OverrideSchedule
	// allows the schedule to change (the run then mixes two schedules).
	Resume           bool
	OverrideSchedule bool
	// Workers decode images in parallel (0: runtime.NumCPU()).
	Workers int
	// Device must be empty or the model's device (the model fixes it).
	Device string
	// SkipBadImages trains and evaluates without unreadable images instead
	// of failing (they are listed in TrainResult's *Failed either way).
	SkipBadImages bool
	// Parallel makes this process one rank of data-parallel training (nil or
	// world size 1: a single process). BatchSize stays the global batch.
	Parallel *dist.DataParallel `json:"-"`

	inLoopCenter bool // tests: encoder in the loop on the centre transform
}

// DefaultTrainConfig is the paper's setting: 100 epochs, batch 32, SGD
// lr 0.002 (momentum 0.9, weight decay 5e-4) with cosine annealing after
// one warm-up epoch at 1e-5; the feature cache is DefaultFeatureCache.
func DefaultTrainConfig() TrainConfig {
	return TrainConfig{Epochs: 100, BatchSize: 32, LR: 0.002, WarmupLR: 1e-5, WarmupEpochs: 1,
		Momentum: 0.9, WeightDecay: 5e-4, FeatureCache: DefaultFeatureCache}
}

// Datasets are the parts of a training run; Val and Test may be nil. The
// best checkpoint is chosen on Val (Test is only reported).
type Datasets struct {
	Train, Val, Test *data.Dataset
}

// StepInfo describes one finished optimisation step.
type StepInfo struct {
	Epoch   int // 1-based
	Step    int // 1-based within the epoch
	Steps   int // steps in the epoch
	Images  int
	Loss    float64
	LR      float64
	Elapsed time.Duration // since the epoch started
}

// EpochReport is one line of metrics.jsonl.
type EpochReport struct {
	Epoch       int             `json:"epoch"` // 1-based
	LR          float64         `json:"lr"`
	TrainLoss   float64         `json:"train_loss"`
	Steps       int             `json:"steps"`
	TrainImages int             `json:"train_images"`
	Val         *metrics.Report `json:"val,omitempty"`
	ValError    string          `json:"val_error,omitempty"`
	Test        *metrics.Report `json:"test,omitempty"`
	TestError   string          `json:"test_error,omitempty"`
	Best        bool            `json:"best"` // saved to OutDir/best
	Seconds     float64         `json:"seconds"`
}

// Callbacks observe training; either may be nil. They run on Train's goroutine.
type Callbacks struct {
	OnStep  func(StepInfo)
	OnEpoch func(EpochReport)
}

// TrainResult summarises a run (also an interrupted one).
type TrainResult struct {
	// History has every completed epoch, those before a resume included.
	History []EpochReport
	// StartEpoch is the number of epochs already done when this call began.
	StartEpoch int
	Resumed    bool
	// Interrupted is set when ctx ended the run early.
	Interrupted bool
	BestEpoch   int // 1-based; 0 if none
	BestMetric  float64
	BestBy      string // "val_srcc" or "train_loss"
	TrainFailed loader.ImageErrors
	ValFailed   loader.ImageErrors
	TestFailed  loader.ImageErrors
	// Cache describes the training features (nil for "off").
	Cache        *CacheStats
	FeatureCache string
	// EncodeSeconds is the time spent encoding cached and evaluation features.
	EncodeSeconds float64
	// RemovedTemps are orphaned temporaries of killed writes removed at start.
	RemovedTemps []string
}

// trainState is the resumable state stored in a checkpoint's extra JSON.
// Randomness is re-derived from (seed, epoch) at every epoch, so no
// generator state needs saving.
type trainState struct {
	Epoch        int     `json:"epoch"` // completed epochs
	Seed         uint64  `json:"seed"`
	Epochs       int     `json:"epochs"`
	BatchSize    int     `json:"batch_size"`
	LR           float64 `json:"lr"`
	FeatureCache string  `json:"feature_cache"`
	BestEpoch    int     `json:"best_epoch"`
	BestMetric   float64 `json:"best_metric"`
	BestBy       string  `json:"best_by"`
	RNG          string  `json:"rng"`
	// The rest of the schedule; HasSchedule is false in older checkpoints.
	HasSchedule  bool    `json:"has_schedule,omitempty"`
	WarmupEpochs int     `json:"warmup_epochs,omitempty"`
	WarmupLR     float64 `json:"warmup_lr,omitempty"`
	Momentum     float64 `json:"momentum,omitempty"`
	WeightDecay  float64 `json:"weight_decay,omitempty"`
}

const rngScheme = "per-epoch: torch.ManualSeed(mix(seed,epoch)); PCG shuffle(seed,epoch); augmentation PCG(seed,epoch,index)"

func (c *TrainConfig) validate() error {
	switch {
	case c.Epochs <= 0:
		return fmt.Errorf("epochs %d must be positive", c.Epochs)
	case c.BatchSize <= 0:
		return fmt.Errorf("batch size %d must be positive", c.BatchSize)
	case !(c.LR > 0):
		return fmt.Errorf("learning rate %v must be positive", c.LR)
	case c.WarmupEpochs < 0 || c.WarmupLR < 0:
		return fmt.Errorf("warm-up %d epochs at %v: must not be negative", c.WarmupEpochs, c.WarmupLR)
	case c.Momentum < 0 || c.WeightDecay < 0:
		return fmt.Errorf("momentum %v and weight decay %v must not be negative", c.Momentum, c.WeightDecay)
	case c.Resume && c.OutDir == "":
		return fmt.Errorf("resume needs an output directory")
	}
	if c.Workers <= 0 {
		c.Workers = runtime.NumCPU()
	}
	return nil
}

// epochSeed derives the libtorch seed of one epoch (dropout): the generic
// trainer's, which reseeds with it at every epoch.
func epochSeed(seed uint64, epoch int) uint64 { return train.EpochSeed(seed, epoch) }

// epochOrder is the shuffled sample order of one epoch (the trainer's sampler).
func epochOrder(seed uint64, epoch int, idx []int) []int { return train.EpochOrder(seed, epoch, idx) }

// epochView picks sample i's cached view in an epoch (views=K).
func epochView(seed uint64, epoch, i, views int) int {
	if views <= 1 {
		return 0
	}
	return int(loader.Mix64(loader.Mix64(seed^0x94d049bb133111eb)^loader.Mix64(uint64(epoch))^uint64(i)*0x9e3779b97f4a7c15) % uint64(views))
}

// evalSet holds a dataset's centre features for per-epoch evaluation.
type evalSet struct {
	feats *torch.Tensor // [n, E] of readable samples
	mos   []float64
}

func (e *evalSet) close() {
	if e != nil {
		e.feats.Close()
	}
}

// Train trains m's prompt context and regressor on ds.Train (see
// TrainConfig), evaluating on Val and Test after every epoch. With OutDir it
// writes metrics.jsonl and metrics.csv and, atomically after each epoch,
// OutDir/last (model, momentum and resumable state) and OutDir/best (best
// Val SRCC, or lowest training loss without Val). Cancelling ctx stops the
// run at the next step; the last completed epoch is already saved, the
// result has Interrupted set and the error wraps ctx.Err().
//
// The loop is the generic trainer's (clipagiqa/train): this function plugs
// CLIP-AGIQA in (agiqaTrainee) with its feature cache and its own
// checkpoint layout.
func Train(ctx context.Context, m *Model, ds Datasets, cfg TrainConfig, cb Callbacks) (*TrainResult, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("train: %w", err)
	}
	if ds.Train == nil || ds.Train.Len() == 0 {
		return nil, fmt.Errorf("train: no training samples")
	}
	fc, err := ParseFeatureCache(cfg.FeatureCache)
	if err != nil {
		return nil, fmt.Errorf("train: %w", err)
	}
	dev := m.CLIP.Device()
	if cfg.Device != "" {
		d, err := torch.ParseDevice(cfg.Device)
		if err != nil {
			return nil, fmt.Errorf("train: %w", err)
		}
		if d != dev {
			return nil, fmt.Errorf("train: device %s, but the model is on %s (load CLIP on the device instead)", d, dev)
		}
	}
	if err := checkAllFiles(ds); err != nil {
		return nil, fmt.Errorf("train: %w", err)
	}
	if err := torch.ManualSeed(cfg.Seed); err != nil {
		return nil, fmt.Errorf("train: %w", err)
	}
	opt, err := NewOptimizer(m, cfg.LR, cfg.Momentum, cfg.WeightDecay)
	if err != nil {
		return nil, fmt.Errorf("train: %w", err)
	}
	defer opt.Close()
	dp := cfg.Parallel
	if dp == nil {
		dp = dist.NewDataParallel(dist.Local())
	} else if dp.WorldSize() > 1 {
		if _, err := dp.LocalBatch(cfg.BatchSize); err != nil {
			return nil, fmt.Errorf("train: %w", err)
		}
	}

	res := &TrainResult{FeatureCache: fc.String(), BestBy: "train_loss"}
	sel := train.Selection{}
	if ds.Val != nil && ds.Val.Len() > 0 {
		res.BestBy, sel = "val_srcc", train.Selection{Part: "val", Metric: "srcc"}
	}
	res.RemovedTemps = removeOrphanTemps(cfg.OutDir, cfg.CacheDir, time.Now())
	t := &agiqaTrainee{m: m, opt: opt, cfg: cfg, ds: ds, fc: fc, res: res, dp: dp, setupCtx: ctx, dev: dev,
		prep: imageprep.DefaultOptions(m.CLIP.Config.ImageResolution), views: 1,
		st: trainState{Seed: cfg.Seed, Epochs: cfg.Epochs, BatchSize: cfg.BatchSize, LR: cfg.LR, FeatureCache: fc.String(), BestBy: res.BestBy, RNG: rngScheme,
			HasSchedule: true, WarmupEpochs: cfg.WarmupEpochs, WarmupLR: cfg.WarmupLR, Momentum: cfg.Momentum, WeightDecay: cfg.WeightDecay}}
	defer t.close()
	all := make([]int, ds.Train.Len())
	for i := range all {
		all[i] = i
	}
	var eval []train.EvalPart
	for _, p := range []struct {
		name string
		d    *data.Dataset
	}{{"val", ds.Val}, {"test", ds.Test}} {
		if p.d != nil && p.d.Len() > 0 {
			eval = append(eval, train.EvalPart{Name: p.name})
		}
	}
	// Data-parallel: every rank stops after the same step (the feature
	// cache is built on setupCtx, which a signal still cancels at once).
	loopCtx, endRun := stopContext(ctx, dp)
	defer endRun()
	t.loopCtx = loopCtx
	tcfg := train.Config{
		Epochs: cfg.Epochs, BatchSize: cfg.BatchSize, Seed: cfg.Seed, Train: all, Loss: train.MSE,
		Optimizer: pairOptimizer{opt}, Interval: optim.PerEpoch,
		Schedule: optim.ConstantWarmupCosine{Warmup: cfg.WarmupEpochs, WarmupLR: cfg.WarmupLR, TMax: cfg.Epochs},
		Eval:     eval, Select: sel, Persist: t, Parallel: dp, FeatureCache: true,
	}
	tcb := train.Callbacks{}
	if cb.OnStep != nil {
		tcb.OnStep = func(si train.StepInfo) {
			cb.OnStep(StepInfo{Epoch: si.Epoch, Step: si.Step, Steps: si.Steps, Images: si.Samples, Loss: si.Loss, LR: si.LR, Elapsed: si.Elapsed})
		}
	}
	if cb.OnEpoch != nil {
		tcb.OnEpoch = func(e train.EpochReport) { cb.OnEpoch(fromTrainReport(e)) }
	}
	tres, err := train.Run(loopCtx, t, tcfg, tcb)
	if tres != nil {
		res.History = res.History[:0]
		for _, e := range tres.History {
			res.History = append(res.History, fromTrainReport(e))
		}
		res.StartEpoch, res.Resumed, res.BestEpoch, res.BestMetric = tres.StartEpoch, tres.Resumed, tres.BestEpoch, tres.BestScore
		res.Interrupted = res.Interrupted || tres.Interrupted
	}
	if err != nil {
		if t.built || t.resumed || res.Interrupted {
			return res, err
		}
		return nil, err
	}
	return res, nil
}

// agiqaTrainee is CLIP-AGIQA as a train.Model: the prompt context and the
// regressor train on image features of the frozen CLIP, cached once
// (FeatureCache center or views=K) or encoded every step (off); evaluation
// always uses cached centre features. It keeps the checkpoint layout of
// our format (last/, best/, metrics.jsonl) as its train.Persister.
type agiqaTrainee struct {
	m        *Model
	opt      *Optimizer
	cfg      TrainConfig
	ds       Datasets
	fc       FeatureCache
	res      *TrainResult
	dp       *dist.DataParallel
	setupCtx context.Context // the caller's: the cache build stops at once on a signal
	loopCtx  context.Context // data-parallel: cancelled once the ranks agreed to stop
	dev      torch.Device
	prep     imageprep.Options
	st       trainState

	val, test  *evalSet
	trainFeats *torch.Tensor // [N·views, E] on the device, cached modes
	views      int
	usable     []int // readable training samples
	built      bool  // the feature stage ran
	resumed    bool
	stream     *epochStream // "off": this rank's images of the epoch, loaded ahead
}

// epochStream loads one epoch's images for this rank ahead of the steps
// (LoadBatches prefetches while the encoder runs), one global batch's
// shard per step.
type epochStream struct {
	epoch   int
	localBS int
	next    func() (*loader.Batch, error, bool)
	stop    func()
}

var (
	_ train.FeatureCacher = (*agiqaTrainee)(nil)
	_ train.TargetedModel = (*agiqaTrainee)(nil)
	_ train.Persister     = (*agiqaTrainee)(nil)
)

func (t *agiqaTrainee) close() {
	t.stopStream()
	t.val.close()
	t.test.close()
	t.trainFeats.Close()
}

func (t *agiqaTrainee) stopStream() {
	if t.stream != nil {
		t.stream.stop()
		t.stream = nil
	}
}

// startStream begins loading epoch's images for this rank: the shards of
// the epoch's global batches, in order (the trainer's own batching).
func (t *agiqaTrainee) startStream(epoch int) {
	t.stopStream()
	var mine []int
	localBS := 0
	for _, g := range train.Batches(train.EpochOrder(t.cfg.Seed, epoch, t.usable), t.cfg.BatchSize, false) {
		shard := t.dp.Sampler(g)
		mine = append(mine, shard...)
		localBS = max(localBS, len(shard))
	}
	lo := loader.Options{Prep: t.prep, BatchSize: max(localBS, 1), Workers: t.cfg.Workers, Augment: !t.cfg.inLoopCenter, Seed: t.cfg.Seed, Stream: uint64(epoch)}
	next, stop := iter.Pull2(loader.LoadBatches(t.loopCtx, t.ds.Train.Samples, mine, lo))
	t.stream = &epochStream{epoch: epoch, localBS: lo.BatchSize, next: next, stop: stop}
}

// loadBatch is b's images: the next batch of the epoch's stream when it is
// b's (it always is when the trainer walks the epoch in order), else a
// direct load of b's samples.
func (t *agiqaTrainee) loadBatch(b train.Batch) (*loader.Batch, error) {
	if b.Step == 0 || t.stream == nil || t.stream.epoch != b.Epoch {
		t.startStream(b.Epoch)
	}
	st := t.stream
	bt, err, ok := st.next()
	if err != nil {
		t.stopStream()
		return nil, err
	}
	if ok && bt.Start == b.Step*st.localBS {
		return bt, nil
	}
	t.stopStream() // out of step: load b directly
	lo := loader.Options{Prep: t.prep, BatchSize: len(b.Indices), Workers: t.cfg.Workers, Prefetch: 1, Augment: !t.cfg.inLoopCenter, Seed: t.cfg.Seed, Stream: uint64(b.Epoch)}
	for bt, err := range loader.LoadBatches(t.loopCtx, t.ds.Train.Samples, b.Indices, lo) {
		return bt, err
	}
	return nil, nil
}

// Trainable is the prompt context and the regressor, in Params' order.
func (t *agiqaTrainee) Trainable() []nn.NamedParam { return t.m.NamedParams() }

// EncoderFrozen is always true: CLIP stays frozen in CLIP-AGIQA.
func (t *agiqaTrainee) EncoderFrozen() bool { return true }

// BuildFeatureCache computes the evaluation sets' centre features and the
// training features per FeatureCache ("off": every training image is
// decoded once to find unreadable ones), and returns the readable training
// samples.
func (t *agiqaTrainee) BuildFeatureCache(_ context.Context, _ train.Parallel) ([]int, error) {
	ctx, m, cfg, res := t.setupCtx, t.m, t.cfg, t.res
	t.built = true
	copts := CacheOptions{Dir: cfg.CacheDir, Mode: FeatureCache{Mode: CacheCenter, Views: 1}, BatchSize: cfg.BatchSize, Workers: cfg.Workers, Prep: t.prep, Parallel: t.dp}
	var err error
	if t.ds.Val != nil && t.ds.Val.Len() > 0 {
		if t.val, res.ValFailed, err = buildEvalSet(ctx, m, t.ds.Val, copts, res); err != nil {
			return nil, fmt.Errorf("validation features: %w", err)
		}
	}
	if t.ds.Test != nil && t.ds.Test.Len() > 0 {
		if t.test, res.TestFailed, err = buildEvalSet(ctx, m, t.ds.Test, copts, res); err != nil {
			return nil, fmt.Errorf("test features: %w", err)
		}
	}
	samples := t.ds.Train.Samples
	valid := make([]bool, len(samples))
	if t.fc.Mode == CacheOff {
		for i := range valid {
			valid[i] = true
		}
		failed, err := checkDecodable(ctx, samples, t.prep.MaxPixels, cfg.Workers)
		if err != nil {
			return nil, err
		}
		for _, f := range failed {
			valid[f.Index] = false
		}
		res.TrainFailed = failed
	} else {
		co := copts
		co.Mode, co.Seed = t.fc, cfg.Seed
		cf, err := CacheImageFeatures(ctx, m, samples, co)
		if err != nil {
			return nil, err
		}
		res.Cache = &cf.Stats
		res.EncodeSeconds += cf.Stats.EncodeSeconds
		res.TrainFailed, valid, t.views = cf.Failed, cf.Valid, cf.Views
		if t.trainFeats, err = torch.FromFloat32(cf.Rows, int64(len(samples)*t.views), int64(cf.Embed)); err == nil && t.dev != torch.CPU {
			s := torch.NewScope()
			moved := s.Keep(s.To(t.trainFeats, torch.Float32, t.dev))
			err = s.Err()
			s.Close()
			t.trainFeats.Close()
			t.trainFeats = moved
		}
		if err != nil {
			return nil, fmt.Errorf("features to device: %w", err)
		}
	}
	if err := unusable(res); err != nil && !cfg.SkipBadImages {
		return nil, fmt.Errorf("%w (or skip them explicitly)", err)
	}
	idx := []int{}
	for i, ok := range valid {
		if ok {
			idx = append(idx, i)
		}
	}
	if len(idx) == 0 {
		return nil, fmt.Errorf("no readable training images")
	}
	t.usable = idx
	return idx, nil
}

// TrainBatch forwards the head on b's features in training mode (dropout
// on): cached rows (one view per sample and epoch) or, with the cache off,
// the frozen encoder on freshly augmented images.
func (t *agiqaTrainee) TrainBatch(s *torch.Scope, b train.Batch) (*torch.Tensor, *torch.Tensor) {
	samples := t.ds.Train.Samples
	var feats *torch.Tensor
	var mos []float32
	if t.trainFeats != nil {
		rows := make([]int64, len(b.Indices))
		mos = make([]float32, len(b.Indices))
		for j, i := range b.Indices {
			rows[j] = int64(i*t.views + epochView(t.cfg.Seed, b.Epoch, i, t.views))
			mos[j] = float32(samples[i].MOS)
		}
		ns := s.Sub().WithGrad(torch.NoGrad)
		feats = ns.Keep(ns.IndexSelect(t.trainFeats, 0, ns.FromInt64On(t.trainFeats.Device(), rows, int64(len(rows)))))
		err := ns.Err()
		ns.Close()
		if err != nil {
			s.Fail(err)
			return nil, nil
		}
		s.Adopt(feats)
	} else {
		batch, err := t.loadBatch(b)
		if err != nil {
			s.Fail(err)
			return nil, nil
		}
		if batch == nil {
			return nil, nil
		}
		if len(batch.Failed) > 0 { // files changed since the check
			t.res.TrainFailed = append(t.res.TrainFailed, batch.Failed...)
			if !t.cfg.SkipBadImages {
				s.Fail(fmt.Errorf("epoch %d (epoch %d is the last saved): training %w", b.Epoch+1, b.Epoch, loader.ImageErrors(batch.Failed)))
				return nil, nil
			}
		}
		if batch.Len() == 0 {
			return nil, nil
		}
		r := int64(t.prep.Size)
		ns := s.Sub().WithGrad(torch.NoGrad).WithDevice(t.dev)
		feats = ns.Keep(t.m.ImageFeatures(ns, ns.FromFloat32On(t.dev, batch.Pixels, int64(batch.Len()), 3, r, r)))
		err = ns.Err()
		ns.Close()
		if err != nil {
			s.Fail(err)
			return nil, nil
		}
		s.Adopt(feats)
		mos = batch.MOS
	}
	pred := t.m.Head(s, feats, t.m.TextFeatures(s), true)
	return pred, s.FromFloat32On(t.dev, mos, int64(len(mos)))
}

func (t *agiqaTrainee) evalSet(part string) *evalSet {
	switch part {
	case "val":
		return t.val
	case "test":
		return t.test
	}
	return nil
}

// EvalTargets are the MOS of the part's readable images.
func (t *agiqaTrainee) EvalTargets(part string) [][]float64 {
	e := t.evalSet(part)
	if e == nil {
		return nil
	}
	out := make([][]float64, len(e.mos))
	for i, v := range e.mos {
		out[i] = []float64{v}
	}
	return out
}

// Predict scores a part's cached centre features in inference mode.
func (t *agiqaTrainee) Predict(_ context.Context, part string) ([][]float64, error) {
	e := t.evalSet(part)
	if e == nil {
		return nil, fmt.Errorf("no evaluation part %q", part)
	}
	pred, err := headScores(t.m, e.feats)
	if err != nil {
		return nil, err
	}
	out := make([][]float64, len(pred))
	for i, v := range pred {
		out[i] = []float64{v}
	}
	return out, nil
}

// SaveCheckpoint is unused: the trainee is its own train.Persister.
func (t *agiqaTrainee) SaveCheckpoint(string, optim.Optimizer, *ptfile.Dict, int) error {
	return errors.New("clipagiqa: checkpoints are written by the persister")
}

// LoadCheckpoint is unused: the trainee is its own train.Persister.
func (t *agiqaTrainee) LoadCheckpoint(string, optim.Optimizer) (any, int, error) {
	return nil, 0, errors.New("clipagiqa: checkpoints are read by the persister")
}

// Resume restores OutDir/last when TrainConfig.Resume asks for it (with
// the refusals of resumeFrom), then checks that every rank starts from the
// same epoch.
func (t *agiqaTrainee) Resume(train.State) (train.State, []train.EpochReport, bool, error) {
	var out train.State
	if t.cfg.Resume {
		if err := resumeFrom(t.m, t.opt, t.cfg, &t.st, t.res); err != nil {
			return out, nil, false, err
		}
	}
	if err := agree(t.dp, "the epoch to start from", t.st.Epoch); err != nil {
		return out, nil, false, err
	}
	if !t.res.Resumed {
		return out, nil, false, nil
	}
	t.resumed = true
	out.Epoch, out.BestEpoch, out.BestScore = t.st.Epoch, t.st.BestEpoch, t.st.BestMetric
	hist := make([]train.EpochReport, len(t.res.History))
	for i, h := range t.res.History {
		hist[i] = toTrainReport(h)
	}
	return out, hist, true, nil
}

// SaveEpoch writes metrics, best/ and last/ (saveEpoch) when OutDir is set.
func (t *agiqaTrainee) SaveEpoch(st train.State, better bool, history []train.EpochReport) error {
	if t.cfg.OutDir == "" {
		return nil
	}
	t.st.Epoch, t.st.BestEpoch, t.st.BestMetric = st.Epoch, st.BestEpoch, st.BestScore
	h := make([]EpochReport, len(history))
	for i, e := range history {
		h[i] = fromTrainReport(e)
	}
	return saveEpoch(t.m, t.opt, t.cfg.OutDir, t.st, better, h)
}

// fromTrainReport is a generic epoch report in this package's layout; a
// metric that JSON cannot hold (NaN, Inf) becomes the part's error.
func fromTrainReport(e train.EpochReport) EpochReport {
	r := EpochReport{Epoch: e.Epoch, LR: e.LR, TrainLoss: e.TrainLoss, Steps: e.Steps, TrainImages: e.TrainSamples, Best: e.Best, Seconds: e.Seconds}
	part := func(name string) (*metrics.Report, string) {
		p, ok := e.Parts[name]
		if !ok {
			return nil, ""
		}
		if p.Error != "" {
			return nil, p.Error
		}
		rep, ok := p.Outputs["score"]
		if !ok {
			return nil, ""
		}
		if _, err := json.Marshal(rep); err != nil {
			return nil, err.Error()
		}
		return &rep, ""
	}
	r.Val, r.ValError = part("val")
	r.Test, r.TestError = part("test")
	return r
}

// toTrainReport is the inverse of fromTrainReport (for resumed history).
func toTrainReport(e EpochReport) train.EpochReport {
	r := train.EpochReport{Epoch: e.Epoch, LR: e.LR, TrainLoss: e.TrainLoss, Steps: e.Steps, TrainSamples: e.TrainImages, Best: e.Best, Seconds: e.Seconds}
	add := func(name string, rep *metrics.Report, msg string) {
		if rep == nil && msg == "" {
			return
		}
		if r.Parts == nil {
			r.Parts = map[string]train.PartReport{}
		}
		p := train.PartReport{Error: msg}
		if rep != nil {
			p.Outputs = map[string]metrics.Report{"score": *rep}
		}
		r.Parts[name] = p
	}
	add("val", e.Val, e.ValError)
	add("test", e.Test, e.TestError)
	return r
}

// pairOptimizer presents the two official SGD optimisers as one
// optim.Optimizer with two groups (prompt learner, regressor); state dicts
// go through Optimizer.StateDicts (our checkpoint keeps them apart).
type pairOptimizer struct{ o *Optimizer }

func (p pairOptimizer) sgd(g int) *optim.SGD {
	if g == 0 {
		return p.o.ctx
	}
	return p.o.reg
}

func (p pairOptimizer) Step() error     { return p.o.Step() }
func (p pairOptimizer) ZeroGrad() error { return p.o.ZeroGrad() }
func (p pairOptimizer) Params() []optim.Param {
	return append(p.o.ctx.Params(), p.o.reg.Params()...)
}
func (p pairOptimizer) NumGroups() int          { return 2 }
func (p pairOptimizer) LR(g int) float64        { return p.sgd(g).LR(0) }
func (p pairOptimizer) SetLR(g int, lr float64) { p.sgd(g).SetLR(0, lr) }
func (p pairOptimizer) InitialLR(g int) float64 { return p.sgd(g).InitialLR(0) }
func (p pairOptimizer) LoadStateDict(*ptfile.Dict) error {
	return errors.New("clipagiqa: the optimiser pair loads through LoadStateDicts")
}
func (p pairOptimizer) StateDict() (*ptfile.Dict, error) {
	return nil, errors.New("clipagiqa: the optimiser pair saves through StateDicts")
}
func (p pairOptimizer) Close() {} // the Optimizer's owner closes it

// unusable reports every image of any part that could not be read, by part.
func unusable(res *TrainResult) error {
	var errs []error
	for _, p := range []struct {
		name   string
		failed loader.ImageErrors
	}{{"training", res.TrainFailed}, {"validation", res.ValFailed}, {"test", res.TestFailed}} {
		if len(p.failed) > 0 {
			errs = append(errs, fmt.Errorf("%s %w", p.name, p.failed))
		}
	}
	return errors.Join(errs...)
}

// checkAllFiles reports missing image files of every part at once.
func checkAllFiles(ds Datasets) error {
	var errs []error
	for _, d := range []*data.Dataset{ds.Train, ds.Val, ds.Test} {
		if d != nil {
			if err := d.CheckFiles(); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// checkDecodable decodes every image once (the "off" regime would otherwise
// find a bad file only during training).
func checkDecodable(ctx context.Context, samples []data.Sample, maxPixels int64, workers int) (loader.ImageErrors, error) {
	errs := make([]error, len(samples))
	err := parallelFor(ctx, len(samples), workers, func(i int) {
		_, errs[i] = imageprep.DecodeFile(samples[i].Path, maxPixels)
	})
	if err != nil {
		return nil, err
	}
	var out loader.ImageErrors
	for i, e := range errs {
		if e != nil {
			out = append(out, loader.ImageError{Index: i, Name: samples[i].Name, Path: samples[i].Path, Err: e})
		}
	}
	return out, nil
}

// parallelFor calls f(0..n-1) on up to workers goroutines.
func parallelFor(ctx context.Context, n, workers int, f func(i int)) error {
	next := make(chan int)
	done := make(chan struct{})
	for range max(min(workers, n), 1) {
		go func() {
			defer func() { done <- struct{}{} }()
			for i := range next {
				f(i)
			}
		}()
	}
	var err error
	for i := range n {
		if err = ctx.Err(); err != nil {
			break
		}
		next <- i
	}
	close(next)
	for range max(min(workers, n), 1) {
		<-done
	}
	return err
}

// buildEvalSet computes (or loads) the centre features of an evaluation set.
func buildEvalSet(ctx context.Context, m *Model, ds *data.Dataset, opts CacheOptions, res *TrainResult) (*evalSet, loader.ImageErrors, error) {
	cf, err := CacheImageFeatures(ctx, m, ds.Samples, opts)
	if err != nil {
		return nil, nil, err
	}
	res.EncodeSeconds += cf.Stats.EncodeSeconds
	var rows []float32
	var mos []float64
	for i, ok := range cf.Valid {
		if ok {
			rows = append(rows, cf.Row(i, 0)...)
			mos = append(mos, ds.Samples[i].MOS)
		}
	}
	if len(mos) == 0 {
		return nil, cf.Failed, nil
	}
	s := torch.NewScope()
	defer s.Close()
	t := s.FromFloat32On(m.CLIP.Device(), rows, int64(len(mos)), int64(cf.Embed))
	if err := s.Err(); err != nil {
		return nil, nil, err
	}
	return &evalSet{feats: s.Keep(t), mos: mos}, cf.Failed, nil
}

// evalEpoch scores an evaluation set's cached features in inference mode.
func evalEpoch(m *Model, e *evalSet) (*metrics.Report, string) {
	pred, err := headScores(m, e.feats)
	if err == nil {
		var rep metrics.Report
		if rep, err = metrics.Compute(pred, e.mos); err == nil {
			if _, err = json.Marshal(rep); err == nil { // NaN/Inf cannot go to metrics.jsonl
				return &rep, ""
			}
		}
	}
	return nil, err.Error()
}

// headScores runs the regressor on normalised image features [N, E], all
// rows at once: every epoch evaluates the same fixed set, so the per-row
// path (batch-invariant, slower) would buy nothing here.
func headScores(m *Model, feats *torch.Tensor) ([]float64, error) {
	s := torch.NewScope().WithGrad(torch.InferenceMode)
	defer s.Close()
	pred := m.head(s, feats, m.TextFeatures(s), false)
	if err := s.Err(); err != nil {
		return nil, err
	}
	return pred.Float64s()
}

// saveEpoch writes the metrics files, then OutDir/best (if better), then
// OutDir/last, each atomically: a crash leaves a consistent last epoch.
func saveEpoch(m *Model, opt *Optimizer, out string, st trainState, better bool, history []EpochReport) error {
	if err := writeMetrics(out, history); err != nil {
		return err
	}
	extra, err := json.Marshal(st)
	if err != nil {
		return err
	}
	ck, err := m.Checkpoint(opt, st.Epoch, string(extra))
	if err != nil {
		return err
	}
	if better {
		if err := ck.Save(filepath.Join(out, BestDir)); err != nil {
			return fmt.Errorf("save best: %w", err)
		}
	}
	if err := ck.Save(filepath.Join(out, LastDir)); err != nil {
		return fmt.Errorf("save last: %w", err)
	}
	return nil
}

// resumeFrom restores model, momentum, state and history from OutDir/last.
func resumeFrom(m *Model, opt *Optimizer, cfg TrainConfig, st *trainState, res *TrainResult) error {
	dir := filepath.Join(cfg.OutDir, LastDir)
	if _, err := os.Stat(filepath.Join(dir, ModelFile)); errors.Is(err, os.ErrNotExist) {
		if left := previousRun(cfg.OutDir); len(left) > 0 {
			return fmt.Errorf("%s is missing but %s holds %s from an earlier run: resuming would restart at epoch 1 and overwrite them; "+
				"to start fresh remove them or choose another output directory", filepath.Join(dir, ModelFile), cfg.OutDir, strings.Join(left, " and "))
		}
		return nil // nothing saved yet: a fresh start
	}
	ck, err := ReadCheckpoint(dir, 0)
	if err != nil {
		return err
	}
	var saved trainState
	if err := json.Unmarshal([]byte(ck.Extra), &saved); err != nil {
		return fmt.Errorf("%s holds no training state: %w", dir, err)
	}
	switch {
	case saved.Seed != st.Seed:
		return fmt.Errorf("checkpoint was trained with seed %d, not %d", saved.Seed, st.Seed)
	case saved.BatchSize != st.BatchSize:
		return fmt.Errorf("checkpoint was trained with batch size %d, not %d", saved.BatchSize, st.BatchSize)
	case saved.FeatureCache != st.FeatureCache:
		return fmt.Errorf("checkpoint was trained with feature cache %s, not %s", saved.FeatureCache, st.FeatureCache)
	case saved.BestBy != st.BestBy:
		return fmt.Errorf("checkpoint chose its best epoch by %s, this run would use %s", saved.BestBy, st.BestBy)
	}
	if d := scheduleChanges(saved, *st); len(d) > 0 && !cfg.OverrideSchedule {
		return fmt.Errorf("the schedule differs from the saved run's (%s): resuming would mix two schedules; "+
			"use the saved values, or allow it explicitly (--override-schedule, TrainConfig.OverrideSchedule)", strings.Join(d, ", "))
	}
	if err := m.Apply(ck); err != nil {
		return err
	}
	if err := opt.RestoreMomentum(m, ck); err != nil {
		return err
	}
	st.Epoch, st.BestEpoch, st.BestMetric = saved.Epoch, saved.BestEpoch, saved.BestMetric
	res.Resumed, res.BestEpoch, res.BestMetric = true, saved.BestEpoch, saved.BestMetric
	hist, err := ReadMetrics(filepath.Join(cfg.OutDir, MetricsJSON))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	for _, h := range hist {
		if h.Epoch <= saved.Epoch { // rows of an epoch whose checkpoint never landed are dropped
			res.History = append(res.History, h)
		}
	}
	res.StartEpoch = saved.Epoch
	return nil
}

// previousRun names what an earlier run left in out besides last/.
func previousRun(out string) []string {
	var left []string
	if _, err := os.Stat(filepath.Join(out, BestDir, ModelFile)); err == nil {
		left = append(left, BestDir+"/"+ModelFile)
	}
	if _, err := os.Stat(filepath.Join(out, MetricsJSON)); err == nil {
		left = append(left, MetricsJSON)
	}
	return left
}

// scheduleChanges lists the schedule settings of st that differ from the
// saved run's, as "name saved → now".
func scheduleChanges(saved, st trainState) []string {
	var d []string
	diff := func(name string, a, b float64) {
		if a != b {
			d = append(d, fmt.Sprintf("%s %v → %v", name, a, b))
		}
	}
	diff("epochs", float64(saved.Epochs), float64(st.Epochs))
	diff("lr", saved.LR, st.LR)
	if saved.HasSchedule {
		diff("warmup epochs", float64(saved.WarmupEpochs), float64(st.WarmupEpochs))
		diff("warmup lr", saved.WarmupLR, st.WarmupLR)
		diff("momentum", saved.Momentum, st.Momentum)
		diff("weight decay", saved.WeightDecay, st.WeightDecay)
	}
	return d
}

// ReadMetrics reads a metrics.jsonl written by Train.
func ReadMetrics(path string) ([]EpochReport, error) {
	return train.ReadJSONLines[EpochReport](path)
}

// csvHeader is metrics.csv's first line.
const csvHeader = "epoch,lr,train_loss,steps,train_images,val_n,val_plcc,val_srcc,val_krcc,val_rmse,val_logistic_plcc,test_n,test_plcc,test_srcc,test_krcc,test_rmse,test_logistic_plcc,best,seconds"

// writeMetrics rewrites metrics.jsonl and metrics.csv atomically.
func writeMetrics(out string, history []EpochReport) error {
	var js, cs bytes.Buffer
	cs.WriteString(csvHeader + "\n")
	f := func(x float64) string { return strconv.FormatFloat(x, 'g', -1, 64) }
	rep := func(r *metrics.Report) string {
		if r == nil {
			return ",,,,,"
		}
		return fmt.Sprintf("%d,%s,%s,%s,%s,%s", r.N, f(r.PLCC), f(r.SRCC), f(r.KRCC), f(r.RMSE), f(r.LogisticPLCC))
	}
	for _, h := range history {
		b, err := json.Marshal(h)
		if err != nil {
			return err
		}
		js.Write(b)
		js.WriteByte('\n')
		fmt.Fprintf(&cs, "%d,%s,%s,%d,%d,%s,%s,%t,%s\n", h.Epoch, f(h.LR), f(h.TrainLoss), h.Steps, h.TrainImages,
			rep(h.Val), rep(h.Test), h.Best, strconv.FormatFloat(h.Seconds, 'f', 3, 64))
	}
	if err := train.WriteFileAtomic(filepath.Join(out, MetricsJSON), js.Bytes()); err != nil {
		return err
	}
	return train.WriteFileAtomic(filepath.Join(out, MetricsCSV), cs.Bytes())
}
