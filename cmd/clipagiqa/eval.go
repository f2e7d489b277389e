package main

import (
	"encoding/csv"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/clipagiqa/clipagiqa/clipagiqa"
	"github.com/clipagiqa/clipagiqa/clipagiqa/metrics"
	"github.com/clipagiqa/clipagiqa/data"
	"github.com/clipagiqa/clipagiqa/internal/plot"
	"github.com/urfave/cli/v2"
)

type evalOutput struct {
	Method     string         `json:"method"`
	Checkpoint string         `json:"checkpoint,omitempty"`
	Epoch      int            `json:"epoch,omitempty"`
	Dataset    string         `json:"dataset"`
	Images     int            `json:"images"`
	Metrics    metrics.Report `json:"metrics"`
	Errors     []inputError   `json:"errors"`
}

func evalCommand() *cli.Command {
	flags := append([]cli.Flag{clipFlag(true)}, checkpointFlags(false)...)
	flags = append(flags, datasetFlags()...)
	flags = append(flags,
		&cli.StringFlag{Name: "part", Value: "auto",
			Usage: "what to evaluate: all (the whole table), test (the test part of split --split-index under --protocol, as train made it), auto (--test-csv if given, else all)"},
		&cli.IntFlag{Name: "split-index", Usage: "which split's test part --part test takes (0-based)"},
		methodFlag(),
		&cli.GenericFlag{Name: "pair", Value: &repeatable{}, Usage: "clipiqa antonym prompts as \"POSITIVE|NEGATIVE\" (repeat for more; default \"Good photo.|Bad photo.\")"},
		formatFlag(formatTable, formatJSON, formatCSV), jsonAliasFlag(),
		&cli.StringFlag{Name: "plot", Usage: "write a scatter plot (score against MOS) to this PNG `FILE`"},
		&cli.StringFlag{Name: "curves", Usage: "write the training run's SRCC curves to this PNG `FILE` (needs metrics.jsonl next to the checkpoint)"},
		&cli.StringFlag{Name: "predictions", Usage: "write per-image scores to this CSV `FILE` (image,mos,score,error)"},
		deviceFlag(), precisionFlag(), batchFlag(32), maxPixelsFlag(),
		&cli.IntFlag{Name: "workers", Usage: "image decoding goroutines (0: one per CPU)"},
		threadsFlag)
	return &cli.Command{
		Name:  "eval",
		Usage: "evaluate a checkpoint (or zero-shot CLIP-IQA) on a dataset: PLCC, SRCC, KRCC, RMSE",
		Description: "Scores every image of the chosen part with CLIP's test preprocessing and\n" +
			"compares with the MOS: PLCC, SRCC (average ranks for ties), KRCC (tau-b), RMSE,\n" +
			"and PLCC after the standard 4-parameter logistic mapping (reported separately).\n" +
			"Prints a table, or JSON or CSV (metric,value) with --format. Unreadable images are listed, left out of the\n" +
			"metrics, and make the exit status 1.",
		Flags:  flags,
		Action: runEval,
	}
}

// evalPart picks the dataset part --part names.
func evalPart(c *cli.Context) (*data.Dataset, error) {
	all, fixedTest, err := loadData(c)
	if err != nil {
		return nil, err
	}
	switch part := c.String("part"); part {
	case "auto":
		if fixedTest != nil {
			return fixedTest, nil
		}
		return all, nil
	case "all":
		return all, nil
	case "test":
		plans, err := planSplits(c, all, fixedTest)
		if err != nil {
			return nil, err
		}
		i := c.Int("split-index")
		if i < 0 || i >= len(plans) {
			return nil, fmt.Errorf("--split-index %d: the protocol made %d split(s)", i, len(plans))
		}
		return plans[i].Parts.Test, nil
	default:
		return nil, fmt.Errorf("--part %q: want auto, all or test", part)
	}
}

func runEval(c *cli.Context) error {
	format, err := outputFormat(c, formatTable, formatJSON, formatCSV)
	if err != nil {
		return err
	}
	meth, err := lookupMethod(c)
	if err != nil {
		return err
	}
	method := meth.Name
	ckDir := c.String("checkpoint")
	if err := requireCheckpoint(meth, ckDir); err != nil {
		return err
	}
	pairs, err := parsePairs(repeatableValues(c, "pair"))
	if err != nil {
		return err
	}
	ds, err := evalPart(c)
	if err != nil {
		return err
	}
	loadHead, err := meth.Open(ckDir, c.Int("epoch")) // before CLIP: its errors are the likelier ones
	if err != nil {
		return err
	}
	cm, tok, err := loadCLIPAndTokenizer(c)
	if err != nil {
		return err
	}
	defer cm.Close()
	head, err := loadHead(cm, tok)
	if err != nil {
		return err
	}
	defer head.Close()
	if pairs != nil {
		pp, ok := head.(clipagiqa.PromptPairsHead)
		if !ok {
			return fmt.Errorf("--pair: method %s is not scored against prompt pairs", method)
		}
		if err := pp.SetPromptPairs(pairs); err != nil {
			return fmt.Errorf("--pair: %w", err)
		}
	}
	ctx, stop := interruptible(c)
	defer stop()
	opts := clipagiqa.EvalOptions{BatchSize: c.Int("batch-size"), Workers: c.Int("workers"), MaxPixels: c.Int64("max-pixels")}
	out := evalOutput{Method: method, Dataset: ds.Name, Images: ds.Len(), Errors: []inputError{}}
	if d, ok := head.(clipagiqa.Describer); ok {
		out.Checkpoint, out.Epoch = d.Describe().Checkpoint, d.Describe().Epoch
	}
	rep, preds, err := clipagiqa.EvaluateHead(ctx, cm, head, ds, opts)
	if err != nil && preds == nil {
		return err
	}
	for _, p := range preds {
		if p.Err != "" {
			out.Errors = append(out.Errors, inputError{p.Name, p.Err})
		}
	}
	if err != nil { // metrics could not be computed (too few images, constant scores)
		printEvalErrors(c.App.ErrWriter, out.Errors)
		return err
	}
	out.Metrics = rep
	switch format {
	case formatJSON:
		if err := writeJSON(c.App.Writer, out); err != nil {
			return err
		}
	case formatCSV:
		if err := writeReportCSV(c.App.Writer, out); err != nil {
			return err
		}
	default:
		printReport(c.App.Writer, out)
	}
	if f := c.String("predictions"); f != "" {
		if err := writePredictionsCSV(f, preds); err != nil {
			return err
		}
	}
	if f := c.String("plot"); f != "" {
		var mos, score []float64
		for _, p := range preds {
			if p.Err == "" {
				mos, score = append(mos, p.MOS), append(score, p.Score)
			}
		}
		title := fmt.Sprintf("%s on %s: SRCC %.3f PLCC %.3f", method, ds.Name, rep.SRCC, rep.PLCC)
		if err := plot.Scatter(f, mos, score, title, "MOS", "predicted score"); err != nil {
			return err
		}
	}
	if f := c.String("curves"); f != "" {
		if err := runCurves(ckDir, f); err != nil {
			return err
		}
	}
	printEvalErrors(c.App.ErrWriter, out.Errors)
	if len(out.Errors) > 0 {
		return fmt.Errorf("eval: %d image(s) could not be read (left out of the metrics)", len(out.Errors))
	}
	return nil
}

func parsePairs(vals []string) ([][2]string, error) {
	var out [][2]string
	for _, v := range vals {
		pos, neg, ok := strings.Cut(v, "|")
		if !ok || strings.TrimSpace(pos) == "" || strings.TrimSpace(neg) == "" {
			return nil, fmt.Errorf("--pair %q: want \"POSITIVE|NEGATIVE\"", v)
		}
		out = append(out, [2]string{strings.TrimSpace(pos), strings.TrimSpace(neg)})
	}
	return out, nil // nil: the library's default pair
}

func printEvalErrors(w io.Writer, errs []inputError) {
	for _, e := range errs {
		fmt.Fprintf(w, "clipagiqa eval: %s: %s\n", e.Image, e.Error)
	}
}

func printReport(w io.Writer, o evalOutput) {
	what := o.Method
	if o.Checkpoint != "" {
		what = fmt.Sprintf("%s, checkpoint %s (epoch %d)", o.Method, o.Checkpoint, o.Epoch)
	}
	fmt.Fprintf(w, "%s on %s: %d of %d images\n", what, o.Dataset, o.Metrics.N, o.Images)
	r := o.Metrics
	fmt.Fprintf(w, "%-14s %s\n", "metric", "value")
	fmt.Fprintf(w, "%-14s %.4f\n", "PLCC", r.PLCC)
	fmt.Fprintf(w, "%-14s %.4f\n", "SRCC", r.SRCC)
	fmt.Fprintf(w, "%-14s %.4f\n", "KRCC", r.KRCC)
	fmt.Fprintf(w, "%-14s %.4f\n", "RMSE", r.RMSE)
	note := ""
	if !r.LogisticFitted {
		note = " (fit failed: equals PLCC)"
	}
	fmt.Fprintf(w, "%-14s %.4f%s\n", "logistic PLCC", r.LogisticPLCC, note)
}

// writeReportCSV writes metric,value rows (n, plcc, srcc, krcc, rmse,
// logistic_plcc).
func writeReportCSV(w io.Writer, o evalOutput) error {
	cw := csv.NewWriter(w)
	r := o.Metrics
	f := func(x float64) string { return strconv.FormatFloat(x, 'g', -1, 64) }
	for _, rec := range [][]string{{"metric", "value"}, {"n", strconv.Itoa(r.N)}, {"images", strconv.Itoa(o.Images)},
		{"plcc", f(r.PLCC)}, {"srcc", f(r.SRCC)}, {"krcc", f(r.KRCC)}, {"rmse", f(r.RMSE)}, {"logistic_plcc", f(r.LogisticPLCC)}} {
		if err := cw.Write(rec); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}

// writePredictionsCSV writes image,mos,score,error rows.
func writePredictionsCSV(path string, preds []clipagiqa.Prediction) error {
	b, _ := predictionsCSV(preds)
	return os.WriteFile(path, b, 0o644)
}

// runCurves plots the SRCC curves of the run a checkpoint belongs to
// (metrics.jsonl in the checkpoint dir or its parent).
func runCurves(ckDir, out string) error {
	for _, d := range []string{ckDir, filepath.Dir(filepath.Clean(ckDir))} {
		p := filepath.Join(d, clipagiqa.MetricsJSON)
		if _, err := os.Stat(p); err != nil {
			continue
		}
		hist, err := clipagiqa.ReadMetrics(p)
		if err != nil {
			return err
		}
		if len(hist) == 0 {
			return fmt.Errorf("%s is empty", p)
		}
		return curvesTo(out, hist)
	}
	return fmt.Errorf("--curves: no %s next to %s (not a training run directory)", clipagiqa.MetricsJSON, ckDir)
}

// curvesTo draws loss and SRCC curves into one PNG (SRCC and loss share the
// axis; the loss is scaled to its first epoch so both fit).
func curvesTo(path string, hist []clipagiqa.EpochReport) error {
	series := map[string][]float64{}
	loss := make([]float64, len(hist))
	for i, h := range hist {
		loss[i] = h.TrainLoss / hist[0].TrainLoss
		if h.Val != nil {
			if series["validation SRCC"] == nil {
				series["validation SRCC"] = nanSlice(len(hist))
			}
			series["validation SRCC"][i] = h.Val.SRCC
		}
		if h.Test != nil {
			if series["test SRCC"] == nil {
				series["test SRCC"] = nanSlice(len(hist))
			}
			series["test SRCC"][i] = h.Test.SRCC
		}
	}
	series["train loss / first epoch's"] = loss
	return plot.Lines(path, series, "training run", "epoch", "value")
}

func nanSlice(n int) []float64 {
	out := make([]float64, n)
	for i := range out {
		out[i] = math.NaN()
	}
	return out
}
