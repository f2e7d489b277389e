package main

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/clipagiqa/clipagiqa/clipagiqa/clip"
	"github.com/clipagiqa/clipagiqa/clipagiqa/ipiqa"
	"github.com/clipagiqa/clipagiqa/clipagiqa/train"
	"github.com/clipagiqa/clipagiqa/clipagiqa/train/ipiqatrain"
	"github.com/clipagiqa/clipagiqa/data"
	"github.com/clipagiqa/clipagiqa/internal/regularfile"
	"github.com/clipagiqa/clipagiqa/torch"
	"github.com/clipagiqa/clipagiqa/torch/dist"
	"github.com/clipagiqa/clipagiqa/torch/nn"
	"github.com/urfave/cli/v2"
)

// Training methods (train --method).
const (
	trainMethodAGIQA = "agiqa"
	trainMethodIPIQA = "ipiqa"
)

// ipiqaTrainFlags are train's flags that only --method ipiqa reads.
func ipiqaTrainFlags() []cli.Flag {
	sc := ipiqatrain.OfficialSchedule()
	return []cli.Flag{
		&cli.StringFlag{Name: "method", Value: trainMethodAGIQA, Usage: "model to train: agiqa (CLIP-AGIQA) or ipiqa (IP-IQA on a ResNet CLIP: whole image encoder fine-tuned; official schedule by default: AdamW lr 1e-5 constant, dropout 0.5; with --device cuda, --precision fp16|bf16 trains as PyTorch AMP: fp32 weights and AdamW state, the forward under autocast, fp16 with a dynamic loss scaler)"},
		&cli.Float64Flag{Name: "head-scale", Value: sc.HeadScale, Usage: "ipiqa: learning-rate factor of the head's parameter groups"},
		&cli.Float64Flag{Name: "weight-decay", Value: sc.WeightDecay, Usage: "ipiqa: AdamW weight decay (biases and norms never decay)"},
		&cli.IntFlag{Name: "input-resolution", Value: 512, Usage: "ipiqa: square input side (images are squashed to it, as the official Resize((S,S)))"},
		&cli.IntFlag{Name: "outputs", Usage: "ipiqa: scores per image: 2 (quality, alignment; AGIQA-3K) or 1 (0: 2 for agiqa3k, else 1)"},
		&cli.BoolFlag{Name: "no-augment", Usage: "ipiqa: no random horizontal flip of training images"},
		&cli.Float64Flag{Name: "clip-grad-norm", Usage: "ipiqa: clip the gradients' 2-norm to this (0: off, as the official code)"},
		&cli.StringFlag{Name: "freezing", Value: "official", Usage: "ipiqa: text-side freezing: official (txt_pos and text_projection train, a quirk of the official code), paper (frozen) or none"},
		&cli.BoolFlag{Name: "sync-batchnorm", Usage: "ipiqa, data-parallel: the ResNet's BatchNorm layers normalise by statistics over the global batch and update their running statistics from them (SyncBatchNorm), so any world size trains the same model; without it each rank normalises its own shard and rank 0's buffers are broadcast before every forward (PyTorch DDP's default). No effect in one process"},
		&cli.StringFlag{Name: "resume-from", Usage: "ipiqa: continue from this checkpoint `FILE` (ours or an official checkpoint_N.pth, with its AdamW state); one split only"},
	}
}

// ipiqaRun is one `train --method ipiqa` invocation.
type ipiqaRun struct {
	c        *cli.Context
	protocol string
	outputs  []string
	targets  map[string][]float64 // image name -> targets (quality[, alignment])
	group    *dist.Group
	w, errw  io.Writer
}

// ipiqaSplitSummary is one split's entry in summary.json.
type ipiqaSplitSummary struct {
	Name        string             `json:"name"`
	Dir         string             `json:"dir"`
	Train       int                `json:"train_images"`
	Val         int                `json:"val_images"`
	Test        int                `json:"test_images"`
	BestEpoch   int                `json:"best_epoch"`
	BestBy      string             `json:"best_by"`
	BestLabel   string             `json:"best_label"`
	Best        *train.EpochReport `json:"best,omitempty"`
	Last        *train.EpochReport `json:"last,omitempty"`
	Interrupted bool               `json:"interrupted,omitempty"`
}

type ipiqaSummary struct {
	Method   string              `json:"method"`
	Protocol string              `json:"protocol"`
	Dataset  string              `json:"dataset"`
	CLIPFile string              `json:"clip_file"`
	Outputs  []string            `json:"outputs"`
	Options  ipiqa.Options       `json:"options"`
	Schedule ipiqatrain.Schedule `json:"schedule"`
	Epochs   int                 `json:"epochs"`
	Batch    int                 `json:"batch_size"`
	Seed     uint64              `json:"seed"`
	// WorldSize is the number of data-parallel ranks; SyncBatchNorm
	// whether their BatchNorm statistics were those of the global batch.
	WorldSize     int                 `json:"world_size"`
	SyncBatchNorm bool                `json:"sync_batchnorm,omitempty"`
	Splits        []ipiqaSplitSummary `json:"splits"`
}

func runTrainIPIQA(c *cli.Context) error {
	switch {
	case c.Int("epochs") <= 0:
		return fmt.Errorf("--epochs must be positive")
	case c.Int("batch-size") <= 0:
		return fmt.Errorf("--batch-size must be positive")
	case c.IsSet("lr") && !(c.Float64("lr") > 0):
		return fmt.Errorf("--lr must be positive")
	case c.IsSet("feature-cache") && c.String("feature-cache") != "off":
		return fmt.Errorf("--feature-cache: IP-IQA trains its image encoder, so features cannot be cached")
	}
	freezing, err := parseFreezing(c.String("freezing"))
	if err != nil {
		return err
	}
	group, err := joinTrainingGroup(c)
	if err != nil {
		return err
	}
	defer group.Close()
	if group.WorldSize() > 1 && group.IsMain() {
		if c.Bool("sync-batchnorm") {
			fmt.Fprintln(c.App.ErrWriter, "data-parallel: BatchNorm synchronised (SyncBatchNorm: statistics of the global batch)")
		} else {
			fmt.Fprintln(c.App.ErrWriter, "data-parallel: BatchNorm per rank (statistics of each rank's shard; rank 0's buffers broadcast before every forward, as DDP's default)")
		}
	}
	all, fixedTest, err := loadData(c)
	if err != nil {
		return err
	}
	if group.IsMain() { // one copy under torchrun, not one per rank
		printDataNotes(c.App.ErrWriter, "train", all.Notes)
	}
	r := &ipiqaRun{c: c, protocol: c.String("protocol"), group: group, w: c.App.Writer, errw: c.App.ErrWriter}
	if err := r.loadTargets(all, fixedTest); err != nil {
		return err
	}
	plans, err := planSplits(c, all, fixedTest)
	if err != nil {
		return err
	}
	if c.String("resume-from") != "" && len(plans) > 1 {
		return fmt.Errorf("--resume-from continues one run; the protocol has %d splits (use --resume)", len(plans))
	}
	for _, d := range []*data.Dataset{all, fixedTest} {
		if d != nil {
			if err := d.CheckFiles(); err != nil {
				return err
			}
		}
	}
	if err := applyThreads(c); err != nil {
		return err
	}
	if err := regularfile.Check(c.String("clip")); err != nil {
		return fmt.Errorf("--clip: %w", err)
	}
	sc := ipiqatrain.OfficialSchedule()
	if c.IsSet("lr") {
		sc.LR = c.Float64("lr")
	}
	sc.HeadScale, sc.WeightDecay = c.Float64("head-scale"), c.Float64("weight-decay")
	dropout := 0.5
	if c.IsSet("dropout") {
		dropout = c.Float64("dropout")
	}
	opts := ipiqa.Options{InputResolution: c.Int("input-resolution"), Outputs: len(r.outputs), Dropout: dropout, Freezing: freezing}
	sum := ipiqaSummary{Method: trainMethodIPIQA, Protocol: r.protocol, Dataset: all.Name, CLIPFile: c.String("clip"), Outputs: r.outputs,
		Options: opts, Schedule: sc, Epochs: c.Int("epochs"), Batch: c.Int("batch-size"), Seed: c.Uint64("seed"),
		WorldSize: group.WorldSize(), SyncBatchNorm: c.Bool("sync-batchnorm") && group.WorldSize() > 1}
	ctx, stop := interruptible(c)
	defer stop()
	out := c.String("out")
	for i, p := range plans {
		dir := out
		if len(plans) > 1 {
			dir = filepath.Join(out, p.Name)
		}
		fmt.Fprintf(r.w, "%s %d/%d: %s\n", p.Name, i+1, len(plans), partSizes(p.Parts))
		s, err := r.split(ctx, p, dir, opts, sc)
		if s != nil {
			sum.Splits = append(sum.Splits, *s)
		}
		if err != nil {
			if errors.Is(err, context.Canceled) {
				fmt.Fprintf(r.errw, "interrupted: %s holds the last finished epoch; continue with --resume\n", dir)
			}
			if group.IsMain() && s != nil {
				_ = writeJSONFile(filepath.Join(out, summaryFile), sum)
			}
			return err
		}
	}
	printIPIQASummary(r.w, sum)
	if !group.IsMain() {
		return nil
	}
	return writeJSONFile(filepath.Join(out, summaryFile), sum)
}

func parseFreezing(s string) (ipiqa.Freezing, error) {
	switch s {
	case "official":
		return ipiqa.FreezeOfficial, nil
	case "paper":
		return ipiqa.FreezePaper, nil
	case "none":
		return ipiqa.FreezeNone, nil
	}
	return 0, fmt.Errorf("--freezing %q: want official, paper or none", s)
}

// loadTargets fixes the outputs and every image's targets: quality and
// alignment for AGIQA-3K (both MOS columns of data.csv), else the one
// --target column.
func (r *ipiqaRun) loadTargets(all, fixedTest *data.Dataset) error {
	c := r.c
	n := c.Int("outputs")
	isAGIQA3K := strings.EqualFold(c.String("dataset"), "agiqa3k")
	if n == 0 {
		n = 1
		if isAGIQA3K {
			n = 2
		}
	}
	r.targets = map[string][]float64{}
	switch {
	case n == 2 && isAGIQA3K:
		align, _, err := data.Open(data.Source{Name: "agiqa3k", Root: c.String("root"), Table: c.String("table"), Target: data.TargetAlignment})
		if err != nil {
			return err
		}
		am := map[string]float64{}
		for _, s := range align.Samples {
			am[s.Name] = s.MOS
		}
		q, _, err := data.Open(data.Source{Name: "agiqa3k", Root: c.String("root"), Table: c.String("table"), Target: data.TargetQuality})
		if err != nil {
			return err
		}
		for _, s := range q.Samples {
			r.targets[s.Name] = []float64{s.MOS, am[s.Name]}
		}
		r.outputs = []string{"quality", "alignment"}
	case n == 1:
		for _, d := range []*data.Dataset{all, fixedTest} {
			if d != nil {
				for _, s := range d.Samples {
					r.targets[s.Name] = []float64{s.MOS}
				}
			}
		}
		r.outputs = []string{c.String("target")}
	default:
		return fmt.Errorf("--outputs %d: two outputs (quality, alignment) need --dataset agiqa3k; want 1 or 2", n)
	}
	return nil
}

// samples converts a part for the adapter. The prompt is the sample's
// Prompt (AGIQA-3K's and the csv table's prompt column, AGIQA-1K's full
// prompt), else its Group.
func (r *ipiqaRun) samples(d *data.Dataset) []ipiqatrain.Sample {
	if d == nil {
		return nil
	}
	out := make([]ipiqatrain.Sample, len(d.Samples))
	for i, s := range d.Samples {
		prompt := s.Prompt
		if prompt == "" {
			prompt = s.Group
		}
		out[i] = ipiqatrain.Sample{Name: s.Name, Path: s.Path, Prompt: prompt, Targets: r.targets[s.Name]}
	}
	return out
}

// selection is the protocol's epoch choice: on the validation part when
// there is one, else on the test part (the official protocols; labelled
// optimistic), by the sum of the correlations of every output.
func selection(protocol string, hasVal bool) train.Selection {
	if hasVal && protocol != data.ProtocolIPIQAOfficial && protocol != data.ProtocolPaper {
		return train.Selection{Part: "val", Metric: "sum_corr"}
	}
	return train.Selection{Part: "test", Metric: "sum_corr"}
}

// split trains a fresh IP-IQA (each split starts from the CLIP weights) on
// one partition.
func (r *ipiqaRun) split(ctx context.Context, p splitPlan, dir string, opts ipiqa.Options, sc ipiqatrain.Schedule) (*ipiqaSplitSummary, error) {
	c := r.c
	dev, prec, err := deviceOptions(c)
	if err != nil {
		return nil, err
	}
	seed := c.Uint64("seed")
	if err := torch.ManualSeed(seed); err != nil { // the new parameters' initialisation
		return nil, err
	}
	// Mixed precision as PyTorch AMP: fp32 weights and AdamW state, the
	// forward under autocast (deviceOptions refused half precision on CPU).
	autocast, scaler, err := ipiqatrain.MixedPrecision(prec)
	if err != nil {
		return nil, err
	}
	cm, err := clip.Load(c.String("clip"), clip.Options{Device: dev})
	if err != nil {
		return nil, err
	}
	if c.Bool("no-fused") {
		cm.DisableFused() // evaluations op by op too
	}
	m, err := ipiqa.New(cm, opts)
	if err != nil {
		cm.Close()
		return nil, fmt.Errorf("--method ipiqa: %w", err)
	}
	defer m.Close()
	parts := map[string][]ipiqatrain.Sample{}
	names := []string{}
	if p.Parts.Val != nil && p.Parts.Val.Len() > 0 {
		parts["val"], names = r.samples(p.Parts.Val), append(names, "val")
	}
	if p.Parts.Test != nil && p.Parts.Test.Len() > 0 {
		parts["test"], names = r.samples(p.Parts.Test), append(names, "test")
	}
	trainSet := r.samples(p.Parts.Train)
	aopts := ipiqatrain.Options{Augment: !c.Bool("no-augment"), Seed: seed, EvalBatch: c.Int("batch-size"), Workers: c.Int("workers"), Autocast: autocast, Scaler: scaler}
	var dp *dist.DataParallel
	if r.group.WorldSize() > 1 {
		dp = dist.NewDataParallel(r.group)
		aopts.Gather = dp // evaluation sharded across the ranks
		if c.Bool("sync-batchnorm") {
			nn.ConvertSyncBatchNorm(m.Store(), dp.SyncBatchNorm())
		}
	}
	a, err := ipiqatrain.New(m, trainSet, parts, aopts)
	if err != nil {
		return nil, err
	}
	opt, err := ipiqatrain.NewOptimizer(m, sc)
	if err != nil {
		return nil, err
	}
	defer opt.Close()
	idx := make([]int, len(trainSet))
	for i := range idx {
		idx[i] = i
	}
	sel := selection(r.protocol, parts["val"] != nil)
	if _, ok := parts[sel.Part]; !ok {
		sel = train.Selection{}
	}
	epochs, batch := c.Int("epochs"), c.Int("batch-size")
	hyper := sc.Hyper()
	hyper["clip_grad_norm"] = c.Float64("clip-grad-norm")
	cfg := train.Config{Epochs: epochs, BatchSize: batch, Seed: seed, Train: idx, Loss: train.MSE, ClipGradNorm: c.Float64("clip-grad-norm"),
		Optimizer: opt, Schedule: nil, Eval: a.EvalParts(names...), Outputs: r.outputs, Select: sel,
		OutDir: dir, Resume: c.Bool("resume"), ResumeFrom: c.String("resume-from"), Hyper: hyper, OverrideSchedule: c.Bool("override-schedule"),
		ModelConfig: ipiqatrain.OfficialConfig(m, sc, batch, epochs, seed, taskName(len(r.outputs))), Plots: true}
	if scaler != nil {
		cfg.Scaler = scaler
	}
	if dp != nil {
		cfg.Parallel = dp
		// Every rank stops after the same step: a signal is a vote carried by
		// the gradient all-reduce, so no rank is left waiting in a collective.
		agreed, cancel := context.WithCancel(context.WithoutCancel(ctx))
		defer cancel()
		outer := ctx
		dp.StopVote = func() bool { return outer.Err() != nil }
		dp.OnStop = cancel
		ctx = agreed
	}
	main := r.group.IsMain()
	bar := newProgress(r.errw, "", 0) // drawn only on a terminal
	bar.on = bar.on && main
	var lossSum float64
	cb := train.Callbacks{
		OnStep: func(s train.StepInfo) {
			if s.Step == 1 {
				lossSum = 0
				bar.start = time.Now().Add(-s.Elapsed)
			}
			lossSum += s.Loss
			bar.label, bar.total = fmt.Sprintf("%s epoch %d/%d", p.Name, s.Epoch, epochs), s.Steps
			bar.update(s.Step, fmt.Sprintf("loss %.4f", lossSum/float64(s.Step)))
		},
		OnEpoch: func(e train.EpochReport) {
			bar.clear()
			if main {
				fmt.Fprintln(r.w, ipiqaEpochLine(p.Name, epochs, e, r.outputs))
			}
		}}
	res, err := train.Run(ctx, a, cfg, cb)
	bar.clear()
	reportAllReduceIPIQA(r.errw, dp, res)
	s := &ipiqaSplitSummary{Name: p.Name, Dir: dir, Train: len(trainSet), Val: len(parts["val"]), Test: len(parts["test"])}
	if res != nil {
		s.BestEpoch, s.BestBy, s.BestLabel, s.Best, s.Last, s.Interrupted = res.BestEpoch, res.BestBy, res.BestLabel, res.Best, res.Last, res.Interrupted
		if res.Resumed && main {
			fmt.Fprintf(r.w, "%s: resumed from %s after epoch %d\n", p.Name, res.ResumedFrom, res.StartEpoch)
		}
	}
	if err != nil {
		return s, err
	}
	if main && parts["test"] != nil && res.BestEpoch > 0 {
		// Rank 0 alone: the other ranks have left, so nothing is gathered.
		a, err := ipiqatrain.New(m, trainSet, parts, ipiqatrain.Options{EvalBatch: aopts.EvalBatch, Workers: aopts.Workers})
		if err != nil {
			return s, err
		}
		if err := r.testPredictions(ctx, m, a, filepath.Join(dir, train.BestCheckpoint), filepath.Join(dir, predictionsFile), parts["test"]); err != nil {
			return s, err
		}
	}
	return s, nil
}

func taskName(outputs int) string {
	if outputs == 2 {
		return "agiqa_doublescore"
	}
	return "agiqa"
}

// testPredictions loads the chosen epoch and writes its test scores.
func (r *ipiqaRun) testPredictions(ctx context.Context, m *ipiqa.Model, a *ipiqatrain.Model, best, path string, test []ipiqatrain.Sample) error {
	if _, err := m.LoadOfficial(best, nil); err != nil {
		return err
	}
	pred, err := a.Predict(ctx, "test")
	if err != nil {
		return fmt.Errorf("test predictions: %w", err)
	}
	var b strings.Builder
	w := csv.NewWriter(&b)
	head := []string{"image", "mos", "score"}
	if len(r.outputs) == 2 {
		head = append(head, "alignment_mos", "alignment")
	}
	_ = w.Write(head)
	f := func(x float64) string { return strconv.FormatFloat(x, 'g', -1, 64) }
	for i, s := range test {
		row := []string{s.Name, f(s.Targets[0]), f(pred[i][0])}
		if len(r.outputs) == 2 {
			row = append(row, f(s.Targets[1]), f(pred[i][1]))
		}
		_ = w.Write(row)
	}
	w.Flush()
	return train.WriteFileAtomic(path, []byte(b.String()))
}

// ipiqaEpochLine is the per-epoch progress line on stdout.
func ipiqaEpochLine(split string, epochs int, e train.EpochReport, outputs []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s epoch %d/%d: loss %.4g", split, e.Epoch, epochs, e.TrainLoss)
	for _, part := range []string{"val", "test"} {
		pr, ok := e.Parts[part]
		if !ok {
			continue
		}
		if pr.Error != "" {
			fmt.Fprintf(&b, "; %s: %s", part, pr.Error)
			continue
		}
		for _, o := range outputs {
			m := pr.Outputs[o]
			fmt.Fprintf(&b, "; %s %s SRCC %.4f PLCC %.4f KRCC %.4f", part, o, m.SRCC, m.PLCC, m.KRCC)
		}
	}
	if e.Best {
		b.WriteString(" [best]")
	}
	fmt.Fprintf(&b, " (%.1fs)", e.Seconds)
	return b.String()
}

// printIPIQASummary prints the test metrics of the chosen and the last
// epoch, mean ± std over the splits, per output.
func printIPIQASummary(w io.Writer, s ipiqaSummary) {
	fmt.Fprintf(w, "\n%s protocol on %s, %d split(s); test metrics:\n", s.Protocol, s.Dataset, len(s.Splits))
	for _, which := range []string{"chosen", "last"} {
		for _, o := range s.Outputs {
			var srcc, plcc, krcc []float64
			label := ""
			for _, sp := range s.Splits {
				e := sp.Last
				if which == "chosen" {
					e, label = sp.Best, sp.BestLabel
				}
				if e == nil {
					continue
				}
				if m, ok := e.Parts["test"].Outputs[o]; ok {
					srcc, plcc, krcc = append(srcc, m.SRCC), append(plcc, m.PLCC), append(krcc, m.KRCC)
				}
			}
			if len(srcc) == 0 {
				continue
			}
			ms, ss := meanStd(srcc)
			mp, sp := meanStd(plcc)
			mk, sk := meanStd(krcc)
			name := which + " epoch"
			if label != "" {
				name += " (" + label + ")"
			}
			fmt.Fprintf(w, "  %-50s %-10s SRCC %.4f±%.4f PLCC %.4f±%.4f KRCC %.4f±%.4f\n", name, o, ms, ss, mp, sp, mk, sk)
		}
	}
}

// writeJSONFile writes v indented to path atomically.
func writeJSONFile(path string, v any) error {
	var b strings.Builder
	if err := writeJSON(&b, v); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return train.WriteFileAtomic(path, []byte(b.String()))
}
