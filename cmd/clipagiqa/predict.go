package main

import (
	"context"
	"encoding/csv"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/clipagiqa/clipagiqa/clipagiqa"
	"github.com/clipagiqa/clipagiqa/clipagiqa/clip"
	"github.com/clipagiqa/clipagiqa/data"
	"github.com/clipagiqa/clipagiqa/internal/regularfile"
	"github.com/urfave/cli/v2"
)

type predictModel struct {
	Method     string      `json:"method"`
	CLIPFile   string      `json:"clip_file"`
	Checkpoint string      `json:"checkpoint,omitempty"`
	Epoch      int         `json:"epoch,omitempty"`
	CLIP       clip.Config `json:"clip"`
}

type predictResult struct {
	Image string  `json:"image"`
	Score float64 `json:"score"`
	// Alignment is the image–prompt alignment of a 2-output IP-IQA checkpoint.
	Alignment *float64 `json:"alignment,omitempty"`
}

type predictOutput struct {
	Model   predictModel    `json:"model"`
	Results []predictResult `json:"results"`
	Errors  []inputError    `json:"errors"`
	Shard   *shardInfo      `json:"shard,omitempty"`
}

// methodFlag lists the registered scoring methods (clipagiqa.RegisterMethod).
func methodFlag() *cli.StringFlag {
	var parts []string
	for _, name := range clipagiqa.MethodNames() {
		if m, err := clipagiqa.LookupMethod(name); err == nil {
			parts = append(parts, name+": "+m.Description)
		}
	}
	return &cli.StringFlag{Name: "method", Value: clipagiqa.MethodAGIQA, Usage: strings.Join(parts, "; ")}
}

// lookupMethod resolves --method in the registry.
func lookupMethod(c *cli.Context) (clipagiqa.Method, error) {
	m, err := clipagiqa.LookupMethod(c.String("method"))
	if err != nil {
		return m, fmt.Errorf("--method: %w", err)
	}
	return m, nil
}

// requireCheckpoint refuses a missing --checkpoint for a method that needs
// one, before anything loads.
func requireCheckpoint(m clipagiqa.Method, checkpoint string) error {
	if !m.NeedsCheckpoint || checkpoint != "" {
		return nil
	}
	var without []string
	for _, name := range clipagiqa.MethodNames() {
		if o, err := clipagiqa.LookupMethod(name); err == nil && !o.NeedsCheckpoint {
			without = append(without, name)
		}
	}
	hint := ""
	if len(without) > 0 {
		hint = fmt.Sprintf(" (or use --method %s)", strings.Join(without, " or "))
	}
	return fmt.Errorf("--checkpoint is required with --method %s: it needs a checkpoint%s", m.Name, hint)
}

func checkpointFlags(required bool) []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "checkpoint", Required: required,
			Usage: "checkpoint `DIR` (agiqa): ours (model.pt inside) or an official CLIP-AGIQA output dir (prompt_learner/ + regression/), auto-detected; " +
				"`FILE` (ipiqa): an official IP-IQA checkpoint_best.pth (fp32 or fp16) or one written by export --format official"},
		&cli.IntFlag{Name: "epoch", Usage: "epoch of an official checkpoint dir (0: the highest present)"},
	}
}

func predictCommand() *cli.Command {
	flags := append([]cli.Flag{clipFlag(false)}, checkpointFlags(false)...) // --clip checked in runPredict: --merge needs none
	flags = append(flags, methodFlag(), promptFlag(), promptsFlag(),
		formatFlag(formatJSON, formatCSV),
		deviceFlag(), precisionFlag(), batchFlag(32), maxPixelsFlag(), threadsFlag, hostCacheFlag)
	flags = append(flags, predictShardFlags()...)
	return &cli.Command{
		Name:      "predict",
		Usage:     "score images with a trained CLIP-AGIQA checkpoint (or zero-shot CLIP-IQA)",
		ArgsUsage: "IMAGE|DIR...",
		Description: "Scores each image (JPEG, PNG, GIF, BMP, WebP; directories are expanded to their\n" +
			"image files, recursively) after CLIP's test preprocessing. The score is the\n" +
			"predicted MOS on the training set's scale (agiqa) or the probability of \"Good\n" +
			"photo.\" (clipiqa). IP-IQA (ipiqa) scores each image with the prompt it was\n" +
			"generated from, after its own preprocessing (squashed to the checkpoint's input\n" +
			"size): give --prompt TEXT for all images or --prompts TABLE (CSV image,prompt;\n" +
			"names relative to the directory given, or as given); an image without a prompt\n" +
			"is an error of its own. Its score is the predicted quality, and a 2-output\n" +
			"checkpoint (AGIQA-3K) adds \"alignment\".\n\n" +
			"JSON: {\"model\": {...}, \"results\": [{\"image\": \"<path as given>\", \"score\": x[, \"alignment\": y]}],\n" +
			"       \"errors\": [{\"image\", \"error\"}]}\n" +
			"CSV:  image,score[,alignment] (errors on stderr).\n\n" +
			"Unreadable images are listed as errors and do not stop the others; the exit\n" +
			"status is then 1.\n\n" +
			"Sharding: --shard I/N scores part I of N (every N-th input by sorted path) and\n" +
			"records {\"shard\": {\"index\", \"count\", \"total_inputs\"}}; predict --merge PART.json...\n" +
			"joins the N parts (checked complete) into one output sorted by path.",
		Flags:  flags,
		Action: runPredict,
	}
}

func runPredict(c *cli.Context) error {
	if c.Bool("merge") {
		return runPredictMerge(c)
	}
	if c.String("clip") == "" {
		return fmt.Errorf("%s", requiredMessage("clip", clipFlag(true).Usage))
	}
	format, err := outputFormat(c, formatJSON, formatCSV)
	if err != nil {
		return err
	}
	if c.NArg() == 0 {
		return fmt.Errorf("no images: give image files or directories")
	}
	m, err := lookupMethod(c)
	if err != nil {
		return err
	}
	method := m.Name
	ckDir := c.String("checkpoint")
	if err := requireCheckpoint(m, ckDir); err != nil {
		return err
	}
	prompts, err := promptSource(c, m)
	if err != nil {
		return err
	}
	batch := c.Int("batch-size")
	if batch <= 0 {
		return fmt.Errorf("--batch-size must be positive (got %d)", batch)
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
	inputs, shardOf, err := shardInputs(c, expandImages(c.Args().Slice()))
	if err != nil {
		return err
	}
	if err := applyHostCache(c); err != nil {
		return err
	}
	sc, err := clipagiqa.LoadScorer(c.String("clip"), ckDir,
		clipagiqa.WithMethod(method), clipagiqa.WithEpoch(c.Int("epoch")),
		clipagiqa.WithDevice(dev), clipagiqa.WithPrecision(prec), clipagiqa.WithMaxBatch(batch),
		clipagiqa.WithMaxPixels(c.Int64("max-pixels")), clipagiqa.WithThreads(c.Int("threads")), clipagiqa.WithFused(!c.Bool("no-fused")))
	if err != nil {
		return err
	}
	defer sc.Close()
	out := predictOutput{
		Model:   predictModel{Method: method, CLIPFile: c.String("clip"), CLIP: sc.CLIPConfig()},
		Results: []predictResult{}, Errors: []inputError{}, Shard: shardOf,
	}
	out.Model.Checkpoint, out.Model.Epoch = ckDir, sc.Describe().Epoch
	outputs := sc.Outputs()

	// Hand the scorer a few batches at a time: it decodes them in parallel and
	// groups them into device batches; its queue holds 8 batches.
	ctx := context.Background()
	bar := newProgress(c.App.ErrWriter, "scoring", len(inputs))
	chunk := 4 * batch
	for start := 0; start < len(inputs); start += chunk {
		part := inputs[start:min(start+chunk, len(inputs))]
		data := make([][]byte, len(part))
		errs := make([]string, len(part))
		var todo []int
		for i, in := range part {
			if errs[i] = in.Err; errs[i] != "" {
				continue
			}
			var err error
			if data[i], err = regularfile.ReadFile(in.Path); err != nil {
				errs[i] = err.Error()
				continue
			}
			todo = append(todo, i)
		}
		batchData := make([][]byte, len(todo))
		var batchPrompts []string
		for k, i := range todo {
			batchData[k] = data[i]
			if prompts != nil {
				p, err := prompts.of(part[i])
				if err != nil {
					errs[i] = err.Error()
				}
				batchPrompts = append(batchPrompts, p)
			}
		}
		scores, serrs := sc.ScoreBatchOutputs(ctx, batchData, batchPrompts)
		res := make([][]float64, len(part))
		for k, i := range todo {
			if errs[i] != "" {
				continue // no prompt: ErrNoPrompt below says less than the table lookup
			}
			if serrs[k] != nil {
				errs[i] = serrs[k].Error()
			}
			res[i] = scores[k]
		}
		for i, in := range part {
			if errs[i] != "" {
				out.Errors = append(out.Errors, inputError{in.Path, errs[i]})
				continue
			}
			r := predictResult{Image: in.Path, Score: res[i][0]}
			if len(outputs) > 1 && outputs[1] == "alignment" {
				r.Alignment = &res[i][1]
			}
			out.Results = append(out.Results, r)
		}
		bar.update(start+len(part), "")
	}
	bar.clear()

	dst, commit, discard, err := predictWriter(c)
	if err != nil {
		return err
	}
	if format == "json" {
		err = writeJSON(dst, out)
	} else {
		w := csv.NewWriter(dst)
		dual := len(outputs) > 1 && outputs[1] == "alignment"
		if dual {
			_ = w.Write([]string{"image", "score", "alignment"})
		} else {
			_ = w.Write([]string{"image", "score"})
		}
		for _, r := range out.Results {
			row := []string{r.Image, strconv.FormatFloat(r.Score, 'g', -1, 64)}
			if dual {
				row = append(row, strconv.FormatFloat(*r.Alignment, 'g', -1, 64))
			}
			_ = w.Write(row)
		}
		w.Flush()
		err = w.Error()
	}
	if err == nil {
		err = commit()
	} else {
		discard()
	}
	if err != nil {
		return err
	}
	for _, e := range out.Errors {
		fmt.Fprintf(c.App.ErrWriter, "clipagiqa predict: %s: %s\n", e.Image, e.Error)
	}
	if len(out.Errors) > 0 {
		where := `listed under "errors" and on stderr`
		if format == formatCSV {
			where = "listed on stderr"
		}
		return fmt.Errorf("predict: %d input(s) failed (%s)", len(out.Errors), where)
	}
	return nil
}

func promptFlag() *cli.StringFlag {
	return &cli.StringFlag{Name: "prompt", Usage: "the prompt `TEXT` of every image (methods that score with the prompt: ipiqa)"}
}

func promptsFlag() *cli.StringFlag {
	return &cli.StringFlag{Name: "prompts",
		Usage: "`TABLE` of prompts (CSV with columns image|name and prompt, e.g. AGIQA-3K's data.csv or AGIQA-1K's AIGC_MOS_Zscore.csv); " +
			"names relative to the directory argument, or as given, or the file's base name"}
}

// imagePrompts gives each input image its prompt, from --prompt or
// --prompts.
type imagePrompts struct {
	all   string
	table *data.PromptTable
}

// promptSource reads --prompt/--prompts; nil when neither is given and the
// method does not need prompts.
func promptSource(c *cli.Context, m clipagiqa.Method) (*imagePrompts, error) {
	text, table := c.String("prompt"), c.String("prompts")
	switch {
	case c.IsSet("prompt") && table != "":
		return nil, fmt.Errorf("give --prompt TEXT or --prompts TABLE, not both")
	case c.IsSet("prompt") && text == "":
		return nil, fmt.Errorf("--prompt is empty")
	case text != "":
		return &imagePrompts{all: text}, nil
	case table != "":
		pt, err := data.ReadPromptTable(table)
		if err != nil {
			return nil, fmt.Errorf("--prompts: %w", err)
		}
		return &imagePrompts{table: pt}, nil
	case m.UsesPrompt:
		return nil, fmt.Errorf("--method %s scores each image with its prompt: give --prompts TABLE (CSV image,prompt) or --prompt TEXT", m.Name)
	}
	return nil, nil
}

// of returns in's prompt, or an error naming the image and the table.
func (p *imagePrompts) of(in imageInput) (string, error) {
	if p.table == nil {
		return p.all, nil
	}
	names := []string{in.Rel, in.Path}
	if in.Rel == "" {
		names = append(names, filepath.Base(in.Path))
	}
	if v, ok := p.table.Lookup(names...); ok {
		if v == "" {
			return "", fmt.Errorf("empty prompt for this image in %s", p.table.Source)
		}
		return v, nil
	}
	return "", fmt.Errorf("no prompt for this image in %s (looked up as %s)", p.table.Source, strings.Join(nonEmpty(names), ", "))
}

func nonEmpty(xs []string) []string {
	var out []string
	for _, x := range xs {
		if x != "" {
			out = append(out, x)
		}
	}
	return out
}
