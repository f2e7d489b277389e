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
	"github.com/clipagiqa/clipagiqa/internal/regularfile"
	"github.com/urfave/cli/v2"
)

type evalOutput struct {
	Method     string         `json:"method"`
	Checkpoint string         `json:"checkpoint,omitempty"`
	Epoch      int            `json:"epoch,omitempty"`
	Dataset    string         `json:"dataset"`
	Images     int            `json:"images"`
	Metrics    metrics.Report `json:"metrics"`
	// Outputs are a multi-output model's metrics, output by output (IP-IQA
	// on AGIQA-3K: quality and alignment); Metrics is the first's.
	Outputs []clipagiqa.OutputReport `json:"outputs,omitempty"`
	// Notes say what loading the dataset left out (Dataset.Notes).
	Notes  []string     `json:"notes,omitempty"`
	Errors []inputError `json:"errors"`
}

func evalCommand() *cli.Command {
	flags := append([]cli.Flag{clipFlag(true)}, checkpointFlags(false)...)
	flags = append(flags, datasetFlags()...)
	flags = append(flags,
		&cli.StringFlag{Name: "part", Value: "auto",
			Usage: "what to evaluate: all (the whole table), test (the test part of split --split-index under --protocol, as train made it), auto (--test-csv if given, else all)"},
		&cli.IntFlag{Name: "split-index", Usage: "which split's test part --part test takes (0-based)"},
		methodFlag(),
		&cli.StringFlag{Name: "prompts", Usage: "methods that score with the prompt (ipiqa): `TABLE` of prompts (CSV with columns image|name and prompt) by the dataset's image names, instead of the dataset table's own prompt column; an image it lacks is an error"},
		&cli.GenericFlag{Name: "pair", Value: &repeatable{}, Usage: "clipiqa antonym prompts as \"POSITIVE|NEGATIVE\" (repeat for more; default \"Good photo.|Bad photo.\")"},
		formatFlag(formatTable, formatJSON, formatCSV), jsonAliasFlag(),
		&cli.StringFlag{Name: "plot", Usage: "write a scatter plot (score against MOS) to this PNG `FILE`"},
		&cli.StringFlag{Name: "curves", Usage: "write the training run's SRCC curves to this PNG `FILE` (needs metrics.jsonl next to the checkpoint)"},
		&cli.StringFlag{Name: "predictions", Usage: "write per-image scores to this CSV `FILE` (image,mos,score,error)"},
		deviceFlag(), precisionFlag(), batchFlag(32), maxPixelsFlag(),
		&cli.IntFlag{Name: "workers", Usage: "image decoding goroutines (0: one per CPU)"},
		threadsFlag, hostCacheFlag)
	return &cli.Command{
		Name:  "eval",
		Usage: "evaluate a checkpoint (or zero-shot CLIP-IQA) on a dataset: PLCC, SRCC, KRCC, RMSE",
		Description: "Scores every image of the chosen part with the method's test preprocessing and\n" +
			"compares with the MOS: PLCC, SRCC (average ranks for ties), KRCC (tau-b), RMSE,\n" +
			"and PLCC after the standard 4-parameter logistic mapping (reported separately).\n" +
			"IP-IQA (--method ipiqa, --checkpoint FILE) scores each image with its prompt from the\n" +
			"dataset table (AGIQA-3K's data.csv, AGIQA-1K's AIGC_MOS_Zscore.csv or names, a csv\n" +
			"prompt column) or --prompts; a two-output checkpoint on AGIQA-3K is judged on quality\n" +
			"(mos_quality) and alignment (mos_align) separately, whatever --target says.\n" +
			"Prints a table, or JSON (\"metrics\": the first output; \"outputs\": each) or CSV\n" +
			"(metric,value; metric,quality,alignment for two outputs) with --format. Unreadable\n" +
			"images and images without a prompt are listed, left out of the metrics, and make the\n" +
			"exit status 1.",
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
	if meth.UsesPrompt { // prompts per image and possibly several outputs: the Scorer's path
		return runEvalScorer(c, meth, format)
	}
	if c.String("prompts") != "" {
		return fmt.Errorf("--prompts: method %s does not score with prompts", meth.Name)
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
	out := evalOutput{Method: method, Dataset: ds.Name, Images: ds.Len(), Notes: ds.Notes, Errors: []inputError{}}
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
	printDataNotes(c.App.ErrWriter, "eval", out.Notes)
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
	if o.Checkpoint != "" && o.Epoch > 0 {
		what = fmt.Sprintf("%s, checkpoint %s (epoch %d)", o.Method, o.Checkpoint, o.Epoch)
	} else if o.Checkpoint != "" {
		what = fmt.Sprintf("%s, checkpoint %s", o.Method, o.Checkpoint)
	}
	fmt.Fprintf(w, "%s on %s: %d of %d images\n", what, o.Dataset, o.Metrics.N, o.Images)
	if len(o.Outputs) > 1 {
		printOutputsTable(w, o.Outputs)
		return
	}
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

// printOutputsTable prints one column per output (quality, alignment).
func printOutputsTable(w io.Writer, reps []clipagiqa.OutputReport) {
	fmt.Fprintf(w, "%-14s", "metric")
	for _, r := range reps {
		fmt.Fprintf(w, " %10s", r.Output)
	}
	fmt.Fprintln(w)
	for _, row := range []struct {
		name string
		v    func(r metrics.Report) string
	}{
		{"n", func(r metrics.Report) string { return strconv.Itoa(r.N) }},
		{"PLCC", func(r metrics.Report) string { return fmt.Sprintf("%.4f", r.PLCC) }},
		{"SRCC", func(r metrics.Report) string { return fmt.Sprintf("%.4f", r.SRCC) }},
		{"KRCC", func(r metrics.Report) string { return fmt.Sprintf("%.4f", r.KRCC) }},
		{"RMSE", func(r metrics.Report) string { return fmt.Sprintf("%.4f", r.RMSE) }},
		{"logistic PLCC", func(r metrics.Report) string {
			if !r.LogisticFitted {
				return fmt.Sprintf("%.4f*", r.LogisticPLCC)
			}
			return fmt.Sprintf("%.4f", r.LogisticPLCC)
		}},
	} {
		fmt.Fprintf(w, "%-14s", row.name)
		for _, r := range reps {
			fmt.Fprintf(w, " %10s", row.v(r.Report))
		}
		fmt.Fprintln(w)
	}
	for _, r := range reps {
		if !r.LogisticFitted {
			fmt.Fprintln(w, "* logistic fit failed: equals PLCC")
			break
		}
	}
}

// writeReportCSV writes metric,value rows (n, plcc, srcc, krcc, rmse,
// logistic_plcc); for several outputs, metric,<output>,... rows.
func writeReportCSV(w io.Writer, o evalOutput) error {
	cw := csv.NewWriter(w)
	r := o.Metrics
	f := func(x float64) string { return strconv.FormatFloat(x, 'g', -1, 64) }
	if len(o.Outputs) > 1 {
		head := []string{"metric"}
		rows := [][]string{{"n"}, {"images"}, {"plcc"}, {"srcc"}, {"krcc"}, {"rmse"}, {"logistic_plcc"}}
		for _, rep := range o.Outputs {
			head = append(head, rep.Output)
			for i, v := range []string{strconv.Itoa(rep.N), strconv.Itoa(o.Images), f(rep.PLCC), f(rep.SRCC), f(rep.KRCC), f(rep.RMSE), f(rep.LogisticPLCC)} {
				rows[i] = append(rows[i], v)
			}
		}
		if err := cw.Write(head); err != nil {
			return err
		}
		if err := cw.WriteAll(rows); err != nil {
			return err
		}
		return cw.Error()
	}
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

// runEvalScorer evaluates any registered method through its Scorer (IP-IQA:
// its own preprocessing, a prompt per image, one report per output).
func runEvalScorer(c *cli.Context, m clipagiqa.Method, format string) error {
	ckPath := c.String("checkpoint")
	if len(repeatableValues(c, "pair")) > 0 {
		return fmt.Errorf("--pair is for --method %s", clipagiqa.MethodCLIPIQA)
	}
	if c.String("prompts") != "" && !m.UsesPrompt {
		return fmt.Errorf("--prompts: method %s does not score with prompts", m.Name)
	}
	if c.String("curves") != "" {
		return fmt.Errorf("--curves is for --method %s runs (metrics.jsonl); an %s run directory has summary.json and metrics files of its own", clipagiqa.MethodAGIQA, m.Name)
	}
	batch := c.Int("batch-size")
	if batch <= 0 {
		return fmt.Errorf("--batch-size must be positive (got %d)", batch)
	}
	var prompts *data.PromptTable
	if p := c.String("prompts"); p != "" {
		t, err := data.ReadPromptTable(p)
		if err != nil {
			return fmt.Errorf("--prompts: %w", err)
		}
		prompts = t
	}
	ds, err := evalPart(c)
	if err != nil {
		return err
	}
	if c.String("clip") != "" {
		if err := regularfile.Check(c.String("clip")); err != nil {
			return fmt.Errorf("--clip: %w", err)
		}
	}
	dev, prec, err := deviceOptions(c)
	if err != nil {
		return err
	}
	opts := []clipagiqa.ScorerOption{clipagiqa.WithMethod(m.Name), clipagiqa.WithEpoch(c.Int("epoch")),
		clipagiqa.WithDevice(dev), clipagiqa.WithPrecision(prec), clipagiqa.WithMaxBatch(batch),
		clipagiqa.WithMaxPixels(c.Int64("max-pixels")), clipagiqa.WithThreads(c.Int("threads")), clipagiqa.WithFused(!c.Bool("no-fused"))}
	if w := c.Int("workers"); w > 0 {
		opts = append(opts, clipagiqa.WithPreprocessWorkers(w))
	}
	sc, err := clipagiqa.LoadScorer(c.String("clip"), ckPath, opts...)
	if err != nil {
		return err
	}
	defer sc.Close()
	var eo clipagiqa.EvalOptions
	if prompts != nil {
		eo.Prompt = func(s data.Sample) (string, error) {
			p, ok := prompts.Lookup(s.Name)
			if !ok {
				return "", fmt.Errorf("no prompt for this image in %s", prompts.Source)
			}
			if p == "" {
				return "", fmt.Errorf("empty prompt for this image in %s", prompts.Source)
			}
			return p, nil
		}
	}
	ctx, stop := interruptible(c)
	defer stop()
	reps, preds, err := clipagiqa.EvaluateScorer(ctx, sc, ds, eo)
	if err != nil && preds == nil {
		return err
	}
	out := evalOutput{Method: m.Name, Checkpoint: ckPath, Dataset: ds.Name, Images: ds.Len(), Notes: ds.Notes, Errors: []inputError{}}
	for _, p := range preds {
		if p.Err != "" {
			out.Errors = append(out.Errors, inputError{p.Name, p.Err})
		}
	}
	if err != nil {
		printEvalErrors(c.App.ErrWriter, out.Errors)
		return err
	}
	out.Metrics = reps[0].Report
	if len(sc.Outputs()) > 1 {
		out.Outputs = reps
	}
	if err := writeEvalOutput(c, format, out); err != nil {
		return err
	}
	if f := c.String("predictions"); f != "" {
		if err := os.WriteFile(f, outputPredictionsCSV(sc.Outputs(), preds), 0o644); err != nil {
			return err
		}
	}
	if f := c.String("plot"); f != "" {
		var mos, score []float64
		for _, p := range preds {
			if p.Err == "" {
				truth := p.MOS
				if r, ok := p.Ratings[sc.Outputs()[0]]; ok {
					truth = r
				}
				mos, score = append(mos, truth), append(score, p.Score)
			}
		}
		title := fmt.Sprintf("%s %s on %s: SRCC %.3f PLCC %.3f", m.Name, reps[0].Output, ds.Name, reps[0].SRCC, reps[0].PLCC)
		if err := plot.Scatter(f, mos, score, title, "MOS", "predicted "+reps[0].Output); err != nil {
			return err
		}
	}
	printDataNotes(c.App.ErrWriter, "eval", out.Notes)
	printEvalErrors(c.App.ErrWriter, out.Errors)
	if len(out.Errors) > 0 {
		return fmt.Errorf("eval: %d image(s) could not be scored (unreadable or without a prompt; left out of the metrics)", len(out.Errors))
	}
	return nil
}

// writeEvalOutput prints the report in the chosen format.
func writeEvalOutput(c *cli.Context, format string, out evalOutput) error {
	switch format {
	case formatJSON:
		return writeJSON(c.App.Writer, out)
	case formatCSV:
		return writeReportCSV(c.App.Writer, out)
	default:
		printReport(c.App.Writer, out)
		return nil
	}
}

// printDataNotes says on stderr what loading the dataset left out
// (Dataset.Notes), so a run never drops rows silently.
func printDataNotes(w io.Writer, command string, notes []string) {
	for _, n := range notes {
		fmt.Fprintf(w, "clipagiqa %s: note: %s\n", command, n)
	}
}

// outputPredictionsCSV writes image,mos,score,error rows for one output;
// for several, the first output's rating and score, then <output>_mos and
// <output> for each further one (empty where the dataset has no rating).
func outputPredictionsCSV(outs []string, preds []clipagiqa.Prediction) []byte {
	if len(outs) < 2 {
		b, _ := predictionsCSV(preds)
		return b
	}
	var sb strings.Builder
	w := csv.NewWriter(&sb)
	head := []string{"image", "mos", "score"}
	for _, o := range outs[1:] {
		head = append(head, o+"_mos", o)
	}
	_ = w.Write(append(head, "error"))
	f := func(x float64) string { return strconv.FormatFloat(x, 'g', -1, 64) }
	for _, p := range preds {
		rec := []string{p.Name}
		for j, o := range outs {
			r, s := "", ""
			if v, ok := p.Ratings[o]; ok {
				r = f(v)
			} else if j == 0 {
				r = f(p.MOS)
			}
			if p.Err == "" {
				s = f(p.Outputs[o])
			}
			rec = append(rec, r, s)
		}
		_ = w.Write(append(rec, p.Err))
	}
	w.Flush()
	return []byte(sb.String())
}
