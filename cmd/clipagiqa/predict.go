package main

import (
	"context"
	"encoding/csv"
	"fmt"
	"strconv"

	"github.com/clipagiqa/clipagiqa/clipagiqa"
	"github.com/clipagiqa/clipagiqa/clipagiqa/clip"
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
}

type predictOutput struct {
	Model   predictModel    `json:"model"`
	Results []predictResult `json:"results"`
	Errors  []inputError    `json:"errors"`
	Shard   *shardInfo      `json:"shard,omitempty"`
}

func methodFlag() *cli.StringFlag {
	return &cli.StringFlag{Name: "method", Value: clipagiqa.MethodAGIQA,
		Usage: "agiqa: CLIP-AGIQA from --checkpoint; clipiqa: zero-shot CLIP-IQA (softmax of 100·cos against \"Good photo.\"/\"Bad photo.\", no checkpoint)"}
}

func checkpointFlags(required bool) []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "checkpoint", Required: required,
			Usage: "checkpoint `DIR`: ours (model.pt inside) or an official CLIP-AGIQA output dir (prompt_learner/ + regression/), auto-detected"},
		&cli.IntFlag{Name: "epoch", Usage: "epoch of an official checkpoint dir (0: the highest present)"},
	}
}

func predictCommand() *cli.Command {
	flags := append([]cli.Flag{clipFlag(false)}, checkpointFlags(false)...) // --clip checked in runPredict: --merge needs none
	flags = append(flags, methodFlag(),
		formatFlag(formatJSON, formatCSV),
		deviceFlag(), precisionFlag(), batchFlag(32), maxPixelsFlag(), threadsFlag)
	flags = append(flags, predictShardFlags()...)
	return &cli.Command{
		Name:      "predict",
		Usage:     "score images with a trained CLIP-AGIQA checkpoint (or zero-shot CLIP-IQA)",
		ArgsUsage: "IMAGE|DIR...",
		Description: "Scores each image (JPEG, PNG, GIF, BMP, WebP; directories are expanded to their\n" +
			"image files, recursively) after CLIP's test preprocessing. The score is the\n" +
			"predicted MOS on the training set's scale (agiqa) or the probability of \"Good\n" +
			"photo.\" (clipiqa).\n\n" +
			"JSON: {\"model\": {...}, \"results\": [{\"image\": \"<path as given>\", \"score\": x}],\n" +
			"       \"errors\": [{\"image\", \"error\"}]}\n" +
			"CSV:  image,score (errors on stderr).\n\n" +
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
	method := c.String("method")
	ckDir := c.String("checkpoint")
	switch {
	case method == clipagiqa.MethodAGIQA && ckDir == "":
		return fmt.Errorf("--checkpoint DIR is required with --method agiqa (or use --method clipiqa)")
	}
	if _, err := clipagiqa.LookupMethod(method); err != nil {
		return fmt.Errorf("--method: %w", err)
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
	if method == clipagiqa.MethodAGIQA {
		out.Model.Checkpoint = ckDir
		out.Model.Epoch = checkpointEpoch(ckDir, c.Int("epoch"))
	}

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
		for k, i := range todo {
			batchData[k] = data[i]
		}
		scores, serrs := sc.ScoreBatch(ctx, batchData)
		res := make([]float64, len(part))
		for k, i := range todo {
			if serrs[k] != nil {
				errs[i] = serrs[k].Error()
			}
			res[i] = scores[k]
		}
		for i, in := range part {
			if errs[i] != "" {
				out.Errors = append(out.Errors, inputError{in.Path, errs[i]})
			} else {
				out.Results = append(out.Results, predictResult{in.Path, res[i]})
			}
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
		_ = w.Write([]string{"image", "score"})
		for _, r := range out.Results {
			_ = w.Write([]string{r.Image, strconv.FormatFloat(r.Score, 'g', -1, 64)})
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

// checkpointEpoch is the epoch a checkpoint directory resolves to (0 when
// unknown), for the output's model description.
func checkpointEpoch(dir string, epoch int) int {
	if epoch > 0 {
		return epoch
	}
	if clipagiqa.IsOfficialDir(dir) {
		if eps, err := clipagiqa.OfficialEpochs(dir); err == nil && len(eps) > 0 {
			return eps[len(eps)-1]
		}
		return 0
	}
	ck, err := clipagiqa.ReadCheckpoint(dir, 0)
	if err != nil {
		return 0
	}
	return ck.Epoch
}
