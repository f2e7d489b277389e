package clipagiqa

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/clipagiqa/clipagiqa/clipagiqa/imageprep"
	"github.com/clipagiqa/clipagiqa/clipagiqa/metrics"
	"github.com/clipagiqa/clipagiqa/data"
	"github.com/clipagiqa/clipagiqa/torch"
	"github.com/clipagiqa/clipagiqa/torch/dist"
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
	TrainFailed ImageErrors
	ValFailed   ImageErrors
	TestFailed  ImageErrors
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

// epochSeed derives the libtorch seed of one epoch (dropout).
func epochSeed(seed uint64, epoch int) uint64 { return mix64(seed^mix64(uint64(epoch)+1)) >> 1 }

// epochOrder is the shuffled sample order of one epoch.
func epochOrder(seed uint64, epoch int, idx []int) []int {
	rng := rand.New(rand.NewPCG(mix64(seed), mix64(uint64(epoch)^0x2545f4914f6cdd1d)))
	out := append([]int(nil), idx...)
	rng.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

// epochView picks sample i's cached view in an epoch (views=K).
func epochView(seed uint64, epoch, i, views int) int {
	if views <= 1 {
		return 0
	}
	return int(mix64(mix64(seed^0x94d049bb133111eb)^mix64(uint64(epoch))^uint64(i)*0x9e3779b97f4a7c15) % uint64(views))
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
	dp, err := setupParallel(m, opt, &cfg)
	if err != nil {
		return nil, fmt.Errorf("train: %w", err)
	}

	res := &TrainResult{FeatureCache: fc.String(), BestBy: "train_loss"}
	if ds.Val != nil && ds.Val.Len() > 0 {
		res.BestBy = "val_srcc"
	}
	res.RemovedTemps = removeOrphanTemps(cfg.OutDir, cfg.CacheDir, time.Now())
	st := trainState{Seed: cfg.Seed, Epochs: cfg.Epochs, BatchSize: cfg.BatchSize, LR: cfg.LR, FeatureCache: fc.String(), BestBy: res.BestBy, RNG: rngScheme,
		HasSchedule: true, WarmupEpochs: cfg.WarmupEpochs, WarmupLR: cfg.WarmupLR, Momentum: cfg.Momentum, WeightDecay: cfg.WeightDecay}
	if cfg.Resume {
		if err := resumeFrom(m, opt, cfg, &st, res); err != nil {
			return nil, fmt.Errorf("train: resume: %w", err)
		}
	}
	if err := agree(dp, "the epoch to start from", st.Epoch); err != nil {
		return nil, fmt.Errorf("train: resume: %w", err)
	}
	if err := dp.BroadcastParams(m.Params()...); err != nil { // every rank starts from rank 0's weights
		return nil, fmt.Errorf("train: %w", err)
	}
	if st.Epoch >= cfg.Epochs {
		return res, nil
	}

	// Features: evaluation sets always use cached centre features (the
	// encoder is frozen, so this is exact); training per FeatureCache.
	prep := imageprep.DefaultOptions(m.CLIP.Config.ImageResolution)
	copts := CacheOptions{Dir: cfg.CacheDir, Mode: FeatureCache{Mode: CacheCenter, Views: 1}, BatchSize: cfg.BatchSize, Workers: cfg.Workers, Prep: prep, Parallel: dp}
	var val, test *evalSet
	defer func() { val.close(); test.close() }()
	if ds.Val != nil && ds.Val.Len() > 0 {
		if val, res.ValFailed, err = buildEvalSet(ctx, m, ds.Val, copts, res); err != nil {
			return nil, fmt.Errorf("train: validation features: %w", err)
		}
	}
	if ds.Test != nil && ds.Test.Len() > 0 {
		if test, res.TestFailed, err = buildEvalSet(ctx, m, ds.Test, copts, res); err != nil {
			return nil, fmt.Errorf("train: test features: %w", err)
		}
	}
	train := ds.Train.Samples
	var trainFeats *torch.Tensor // [N·views, E] on the device, cached modes
	defer func() { trainFeats.Close() }()
	views := 1
	valid := make([]bool, len(train))
	if fc.Mode == CacheOff {
		for i := range valid {
			valid[i] = true
		}
		failed, err := checkDecodable(ctx, train, prep.MaxPixels, cfg.Workers)
		if err != nil {
			return nil, fmt.Errorf("train: %w", err)
		}
		for _, f := range failed {
			valid[f.Index] = false
		}
		res.TrainFailed = failed
	} else {
		co := copts
		co.Mode, co.Seed = fc, cfg.Seed
		cf, err := CacheImageFeatures(ctx, m, train, co)
		if err != nil {
			return nil, fmt.Errorf("train: %w", err)
		}
		res.Cache = &cf.Stats
		res.EncodeSeconds += cf.Stats.EncodeSeconds
		res.TrainFailed, valid, views = cf.Failed, cf.Valid, cf.Views
		if trainFeats, err = torch.FromFloat32(cf.Rows, int64(len(train)*views), int64(cf.Embed)); err == nil && dev != torch.CPU {
			s := torch.NewScope()
			moved := s.Keep(s.To(trainFeats, torch.Float32, dev))
			err = s.Err()
			s.Close()
			trainFeats.Close()
			trainFeats = moved
		}
		if err != nil {
			return nil, fmt.Errorf("train: features to device: %w", err)
		}
	}
	if err := unusable(res); err != nil && !cfg.SkipBadImages {
		return res, fmt.Errorf("train: %w (or skip them explicitly)", err)
	}
	var idx []int
	for i, ok := range valid {
		if ok {
			idx = append(idx, i)
		}
	}
	if len(idx) == 0 {
		return res, fmt.Errorf("train: no readable training images")
	}
	bs := cfg.BatchSize
	steps := len(idx) / bs // Dassl drops the last partial batch when there is a full one
	if steps == 0 {
		steps, bs = 1, len(idx)
	}
	res.StartEpoch = st.Epoch
	r := int64(prep.Size)
	ctx, endRun := stopContext(ctx, dp) // data-parallel: every rank stops after the same step
	defer endRun()

	for epoch := st.Epoch; epoch < cfg.Epochs; epoch++ {
		if err := ctx.Err(); err != nil {
			res.Interrupted = true
			return res, fmt.Errorf("train: stopped before epoch %d: %w", epoch+1, err)
		}
		t0 := time.Now()
		lr := LRAt(epoch, cfg.Epochs, cfg.WarmupEpochs, cfg.LR, cfg.WarmupLR)
		opt.SetLR(lr)
		if err := torch.ManualSeed(epochSeed(cfg.Seed, epoch)); err != nil {
			return res, fmt.Errorf("train: %w", err)
		}
		order := epochOrder(cfg.Seed, epoch, idx)[:steps*bs]
		var lossSum float64
		images := 0
		step := 0
		stepDone := func(n int, loss float64) error {
			if math.IsNaN(loss) || math.IsInf(loss, 0) {
				return fmt.Errorf("train: epoch %d step %d: loss is %v (diverged; lower the learning rate)", epoch+1, step+1, loss)
			}
			step++
			lossSum += loss
			images += n
			if cb.OnStep != nil {
				cb.OnStep(StepInfo{Epoch: epoch + 1, Step: step, Steps: steps, Images: n, Loss: loss, LR: lr, Elapsed: time.Since(t0)})
			}
			return nil
		}
		if trainFeats != nil {
			for k := range steps {
				if err := ctx.Err(); err != nil {
					res.Interrupted = true
					return res, fmt.Errorf("train: interrupted in epoch %d (epoch %d is the last saved): %w", epoch+1, epoch, err)
				}
				global := order[k*bs : (k+1)*bs]
				batch := dp.Sampler(global)
				rows := make([]int64, len(batch))
				mos := make([]float32, len(batch))
				for j, i := range batch {
					rows[j] = int64(i*views + epochView(cfg.Seed, epoch, i, views))
					mos[j] = float32(train[i].MOS)
				}
				loss, err := cachedStep(m, opt, trainFeats, rows, mos)
				if err != nil {
					return res, fmt.Errorf("train: epoch %d step %d: %w", epoch+1, k+1, err)
				}
				if err := stepDone(len(global), loss); err != nil {
					return res, err
				}
			}
		} else {
			mine, localBS := rankOrder(dp, order, bs)
			lo := LoaderOptions{Prep: prep, BatchSize: localBS, Workers: cfg.Workers, Augment: !cfg.inLoopCenter, Seed: cfg.Seed, Stream: uint64(epoch)}
			for b, err := range LoadBatches(ctx, train, mine, lo) {
				if err != nil {
					res.Interrupted = ctx.Err() != nil
					return res, fmt.Errorf("train: interrupted in epoch %d (epoch %d is the last saved): %w", epoch+1, epoch, err)
				}
				if len(b.Failed) > 0 { // files changed since the check
					res.TrainFailed = append(res.TrainFailed, b.Failed...)
					if !cfg.SkipBadImages {
						return res, fmt.Errorf("train: epoch %d (epoch %d is the last saved): training %w", epoch+1, epoch, ImageErrors(b.Failed))
					}
				}
				if b.Len() == 0 {
					continue
				}
				loss, err := encoderStep(m, opt, dev, b.Pixels, b.Len(), r, b.MOS)
				if err != nil {
					return res, fmt.Errorf("train: epoch %d step %d: %w", epoch+1, step+1, err)
				}
				if err := stepDone(b.Len()*dp.WorldSize(), loss); err != nil {
					return res, err
				}
			}
		}
		rep := EpochReport{Epoch: epoch + 1, LR: lr, Steps: step, TrainImages: images, TrainLoss: lossSum / float64(max(step, 1))}
		if val != nil {
			rep.Val, rep.ValError = evalEpoch(m, val)
		}
		if test != nil {
			rep.Test, rep.TestError = evalEpoch(m, test)
		}
		better := false
		if res.BestBy == "val_srcc" {
			better = rep.Val != nil && !math.IsNaN(rep.Val.SRCC) && (st.BestEpoch == 0 || rep.Val.SRCC > st.BestMetric)
			if better {
				st.BestMetric = rep.Val.SRCC
			}
		} else {
			better = !math.IsNaN(rep.TrainLoss) && (st.BestEpoch == 0 || rep.TrainLoss < st.BestMetric)
			if better {
				st.BestMetric = rep.TrainLoss
			}
		}
		if better {
			st.BestEpoch = epoch + 1
		}
		rep.Best = better
		st.Epoch = epoch + 1
		rep.Seconds = time.Since(t0).Seconds()
		res.History = append(res.History, rep)
		res.BestEpoch, res.BestMetric = st.BestEpoch, st.BestMetric
		if cfg.OutDir != "" && dp.IsMain() {
			if err := saveEpoch(m, opt, cfg.OutDir, st, better, res.History); err != nil {
				return res, fmt.Errorf("train: epoch %d: %w", epoch+1, err)
			}
		}
		if cb.OnEpoch != nil {
			cb.OnEpoch(rep)
		}
	}
	return res, nil
}

// unusable reports every image of any part that could not be read, by part.
func unusable(res *TrainResult) error {
	var errs []error
	for _, p := range []struct {
		name   string
		failed ImageErrors
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
func checkDecodable(ctx context.Context, samples []data.Sample, maxPixels int64, workers int) (ImageErrors, error) {
	errs := make([]error, len(samples))
	err := parallelFor(ctx, len(samples), workers, func(i int) {
		_, errs[i] = imageprep.DecodeFile(samples[i].Path, maxPixels)
	})
	if err != nil {
		return nil, err
	}
	var out ImageErrors
	for i, e := range errs {
		if e != nil {
			out = append(out, ImageError{Index: i, Name: samples[i].Name, Path: samples[i].Path, Err: e})
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
func buildEvalSet(ctx context.Context, m *Model, ds *data.Dataset, opts CacheOptions, res *TrainResult) (*evalSet, ImageErrors, error) {
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

// cachedStep runs one step on the given rows of the cached features.
func cachedStep(m *Model, opt *Optimizer, all *torch.Tensor, rows []int64, mos []float32) (float64, error) {
	s := torch.NewScope().WithGrad(torch.NoGrad)
	defer s.Close()
	f := s.IndexSelect(all, 0, s.FromInt64On(all.Device(), rows, int64(len(rows))))
	if err := s.Err(); err != nil {
		return 0, err
	}
	return m.TrainStep(opt, f, mos)
}

// encoderStep encodes a batch (no grad: the encoder is frozen) and steps.
func encoderStep(m *Model, opt *Optimizer, dev torch.Device, px []float32, n int, r int64, mos []float32) (float64, error) {
	s := torch.NewScope().WithGrad(torch.NoGrad).WithDevice(dev)
	defer s.Close()
	f := m.ImageFeatures(s, s.FromFloat32On(dev, px, int64(n), 3, r, r))
	if err := s.Err(); err != nil {
		return 0, err
	}
	return m.TrainStep(opt, f, mos)
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
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []EpochReport
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for line := 1; sc.Scan(); line++ {
		if len(bytes.TrimSpace(sc.Bytes())) == 0 {
			continue
		}
		var r EpochReport
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return nil, fmt.Errorf("%s:%d: %w", path, line, err)
		}
		out = append(out, r)
	}
	return out, sc.Err()
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
	if err := writeFileAtomic(filepath.Join(out, MetricsJSON), js.Bytes()); err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(out, MetricsCSV), cs.Bytes())
}
