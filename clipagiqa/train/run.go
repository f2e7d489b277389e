package train

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/clipagiqa/clipagiqa/clipagiqa/metrics"
	"github.com/clipagiqa/clipagiqa/torch"
	"github.com/clipagiqa/clipagiqa/torch/nn"
	"github.com/clipagiqa/clipagiqa/torch/optim"
)

// Result summarises a run, also an interrupted or failed one.
type Result struct {
	// History has every completed epoch, those before a resume included.
	History []EpochReport
	// StartEpoch is the number of epochs already done when Run began.
	StartEpoch  int
	Resumed     bool
	ResumedFrom string // the checkpoint file resumed from
	Interrupted bool   // ctx ended the run early
	BestEpoch   int    // 1-based; 0: none yet
	BestScore   float64
	BestBy      string // Selection.By()
	// BestLabel says how far the best epoch can be trusted: "validation",
	// "training loss", or, for a choice on the test part, "optimistic:
	// chosen on the test part".
	BestLabel string
	// Best and Last are the reports of the chosen and the final epoch.
	Best, Last *EpochReport
	// RemovedTemps are temporaries of killed writes removed at start.
	RemovedTemps []string
}

func label(sel Selection) string {
	switch sel.Part {
	case "":
		return "training loss"
	case "test":
		return "optimistic: chosen on the test part"
	}
	return "chosen on " + sel.Part
}

// Run trains m per cfg, evaluating cfg.Eval after every epoch. With OutDir
// it writes, after each epoch and in this order, metrics.jsonl/.csv (and
// plots), checkpoint_best.pth when the epoch is the best so far, and
// checkpoint_N.pth (the previous one is then removed, unless it is
// ResumeFrom), each atomically: a
// crash leaves the last completed epoch resumable. Resuming recomputes the
// sampler and reseeds libtorch from (seed, epoch), so an interrupted run
// continued with Resume ends bit-identical to an uninterrupted one.
// Cancelling ctx stops at the next step; the result has Interrupted set and
// the error wraps ctx.Err(). Bit-for-bit repeatability needs the caller's
// goroutine locked to its OS thread (runtime.LockOSThread, as the CLI
// does): libtorch numbers autograd's nodes per thread and orders the
// backward pass by those numbers. Run does not lock itself, because
// iterators (iter.Pull) made outside it must see the same lock state.
func Run(ctx context.Context, m Model, cfg Config, cb Callbacks) (*Result, error) {
	if err := cfg.check(m); err != nil {
		return nil, fmt.Errorf("train: %w", err)
	}
	dp := cfg.Parallel
	main := dp.Rank() == 0
	params := m.Trainable()
	if len(params) == 0 {
		return nil, fmt.Errorf("train: the model has no trainable parameters")
	}
	var buffers []nn.NamedParam
	if bm, ok := m.(BufferedModel); ok {
		buffers = bm.Buffers()
	}
	res := &Result{BestBy: cfg.Select.By(), BestLabel: label(cfg.Select)}
	defer res.finish()
	if cfg.OutDir != "" && main && cfg.Persist == nil {
		res.RemovedTemps = removeOrphanTemps(cfg.OutDir)
	}
	var fc FeatureCacher
	if cfg.FeatureCache {
		var ok bool
		if fc, ok = m.(FeatureCacher); !ok || !fc.EncoderFrozen() {
			return nil, fmt.Errorf("train: the feature cache needs a frozen image encoder; this model trains its encoder")
		}
	}
	st := State{Scheme: StateScheme, Epochs: cfg.Epochs, BatchSize: cfg.BatchSize, Seed: cfg.Seed, BestBy: res.BestBy, Hyper: cfg.Hyper}
	switch {
	case cfg.Persist != nil:
		saved, hist, ok, err := cfg.Persist.Resume(st)
		if err != nil {
			return nil, fmt.Errorf("train: resume: %w", err)
		}
		if ok {
			st.Epoch, st.BestEpoch, st.BestScore = saved.Epoch, saved.BestEpoch, saved.BestScore
			res.Resumed, res.History = true, hist
			res.BestEpoch, res.BestScore = st.BestEpoch, st.BestScore
		}
	case cfg.Resume || cfg.ResumeFrom != "":
		if err := resume(m, &cfg, &st, res); err != nil {
			return nil, fmt.Errorf("train: resume: %w", err)
		}
	}
	res.StartEpoch = st.Epoch
	if err := dp.BroadcastParams(append(tensors(params), tensors(buffers)...)...); err != nil {
		return res, fmt.Errorf("train: broadcast parameters from rank 0: %w", err)
	}
	if st.Epoch >= cfg.Epochs {
		return res, nil
	}
	trainIdx := cfg.Train
	if fc != nil {
		usable, err := fc.BuildFeatureCache(ctx, dp)
		if err != nil {
			return res, fmt.Errorf("train: %w", err)
		}
		if usable != nil {
			trainIdx = usable
		}
		if len(trainIdx) == 0 {
			return res, fmt.Errorf("train: no usable training samples")
		}
	}
	partNames := make([]string, len(cfg.Eval))
	for i, p := range cfg.Eval {
		partNames[i] = p.Name
	}
	ptensors := tensors(params)
	for epoch := st.Epoch; epoch < cfg.Epochs; epoch++ {
		if err := ctx.Err(); err != nil {
			res.Interrupted = true
			return res, fmt.Errorf("train: stopped before epoch %d: %w", epoch+1, err)
		}
		t0 := time.Now()
		if err := torch.ManualSeed(EpochSeed(cfg.Seed, epoch)); err != nil {
			return res, fmt.Errorf("train: %w", err)
		}
		batches := Batches(EpochOrder(cfg.Seed, epoch, trainIdx), cfg.BatchSize, cfg.KeepLastPartial)
		rep := EpochReport{Epoch: epoch + 1}
		var lossSum float64
		for k, global := range batches {
			if err := ctx.Err(); err != nil {
				res.Interrupted = true
				return res, fmt.Errorf("train: interrupted in epoch %d (epoch %d is the last saved): %w", epoch+1, epoch, err)
			}
			optim.Apply(cfg.Optimizer, cfg.Schedule, cfg.Interval.Tick(epoch, len(batches), k))
			if k == 0 {
				rep.LR = cfg.Optimizer.LR(0)
			}
			b := Batch{Epoch: epoch, Step: k, Indices: dp.Sampler(global)}
			loss, norm, used, err := step(m, &cfg, ptensors, buffers, b)
			if err != nil {
				if cerr := ctx.Err(); cerr != nil {
					res.Interrupted = true
					return res, fmt.Errorf("train: interrupted in epoch %d (epoch %d is the last saved): %w", epoch+1, epoch, cerr)
				}
				return res, fmt.Errorf("train: epoch %d step %d: %w", epoch+1, k+1, err)
			}
			if used == 0 { // nothing usable in this shard
				continue
			}
			if math.IsNaN(loss) || math.IsInf(loss, 0) {
				return res, fmt.Errorf("train: epoch %d step %d: loss is %v (diverged; lower the learning rate)", epoch+1, k+1, loss)
			}
			lossSum += loss
			rep.Steps++
			samples := len(global) - (len(b.Indices) - used) // this rank's skipped samples left out
			rep.TrainSamples += samples
			if cb.OnStep != nil {
				cb.OnStep(StepInfo{Epoch: epoch + 1, Step: k + 1, Steps: len(batches), Samples: samples, Loss: loss, LR: cfg.Optimizer.LR(0), GradNorm: norm, Elapsed: time.Since(t0)})
			}
		}
		rep.TrainLoss = lossSum / float64(max(rep.Steps, 1))
		// DDP's first forward after training (the evaluation's) broadcasts
		// rank 0's buffers too: every rank then scores with the same model.
		if err := broadcastBuffers(cfg.Parallel, buffers); err != nil {
			return res, fmt.Errorf("train: epoch %d: %w", epoch+1, err)
		}
		if err := evaluate(ctx, m, cfg, &rep); err != nil {
			return res, fmt.Errorf("train: epoch %d: %w", epoch+1, err)
		}
		better := improves(cfg.Select, st, rep)
		if better {
			st.BestEpoch, st.BestScore = epoch+1, rep.Score
		}
		rep.Best = better
		st.Epoch = epoch + 1
		st.ScheduleAt = cfg.Interval.Tick(epoch+1, len(batches), 0)
		rep.Seconds = time.Since(t0).Seconds()
		res.History = append(res.History, rep)
		res.BestEpoch, res.BestScore = st.BestEpoch, st.BestScore
		if cfg.Persist != nil && main {
			if err := cfg.Persist.SaveEpoch(st, better, res.History); err != nil {
				return res, fmt.Errorf("train: epoch %d: %w", epoch+1, err)
			}
		} else if cfg.OutDir != "" && main {
			if err := save(m, cfg, st, better, partNames, res.History); err != nil {
				return res, fmt.Errorf("train: epoch %d: %w", epoch+1, err)
			}
		}
		if cb.OnEpoch != nil {
			cb.OnEpoch(rep)
		}
	}
	return res, nil
}

// finish fills Best and Last from the history.
func (r *Result) finish() {
	r.Best, r.Last = nil, nil
	if len(r.History) == 0 {
		return
	}
	r.Last = &r.History[len(r.History)-1]
	for i := range r.History {
		if r.History[i].Epoch == r.BestEpoch {
			r.Best = &r.History[i]
		}
	}
}

// step is one optimisation step on this rank's shard: in data-parallel
// training rank 0's buffers are broadcast first (PyTorch DDP's
// broadcast_buffers=True, before every training forward), then forward,
// loss, backward, gradient averaging across ranks, unscaling and the
// inf/NaN check with Config.Scaler (a failed check skips the update),
// clipping, update. It
// returns the global batch's mean loss, the gradient norm before clipping
// and the number of samples the model used (0: the step was skipped).
func step(m Model, cfg *Config, params []*torch.Tensor, buffers []nn.NamedParam, b Batch) (loss, norm float64, used int, err error) {
	if err := broadcastBuffers(cfg.Parallel, buffers); err != nil {
		return 0, 0, 0, err
	}
	s := torch.NewScope()
	defer s.Close()
	out, target := m.TrainBatch(s, b)
	if err := s.Err(); err != nil {
		return 0, 0, 0, err
	}
	if out == nil {
		return 0, 0, 0, nil
	}
	if sh := out.Shape(); len(sh) > 0 {
		used = int(sh[0])
	}
	lt := cfg.Loss(s, out, target)
	if err := s.Err(); err != nil {
		return 0, 0, 0, fmt.Errorf("loss: %w", err)
	}
	bt := lt
	if cfg.Scaler != nil {
		bt = cfg.Scaler.ScaleLoss(s, lt)
	}
	if err := bt.Backward(); err != nil {
		return 0, 0, 0, fmt.Errorf("backward: %w", err)
	}
	if loss, err = lt.Item(); err != nil {
		return 0, 0, 0, err
	}
	if loss, err = cfg.Parallel.AverageGradients(params, loss, used); err != nil {
		return 0, 0, 0, fmt.Errorf("gradient all-reduce: %w", err)
	}
	if cfg.Scaler != nil {
		foundInf, err := cfg.Scaler.Unscale(params)
		if err != nil {
			return 0, 0, 0, err
		}
		cfg.Scaler.Update(foundInf)
		if foundInf { // skipped, as GradScaler.step: the next step runs at the smaller scale
			return loss, 0, used, cfg.Optimizer.ZeroGrad()
		}
	}
	if cfg.ClipGradNorm > 0 {
		if norm, err = torch.ClipGradNorm(params, cfg.ClipGradNorm, 2); err != nil {
			return 0, 0, 0, err
		}
	}
	if err := cfg.Optimizer.Step(); err != nil {
		return 0, 0, 0, err
	}
	if err := cfg.Optimizer.ZeroGrad(); err != nil {
		return 0, 0, 0, err
	}
	return loss, norm, used, nil
}

// LossScaler is dynamic loss scaling for fp16 training (*optim.GradScaler).
type LossScaler interface {
	// ScaleLoss returns the tensor to run backward from (loss × scale).
	ScaleLoss(s *torch.Scope, loss *torch.Tensor) *torch.Tensor
	// Unscale divides the gradients by the scale and reports non-finite ones.
	Unscale(params []*torch.Tensor) (foundInf bool, err error)
	// Update adjusts the scale after a step (skipped when foundInf).
	Update(foundInf bool)
}

// BufferBroadcaster is a Parallel that broadcasts rank 0's buffers
// coalesced (one collective per dtype, as DDP does); other Parallels get
// one BroadcastParams call with every buffer.
type BufferBroadcaster interface {
	BroadcastBuffers(m interface{ Buffers() []nn.NamedParam }) error
}

type namedBuffers []nn.NamedParam

func (b namedBuffers) Buffers() []nn.NamedParam { return b }

// broadcastBuffers overwrites every rank's buffers with rank 0's.
func broadcastBuffers(p Parallel, buffers []nn.NamedParam) error {
	if len(buffers) == 0 || p.WorldSize() == 1 {
		return nil
	}
	var err error
	if bb, ok := p.(BufferBroadcaster); ok {
		err = bb.BroadcastBuffers(namedBuffers(buffers))
	} else {
		err = p.BroadcastParams(tensors(buffers)...)
	}
	if err != nil {
		return fmt.Errorf("broadcast buffers: %w", err)
	}
	return nil
}

// evaluate scores every part and sets rep.Parts and rep.Score. A part that
// cannot be scored (no usable predictions) is reported, not fatal; a
// cancelled ctx is.
func evaluate(ctx context.Context, m Model, cfg Config, rep *EpochReport) error {
	rep.Score = math.NaN()
	if cfg.Select.Part == "" {
		rep.Score = rep.TrainLoss
	}
	if len(cfg.Eval) == 0 {
		return nil
	}
	rep.Parts = map[string]PartReport{}
	for _, p := range cfg.Eval {
		if p.Targets == nil {
			if tm, ok := m.(TargetedModel); ok {
				p.Targets = tm.EvalTargets(p.Name)
			}
			if len(p.Targets) == 0 {
				continue // nothing to evaluate (e.g. every image unreadable)
			}
		}
		reps, err := scorePart(ctx, m, p, len(cfg.Outputs))
		if ctx.Err() != nil {
			return ctx.Err()
		}
		pr := PartReport{}
		if err != nil {
			pr.Error = err.Error()
		} else {
			pr.Outputs = map[string]metrics.Report{}
			for i, r := range reps {
				pr.Outputs[cfg.Outputs[i]] = r
			}
			if p.Name == cfg.Select.Part {
				rep.Score = cfg.Select.score(reps)
			}
		}
		rep.Parts[p.Name] = pr
	}
	return nil
}

func scorePart(ctx context.Context, m Model, p EvalPart, outputs int) ([]metrics.Report, error) {
	pred, err := m.Predict(ctx, p.Name)
	if err != nil {
		return nil, err
	}
	if len(pred) != len(p.Targets) {
		return nil, fmt.Errorf("%s: %d predictions for %d samples", p.Name, len(pred), len(p.Targets))
	}
	reps := make([]metrics.Report, outputs)
	for o := range outputs {
		x, y := make([]float64, len(pred)), make([]float64, len(pred))
		for i := range pred {
			if len(pred[i]) != outputs {
				return nil, fmt.Errorf("%s: sample %d has %d outputs, want %d", p.Name, i, len(pred[i]), outputs)
			}
			x[i], y[i] = pred[i][o], p.Targets[i][o]
		}
		r, err := metrics.Compute(x, y)
		if err != nil {
			if outputs == 1 {
				return nil, err
			}
			return nil, fmt.Errorf("output %d: %w", o, err)
		}
		reps[o] = r
	}
	return reps, nil
}

// improves reports whether rep beats the best epoch so far.
func improves(sel Selection, st State, rep EpochReport) bool {
	if math.IsNaN(rep.Score) {
		return false
	}
	if st.BestEpoch == 0 {
		return true
	}
	if sel.Part == "" {
		return rep.Score < st.BestScore
	}
	return rep.Score > st.BestScore
}

// save writes metrics (and plots), then the best checkpoint (if better),
// then the epoch's checkpoint, removing the previous one last.
func save(m Model, cfg Config, st State, better bool, parts []string, history []EpochReport) error {
	if err := writeMetrics(cfg.OutDir, parts, cfg.Outputs, history); err != nil {
		return err
	}
	if cfg.Plots {
		if err := writePlots(cfg.OutDir, parts, cfg.Outputs, history); err != nil {
			return err
		}
	}
	conf, err := checkpointConfig(cfg.ModelConfig, st)
	if err != nil {
		return err
	}
	if better {
		if err := m.SaveCheckpoint(filepath.Join(cfg.OutDir, BestCheckpoint), cfg.Optimizer, conf, st.Epoch-1); err != nil {
			return fmt.Errorf("save best: %w", err)
		}
	}
	last := filepath.Join(cfg.OutDir, CheckpointName(st.Epoch-1))
	if err := m.SaveCheckpoint(last, cfg.Optimizer, conf, st.Epoch-1); err != nil {
		return fmt.Errorf("save last: %w", err)
	}
	ents, err := os.ReadDir(cfg.OutDir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		old := filepath.Join(cfg.OutDir, e.Name())
		if checkpointRE.MatchString(e.Name()) && e.Name() != filepath.Base(last) && !samePath(old, cfg.ResumeFrom) {
			if err := os.Remove(old); err != nil {
				return fmt.Errorf("remove the previous checkpoint: %w", err)
			}
		}
	}
	return nil
}

// samePath reports whether a and b name the same file (b may be empty); the
// checkpoint a run was resumed from is never removed.
func samePath(a, b string) bool {
	if b == "" {
		return false
	}
	sa, errA := os.Stat(a)
	sb, errB := os.Stat(b)
	return errA == nil && errB == nil && os.SameFile(sa, sb)
}

// resume restores model, optimizer, state and history from the newest
// checkpoint (or cfg.ResumeFrom). A checkpoint without trainer state (an
// official IP-IQA file) continues after its epoch with the current settings.
// The checkpoint is loaded before its state is checked: on error the model
// holds its values and the caller should not train it further.
func resume(m Model, cfg *Config, st *State, res *Result) error {
	path := cfg.ResumeFrom
	if path == "" {
		var err error
		if path, err = LatestCheckpoint(cfg.OutDir); err != nil {
			return err
		}
	}
	if path == "" {
		if left := previousRun(cfg.OutDir); len(left) > 0 {
			return fmt.Errorf("no checkpoint_N.pth in %s but it holds %s from an earlier run: resuming would restart at epoch 1 and overwrite them; "+
				"to start fresh remove them or choose another output directory", cfg.OutDir, strings.Join(left, " and "))
		}
		return nil // nothing saved yet: a fresh start
	}
	config, epoch, err := m.LoadCheckpoint(path, cfg.Optimizer)
	if err != nil {
		return err
	}
	saved, ok, err := stateOf(config)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if !ok { // an official checkpoint: epoch is the last completed, 0-based
		st.Epoch = epoch + 1
	} else {
		switch {
		case saved.Scheme != StateScheme:
			return fmt.Errorf("%s was trained with sampler scheme %q, not %q", path, saved.Scheme, StateScheme)
		case saved.Seed != st.Seed:
			return fmt.Errorf("%s was trained with seed %d, not %d", path, saved.Seed, st.Seed)
		case saved.BatchSize != st.BatchSize:
			return fmt.Errorf("%s was trained with batch size %d, not %d", path, saved.BatchSize, st.BatchSize)
		case saved.BestBy != st.BestBy:
			return fmt.Errorf("%s chose its best epoch by %s, this run would use %s", path, saved.BestBy, st.BestBy)
		}
		if d := hyperChanges(saved, *st); len(d) > 0 && !cfg.OverrideSchedule {
			return fmt.Errorf("the schedule differs from the saved run's (%s): resuming would mix two schedules; "+
				"use the saved values, or allow it explicitly (--override-schedule)", strings.Join(d, ", "))
		}
		st.Epoch, st.BestEpoch, st.BestScore = saved.Epoch, saved.BestEpoch, saved.BestScore
	}
	res.Resumed, res.ResumedFrom = true, path
	res.BestEpoch, res.BestScore = st.BestEpoch, st.BestScore
	hist, err := ReadMetrics(filepath.Join(cfg.OutDir, MetricsJSON))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	for _, h := range hist {
		if h.Epoch <= st.Epoch { // rows of an epoch whose checkpoint never landed are dropped
			res.History = append(res.History, h)
		}
	}
	return nil
}

// previousRun names what an earlier run left in out besides checkpoints.
func previousRun(out string) []string {
	var left []string
	for _, n := range []string{BestCheckpoint, MetricsJSON} {
		if _, err := os.Stat(filepath.Join(out, n)); err == nil {
			left = append(left, n)
		}
	}
	return left
}
