package main

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/clipagiqa/clipagiqa/clipagiqa"
	"github.com/clipagiqa/clipagiqa/clipagiqa/clip"
	"github.com/clipagiqa/clipagiqa/clipagiqa/metrics"
	"github.com/clipagiqa/clipagiqa/clipagiqa/tokenizer"
	"github.com/clipagiqa/clipagiqa/data"
	"github.com/clipagiqa/clipagiqa/internal/plot"
	"github.com/clipagiqa/clipagiqa/torch"
	"github.com/clipagiqa/clipagiqa/torch/dist"
	"github.com/urfave/cli/v2"
)

// Files a training run writes next to Train's checkpoints and metrics.
const (
	summaryFile     = "summary.json"
	skippedFile     = "skipped_images.csv"
	predictionsFile = "test_predictions.csv"
	lossPlot        = "loss.png"
	srccPlot        = "srcc.png"
	scatterPlot     = "scatter.png"
)

func modelFlags() []cli.Flag {
	d := clipagiqa.DefaultConfig()
	return []cli.Flag{
		&cli.IntFlag{Name: "n-ctx", Value: d.NCtx, Usage: "learnable context vectors before each quality word"},
		&cli.StringFlag{Name: "ctx-init", Usage: "initialise the context from these words' embeddings (e.g. \"a photo of a\"; sets n-ctx to their token count)"},
		&cli.BoolFlag{Name: "csc", Usage: "class-specific context: one context per category instead of one shared"},
		&cli.StringFlag{Name: "categories", Value: strings.Join(d.Categories, ","), Usage: "comma-separated quality words, worst to best"},
		&cli.StringFlag{Name: "class-token-position", Value: d.ClassTokenPosition, Usage: "where the quality word sits in the prompt: end, middle or front"},
		&cli.Float64Flag{Name: "dropout", Value: d.Dropout, Usage: "regressor dropout"},
	}
}

func trainingFlags(defEpochs int, defLR float64) []cli.Flag {
	t := clipagiqa.DefaultTrainConfig()
	return []cli.Flag{
		&cli.IntFlag{Name: "epochs", Value: defEpochs, Usage: "training epochs"},
		&cli.IntFlag{Name: "batch-size", Value: t.BatchSize, Usage: "images per SGD step"},
		&cli.Float64Flag{Name: "lr", Value: defLR, Usage: "base learning rate (SGD, momentum 0.9, weight decay 5e-4, cosine annealing)"},
		&cli.IntFlag{Name: "warmup-epochs", Value: t.WarmupEpochs, Usage: "epochs at the constant warm-up rate before the cosine schedule"},
		&cli.Float64Flag{Name: "warmup-lr", Value: t.WarmupLR, Usage: "warm-up learning rate"},
		&cli.StringFlag{Name: "feature-cache", Value: t.FeatureCache,
			Usage: "off: encoder on fresh random crops every epoch (the paper, slow); center: one centre view per image encoded once (fast, no augmentation); views=K: K random views encoded once, one drawn per epoch"},
		&cli.StringFlag{Name: "cache-dir", Usage: "keep encoded features on disk here across runs and splits (default OUT/feature-cache; \"-\": memory only)"},
		&cli.IntFlag{Name: "workers", Usage: "image decoding goroutines (0: one per CPU)"},
		&cli.BoolFlag{Name: "skip-bad-images", Usage: "train and evaluate without unreadable images instead of stopping (they are counted, printed and listed in OUT/" + skippedFile + ")"},
	}
}

func trainCommand() *cli.Command {
	flags := []cli.Flag{clipFlag(true)}
	flags = append(flags, datasetFlags()...)
	flags = append(flags, &cli.StringFlag{Name: "out", Value: "clipagiqa-run", Usage: "output `DIR`: checkpoints (last/, best/), metrics.jsonl/.csv, plots, summary.json"})
	flags = append(flags, trainingFlags(clipagiqa.DefaultTrainConfig().Epochs, clipagiqa.DefaultTrainConfig().LR)...)
	flags = append(flags, modelFlags()...)
	flags = append(flags, deviceFlag(), precisionFlag(),
		&cli.BoolFlag{Name: "resume", Usage: "continue each split from OUT[/splitK]/last (same seed, batch size, feature cache and schedule)"},
		&cli.BoolFlag{Name: "override-schedule", Usage: "with --resume: accept changed --epochs, --lr, --warmup-epochs, --warmup-lr (the run then mixes two schedules)"},
		threadsFlag, hostCacheFlag)
	flags = append(flags, ipiqaTrainFlags()...)
	return &cli.Command{
		Name:  "train",
		Usage: "train CLIP-AGIQA (prompt context + regressor on a frozen CLIP) and evaluate it",
		Description: "Trains the paper's model: learnable context vectors before each quality word, a\n" +
			"frozen CLIP, and an MLP regressor on the image and prompt features, with SGD and\n" +
			"MSE on MOS. Defaults are the paper's (100 epochs, batch 32, lr 0.002, one warm-up\n" +
			"epoch), except the feature cache (center; --feature-cache off is the paper's).\n\n" +
			"Protocols (--protocol):\n" +
			"  prompt-disjoint (default, honest): the data is split by prompt so that no prompt\n" +
			"    has images on two sides; a validation part of the training side chooses the\n" +
			"    epoch; the test part is only reported. --splits N repeats this on N splits\n" +
			"    and reports mean ± std. With --test-csv the test part is that table.\n" +
			"  paper: CLIP-AGIQA's official AGIQA-3K split (image-level: test prompts also\n" +
			"    appear in training). No validation; the last epoch and the best-on-test epoch\n" +
			"    (the paper's choice, optimistic) are both reported, labelled.\n" +
			"  random: image-level random splits with a random validation part.\n\n" +
			"Output (OUT, or OUT/splitK with several splits): last/ and best/ checkpoints (our\n" +
			"format; `clipagiqa export` writes the official one), metrics.jsonl and .csv per\n" +
			"epoch, loss.png and srcc.png curves, scatter.png and test_predictions.csv of the\n" +
			"selected epoch on the test part, and summary.json. A progress bar with loss and\n" +
			"ETA is drawn on stderr when it is a terminal; per-epoch lines go to stdout.\n" +
			"Ctrl-C stops after saving the last finished epoch; --resume continues.\n\n" +
			"--method ipiqa trains IP-IQA on a ResNet CLIP (image encoder fine-tuned, BatchNorm\n" +
			"in train mode) with the official defaults: AdamW lr 1e-5 constant, head groups at\n" +
			"lr x --head-scale 10, batch 32, 100 epochs, MSE on [quality, alignment] for\n" +
			"agiqa3k, dropout 0.5, 512x512 squashed inputs with random horizontal flips.\n" +
			"Protocol ipiqa-official runs the official folds (--splits up to 10), choosing the\n" +
			"epoch on the test fold by the sum of the correlations (labelled optimistic) and\n" +
			"reporting the last epoch too. Checkpoints are the official layout\n" +
			"(checkpoint_N.pth after 0-based epoch N, checkpoint_best.pth); --resume-from\n" +
			"continues an official checkpoint with its AdamW state.",
		Flags:  flags,
		Action: runTrain,
	}
}

// modelConfig reads the prompt-learner and regressor flags.
func modelConfig(c *cli.Context) clipagiqa.Config {
	cfg := clipagiqa.DefaultConfig()
	cfg.NCtx, cfg.CtxInit, cfg.CSC = c.Int("n-ctx"), c.String("ctx-init"), c.Bool("csc")
	cfg.ClassTokenPosition, cfg.Dropout = c.String("class-token-position"), c.Float64("dropout")
	cfg.Categories = nil
	for _, w := range strings.Split(c.String("categories"), ",") {
		if w = strings.TrimSpace(w); w != "" {
			cfg.Categories = append(cfg.Categories, w)
		}
	}
	return cfg
}

// trainConfig reads the optimisation flags; out is the run's directory.
func trainConfig(c *cli.Context, out string) clipagiqa.TrainConfig {
	t := clipagiqa.DefaultTrainConfig()
	t.Epochs, t.BatchSize, t.LR = c.Int("epochs"), c.Int("batch-size"), c.Float64("lr")
	t.WarmupEpochs, t.WarmupLR = c.Int("warmup-epochs"), c.Float64("warmup-lr")
	t.FeatureCache, t.Workers, t.SkipBadImages = c.String("feature-cache"), c.Int("workers"), c.Bool("skip-bad-images")
	t.Seed, t.Resume, t.OverrideSchedule = c.Uint64("seed"), c.Bool("resume"), c.Bool("override-schedule")
	switch dir := c.String("cache-dir"); dir {
	case "":
		t.CacheDir = filepath.Join(out, "feature-cache")
	case "-":
		t.CacheDir = ""
	default:
		t.CacheDir = dir
	}
	return t
}

// interruptible returns a context cancelled by SIGINT/SIGTERM, so that
// training stops cleanly after its last saved epoch.
func interruptible(c *cli.Context) (context.Context, context.CancelFunc) {
	parent := c.Context
	if parent == nil {
		parent = context.Background()
	}
	return signal.NotifyContext(parent, os.Interrupt, syscall.SIGTERM)
}

// checkTrainFlags fails fast on option errors, before any data or model is read.
func checkTrainFlags(c *cli.Context) error {
	if _, err := clipagiqa.ParseFeatureCache(c.String("feature-cache")); err != nil {
		return fmt.Errorf("--feature-cache: %w", err)
	}
	switch p := c.String("class-token-position"); p {
	case clipagiqa.PositionEnd, clipagiqa.PositionMiddle, clipagiqa.PositionFront:
	default:
		return fmt.Errorf("--class-token-position %q: want end, middle or front", p)
	}
	switch {
	case c.Int("epochs") <= 0:
		return fmt.Errorf("--epochs must be positive")
	case c.Int("batch-size") <= 0:
		return fmt.Errorf("--batch-size must be positive")
	case !(c.Float64("lr") > 0):
		return fmt.Errorf("--lr must be positive")
	}
	return nil
}

func runTrain(c *cli.Context) error {
	// One OS thread for the whole run: libtorch numbers autograd's nodes
	// per thread and orders the backward pass by them, so a goroutine that
	// moved mid-step could change the last bits of summed gradients.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	switch m := c.String("method"); m {
	case trainMethodIPIQA:
		return runTrainIPIQA(c)
	case trainMethodAGIQA:
	default:
		return fmt.Errorf("--method %q: want %s or %s", m, trainMethodAGIQA, trainMethodIPIQA)
	}
	if err := checkTrainFlags(c); err != nil {
		return err
	}
	// With torchrun's variables (WORLD_SIZE > 1) this process is one rank of
	// data-parallel training; only rank 0 prints and writes files.
	group, err := joinTrainingGroup(c)
	if err != nil {
		return err
	}
	defer group.Close()
	out := c.String("out")
	all, fixedTest, err := loadData(c)
	if err != nil {
		return err
	}
	if group.IsMain() { // one copy under torchrun, not one per rank
		printDataNotes(c.App.ErrWriter, "train", all.Notes)
	}
	plans, err := planSplits(c, all, fixedTest)
	if err != nil {
		return err
	}
	// Missing images are reported all together before the model is loaded.
	for _, d := range []*data.Dataset{all, fixedTest} {
		if d != nil {
			if err := d.CheckFiles(); err != nil {
				return err
			}
		}
	}
	cm, tok, err := loadCLIPAndTokenizer(c)
	if err != nil {
		return err
	}
	defer cm.Close()
	ctx, stop := interruptible(c)
	defer stop()
	run := trainRun{clip: cm, tok: tok, model: modelConfig(c), protocol: c.String("protocol"),
		w: c.App.Writer, errw: c.App.ErrWriter}
	sum := runSummary{Protocol: run.protocol, Dataset: all.Name, CLIP: cm.Config, CLIPFile: c.String("clip"), Model: run.model}
	for i, p := range plans {
		dir := out
		if len(plans) > 1 {
			dir = filepath.Join(out, p.Name)
		}
		run.train = trainConfig(c, out)
		run.train.OutDir = dir
		run.train.Parallel = dist.NewDataParallel(group)
		sum.Train = run.train
		fmt.Fprintf(c.App.Writer, "%s %d/%d: %s\n", p.Name, i+1, len(plans), partSizes(p.Parts))
		o, err := run.split(ctx, p, dir)
		if o != nil {
			sum.Splits = append(sum.Splits, *o)
		}
		if err != nil {
			if errors.Is(err, context.Canceled) {
				fmt.Fprintf(c.App.ErrWriter, "interrupted: %s holds the last finished epoch; continue with --resume\n", filepath.Join(dir, clipagiqa.LastDir))
			}
			if o != nil && group.IsMain() { // what was learnt about the run is kept
				_ = writeSummary(out, sum)
			}
			return err
		}
	}
	sum.finish()
	sum.print(c.App.Writer)
	if !group.IsMain() {
		return nil
	}
	if err := writeSummary(out, sum); err != nil {
		return err
	}
	if !run.train.SkipBadImages {
		return nil
	}
	n := 0
	for _, o := range sum.Splits {
		n += len(o.Unusable)
	}
	if n > 0 {
		fmt.Fprintf(c.App.Writer, "--skip-bad-images: %d unreadable image(s) were left out (see %s in each split directory)\n", n, skippedFile)
	}
	return nil
}

// writeSummary writes OUT/summary.json atomically enough for a reader: a
// complete file or the previous one.
func writeSummary(out string, sum runSummary) error {
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	var b strings.Builder
	if err := writeJSON(&b, sum); err != nil {
		return err
	}
	tmp := filepath.Join(out, "."+summaryFile+".tmp")
	if err := os.WriteFile(tmp, []byte(b.String()), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(out, summaryFile))
}

func partSizes(p clipagiqa.Datasets) string {
	n := func(d *data.Dataset) int {
		if d == nil {
			return 0
		}
		return d.Len()
	}
	return fmt.Sprintf("%d train, %d validation, %d test images", n(p.Train), n(p.Val), n(p.Test))
}

// trainRun holds what every split of a run shares.
type trainRun struct {
	clip     *clip.Model
	tok      *tokenizer.Tokenizer
	model    clipagiqa.Config
	train    clipagiqa.TrainConfig
	protocol string
	w, errw  io.Writer
	// Optional hooks of the demo: before training (the untrained model) and
	// after it (the selected epoch's parameters loaded).
	before func(ctx context.Context, m *clipagiqa.Model) error
	after  func(ctx context.Context, m *clipagiqa.Model, o *splitOutcome) error
}

// epochResult is the test (and validation) metrics of one chosen epoch.
type epochResult struct {
	Epoch int             `json:"epoch"`
	How   string          `json:"how"`
	Val   *metrics.Report `json:"val,omitempty"`
	Test  *metrics.Report `json:"test,omitempty"`
}

// splitOutcome summarises one split's training.
type splitOutcome struct {
	Name        string       `json:"name"`
	Dir         string       `json:"dir"`
	Sizes       string       `json:"sizes"`
	Epochs      int          `json:"epochs"`
	Selected    epochResult  `json:"selected"`
	Last        epochResult  `json:"last"`
	BestOnTest  *epochResult `json:"best_on_test,omitempty"`
	Seconds     float64      `json:"seconds"`
	Interrupted bool         `json:"interrupted,omitempty"`
	// Unusable lists every image the run could not read (also in SkippedList).
	Unusable    []unusableImage `json:"unusable_images"`
	SkippedList string          `json:"unusable_list,omitempty"`
}

// unusableImage is one image a run could not use, and why.
type unusableImage struct {
	Part  string `json:"part"`
	Image string `json:"image"`
	Error string `json:"error"`
}

// unusableImages collects the unreadable images of every part (each once).
func unusableImages(res *clipagiqa.TrainResult) []unusableImage {
	out := []unusableImage{}
	for _, p := range []struct {
		name   string
		failed clipagiqa.ImageErrors
	}{{"train", res.TrainFailed}, {"val", res.ValFailed}, {"test", res.TestFailed}} {
		seen := map[int]bool{}
		for _, f := range p.failed {
			if !seen[f.Index] {
				seen[f.Index] = true
				out = append(out, unusableImage{p.name, f.Name, f.Err.Error()})
			}
		}
	}
	return out
}

// reportUnusable writes the list file and prints the count and the first names.
func reportUnusable(w io.Writer, dir string, bad []unusableImage) (string, error) {
	if len(bad) == 0 {
		return "", nil
	}
	var sb strings.Builder
	cw := csv.NewWriter(&sb)
	_ = cw.Write([]string{"part", "image", "error"})
	count := map[string]int{}
	for _, b := range bad {
		_ = cw.Write([]string{b.Part, b.Image, b.Error})
		count[b.Part]++
	}
	cw.Flush()
	path := filepath.Join(dir, skippedFile)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	if err := os.WriteFile(path, []byte(sb.String()), 0o644); err != nil {
		return "", err
	}
	var names []string
	for i, b := range bad {
		if i == 10 {
			names = append(names, fmt.Sprintf("… %d more", len(bad)-i))
			break
		}
		names = append(names, b.Image)
	}
	fmt.Fprintf(w, "%d image(s) could not be used (train %d, validation %d, test %d): %s; listed in %s\n",
		len(bad), count["train"], count["val"], count["test"], strings.Join(names, ", "), path)
	return path, nil
}

// Labels of the reported epochs.
const (
	howBestVal    = "best validation SRCC"
	howLast       = "last epoch"
	howBestOnTest = "best test SRCC (optimistic: chosen on the test set, as the paper does)"
)

// split trains a fresh model on one plan and writes its plots.
func (r *trainRun) split(ctx context.Context, p splitPlan, dir string) (*splitOutcome, error) {
	start := time.Now()
	if err := torch.ManualSeed(r.train.Seed); err != nil {
		return nil, err
	}
	m, err := clipagiqa.New(r.clip, r.tok, r.model)
	if err != nil {
		return nil, err
	}
	defer m.Close()
	if r.before != nil {
		if err := r.before(ctx, m); err != nil {
			return nil, err
		}
	}
	if r.train.FeatureCache != clipagiqa.CacheOff {
		fmt.Fprintf(r.errw, "encoding image features (cache %s%s)...\n", r.train.FeatureCache, cacheNote(r.train.CacheDir))
	}
	bar := newProgress(r.errw, "", 0)
	var lossSum float64
	var stepsDone int
	var trainStart time.Time
	cb := clipagiqa.Callbacks{
		OnStep: func(s clipagiqa.StepInfo) {
			if stepsDone == 0 {
				trainStart = time.Now().Add(-s.Elapsed)
			}
			stepsDone++
			if s.Step == 1 {
				lossSum = 0
				bar.start = time.Now().Add(-s.Elapsed)
			}
			lossSum += s.Loss
			bar.label = fmt.Sprintf("epoch %d/%d", s.Epoch, r.train.Epochs)
			bar.total = s.Steps
			// The run's ETA from the mean step time of this call so far.
			left := s.Steps - s.Step + (r.train.Epochs-s.Epoch)*s.Steps
			eta := time.Duration(float64(time.Since(trainStart)) / float64(stepsDone) * float64(left))
			bar.suffix = ", run ETA " + clock(eta)
			bar.update(s.Step, fmt.Sprintf("loss %.4f", lossSum/float64(s.Step)))
		},
		OnEpoch: func(e clipagiqa.EpochReport) {
			bar.clear()
			fmt.Fprintln(r.w, epochLine(e, r.train.Epochs))
		},
	}
	res, err := clipagiqa.Train(ctx, m, p.Parts, r.train, cb)
	bar.clear()
	reportAllReduce(r.errw, r.train.Parallel, res)
	if res == nil {
		return nil, err
	}
	unusable := unusableImages(res)
	list, lerr := reportUnusable(r.w, dir, unusable)
	if lerr != nil && err == nil {
		err = lerr
	}
	if len(res.RemovedTemps) > 0 {
		fmt.Fprintf(r.w, "removed %d orphaned temporary file(s) of interrupted writes: %s\n", len(res.RemovedTemps), strings.Join(res.RemovedTemps, ", "))
	}
	o := outcome(p, dir, res)
	o.Interrupted = res.Interrupted
	o.Unusable, o.SkippedList = unusable, list
	if len(res.History) > 0 && err == nil && r.train.Parallel.IsMain() {
		// Later steps see the selected epoch's parameters.
		if o.Selected.Epoch != o.Last.Epoch {
			ck, cerr := clipagiqa.ReadCheckpoint(filepath.Join(dir, clipagiqa.BestDir), 0)
			if cerr != nil {
				return o, cerr
			}
			if cerr := m.Apply(ck); cerr != nil {
				return o, cerr
			}
		}
		err = r.plots(ctx, m, p, dir, res, o)
	}
	if r.after != nil && err == nil {
		err = r.after(ctx, m, o)
	}
	o.Seconds = time.Since(start).Seconds()
	return o, err
}

func cacheNote(dir string) string {
	if dir == "" {
		return ", in memory"
	}
	return ", on disk in " + dir
}

// epochLine formats one epoch for stdout.
func epochLine(e clipagiqa.EpochReport, epochs int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "epoch %*d/%d  loss %.4f  lr %.2e", len(strconv.Itoa(epochs)), e.Epoch, epochs, e.TrainLoss, e.LR)
	part := func(name string, rep *metrics.Report, msg string) {
		switch {
		case rep != nil:
			fmt.Fprintf(&b, "  %s SRCC %.4f PLCC %.4f", name, rep.SRCC, rep.PLCC)
		case msg != "":
			fmt.Fprintf(&b, "  %s: %s", name, msg)
		}
	}
	part("val", e.Val, e.ValError)
	part("test", e.Test, e.TestError)
	fmt.Fprintf(&b, "  %.1fs", e.Seconds)
	if e.Best {
		b.WriteString("  *")
	}
	return b.String()
}

// outcome picks the reported epochs from the history.
func outcome(p splitPlan, dir string, res *clipagiqa.TrainResult) *splitOutcome {
	o := &splitOutcome{Name: p.Name, Dir: dir, Sizes: partSizes(p.Parts), Epochs: len(res.History)}
	if len(res.History) == 0 {
		return o
	}
	at := func(ep int, how string) epochResult {
		for _, h := range res.History {
			if h.Epoch == ep {
				return epochResult{Epoch: ep, How: how, Val: h.Val, Test: h.Test}
			}
		}
		return epochResult{Epoch: ep, How: how}
	}
	last := res.History[len(res.History)-1]
	o.Last = at(last.Epoch, howLast)
	if res.BestBy == "val_srcc" && res.BestEpoch > 0 {
		o.Selected = at(res.BestEpoch, howBestVal)
	} else {
		o.Selected = o.Last
	}
	best := -1
	for i, h := range res.History {
		if h.Test != nil && (best < 0 || h.Test.SRCC > res.History[best].Test.SRCC) {
			best = i
		}
	}
	if best >= 0 {
		e := at(res.History[best].Epoch, howBestOnTest)
		o.BestOnTest = &e
	}
	return o
}

// plots writes the curves, and the scatter and predictions of the selected
// epoch (m's parameters) on the test part.
func (r *trainRun) plots(ctx context.Context, m *clipagiqa.Model, p splitPlan, dir string, res *clipagiqa.TrainResult, o *splitOutcome) error {
	if err := curvePlots(dir, res.History, p.Name); err != nil {
		return err
	}
	if p.Parts.Test == nil || p.Parts.Test.Len() == 0 {
		return nil
	}
	preds, err := cachedPredictions(ctx, m, p.Parts.Test, r.train)
	if err != nil {
		return err
	}
	title := fmt.Sprintf("%s test, epoch %d (%s)", p.Name, o.Selected.Epoch, o.Selected.How)
	if o.Selected.How == howBestVal {
		title = fmt.Sprintf("%s test, epoch %d (best validation)", p.Name, o.Selected.Epoch)
	}
	return writePredictions(dir, preds, title)
}

// curvePlots draws the training loss and the validation/test SRCC per epoch.
func curvePlots(dir string, hist []clipagiqa.EpochReport, name string) error {
	loss := make([]float64, len(hist))
	val := make([]float64, len(hist))
	test := make([]float64, len(hist))
	hasVal, hasTest := false, false
	for i, h := range hist {
		loss[i], val[i], test[i] = h.TrainLoss, math.NaN(), math.NaN()
		if h.Val != nil {
			val[i], hasVal = h.Val.SRCC, true
		}
		if h.Test != nil {
			test[i], hasTest = h.Test.SRCC, true
		}
	}
	if err := plot.Lines(filepath.Join(dir, lossPlot), map[string][]float64{"train loss (MSE)": loss}, name+": training loss", "epoch", "loss"); err != nil {
		return err
	}
	series := map[string][]float64{}
	if hasVal {
		series["validation SRCC"] = val
	}
	if hasTest {
		series["test SRCC"] = test
	}
	if len(series) == 0 {
		return nil
	}
	return plot.Lines(filepath.Join(dir, srccPlot), series, name+": SRCC per epoch", "epoch", "SRCC")
}

// cachedPredictions scores ds with m from the feature cache (which Train has
// just filled when it is on disk).
func cachedPredictions(ctx context.Context, m *clipagiqa.Model, ds *data.Dataset, t clipagiqa.TrainConfig) ([]clipagiqa.Prediction, error) {
	cf, err := clipagiqa.CacheImageFeatures(ctx, m, ds.Samples, clipagiqa.CacheOptions{Dir: t.CacheDir,
		Mode: clipagiqa.FeatureCache{Mode: clipagiqa.CacheCenter, Views: 1}, BatchSize: t.BatchSize, Workers: t.Workers})
	if err != nil {
		return nil, err
	}
	var rows []float32
	var idx []int
	preds := make([]clipagiqa.Prediction, ds.Len())
	for i, s := range ds.Samples {
		preds[i] = clipagiqa.Prediction{Name: s.Name, Path: s.Path, MOS: s.MOS}
		if cf.Valid[i] {
			rows = append(rows, cf.Row(i, 0)...)
			idx = append(idx, i)
		}
	}
	for _, f := range cf.Failed {
		preds[f.Index].Err = f.Err.Error()
	}
	if len(idx) == 0 {
		return preds, nil
	}
	s := torch.NewScope().WithGrad(torch.InferenceMode)
	defer s.Close()
	feats := s.FromFloat32On(m.CLIP.Device(), rows, int64(len(idx)), int64(cf.Embed))
	out := m.Head(s, feats, m.TextFeatures(s), false)
	if err := s.Err(); err != nil {
		return nil, err
	}
	scores, err := out.Float64s()
	if err != nil {
		return nil, err
	}
	for k, i := range idx {
		preds[i].Score = scores[k]
	}
	return preds, nil
}

// predictionsCSV renders image,mos,score,error rows, and returns the MOS
// and scores of the readable images.
func predictionsCSV(preds []clipagiqa.Prediction) ([]byte, [2][]float64) {
	var sb strings.Builder
	w := csv.NewWriter(&sb)
	_ = w.Write([]string{"image", "mos", "score", "error"})
	var ok [2][]float64
	for _, p := range preds {
		rec := []string{p.Name, strconv.FormatFloat(p.MOS, 'g', -1, 64), "", p.Err}
		if p.Err == "" {
			rec[2] = strconv.FormatFloat(p.Score, 'g', -1, 64)
			ok[0], ok[1] = append(ok[0], p.MOS), append(ok[1], p.Score)
		}
		_ = w.Write(rec)
	}
	w.Flush()
	return []byte(sb.String()), ok
}

// writePredictions writes test_predictions.csv and scatter.png.
func writePredictions(dir string, preds []clipagiqa.Prediction, title string) error {
	b, ok := predictionsCSV(preds)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, predictionsFile), b, 0o644); err != nil {
		return err
	}
	mos, score := ok[0], ok[1]
	if len(mos) == 0 {
		return nil
	}
	if rep, err := metrics.Compute(score, mos); err == nil {
		title += fmt.Sprintf(": SRCC %.3f PLCC %.3f", rep.SRCC, rep.PLCC)
	}
	return plot.Scatter(filepath.Join(dir, scatterPlot), mos, score, title, "MOS", "predicted score")
}

// runSummary is summary.json.
type runSummary struct {
	Protocol string                `json:"protocol"`
	Dataset  string                `json:"dataset"`
	CLIPFile string                `json:"clip_file"`
	CLIP     clip.Config           `json:"clip"`
	Model    clipagiqa.Config      `json:"model"`
	Train    clipagiqa.TrainConfig `json:"train"`
	Splits   []splitOutcome        `json:"splits"`
	// Mean ± std over splits of the test metrics at the selected epoch.
	Selected map[string][2]float64 `json:"selected_mean_std,omitempty"`
	Last     map[string][2]float64 `json:"last_mean_std,omitempty"`
}

func (s *runSummary) finish() {
	agg := func(pick func(o splitOutcome) *metrics.Report) map[string][2]float64 {
		var srcc, plcc, krcc, rmse []float64
		for _, o := range s.Splits {
			if r := pick(o); r != nil {
				srcc, plcc, krcc, rmse = append(srcc, r.SRCC), append(plcc, r.PLCC), append(krcc, r.KRCC), append(rmse, r.RMSE)
			}
		}
		if len(srcc) == 0 {
			return nil
		}
		out := map[string][2]float64{}
		for name, v := range map[string][]float64{"srcc": srcc, "plcc": plcc, "krcc": krcc, "rmse": rmse} {
			m, sd := meanStd(v)
			out[name] = [2]float64{m, sd}
		}
		return out
	}
	s.Selected = agg(func(o splitOutcome) *metrics.Report { return o.Selected.Test })
	s.Last = agg(func(o splitOutcome) *metrics.Report { return o.Last.Test })
}

func (s *runSummary) print(w io.Writer) {
	fmt.Fprintf(w, "\n%s protocol on %s, %d split(s); test metrics:\n", s.Protocol, s.Dataset, len(s.Splits))
	fmt.Fprintf(w, "%-8s %5s  %-8s %-8s %-8s %-8s  %s\n", "split", "epoch", "SRCC", "PLCC", "KRCC", "RMSE", "epoch chosen by")
	row := func(name string, e epochResult) {
		if e.Test == nil {
			fmt.Fprintf(w, "%-8s %5d  %-35s  %s\n", name, e.Epoch, "(no test metrics)", e.How)
			return
		}
		fmt.Fprintf(w, "%-8s %5d  %-8.4f %-8.4f %-8.4f %-8.4f  %s\n", name, e.Epoch, e.Test.SRCC, e.Test.PLCC, e.Test.KRCC, e.Test.RMSE, e.How)
	}
	for _, o := range s.Splits {
		if o.Selected.How != o.Last.How {
			row(o.Name, o.Selected)
		}
		row(o.Name, o.Last)
		if o.BestOnTest != nil {
			row(o.Name, *o.BestOnTest)
		}
	}
	if len(s.Splits) > 1 {
		ms := func(label string, m map[string][2]float64) {
			if m != nil {
				fmt.Fprintf(w, "mean ± std (%s): SRCC %.4f ± %.4f  PLCC %.4f ± %.4f  KRCC %.4f ± %.4f  RMSE %.4f ± %.4f\n", label,
					m["srcc"][0], m["srcc"][1], m["plcc"][0], m["plcc"][1], m["krcc"][0], m["krcc"][1], m["rmse"][0], m["rmse"][1])
			}
		}
		if len(s.Splits) > 0 && s.Splits[0].Selected.How != s.Splits[0].Last.How {
			ms(howBestVal, s.Selected)
		}
		ms(howLast, s.Last)
	}
}
