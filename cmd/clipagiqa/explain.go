package main

import (
	"encoding/csv"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/clipagiqa/clipagiqa/clipagiqa/explain"
	"github.com/clipagiqa/clipagiqa/internal/plot"
	"github.com/clipagiqa/clipagiqa/internal/regularfile"
	"github.com/clipagiqa/clipagiqa/torch"
	"github.com/urfave/cli/v2"
)

// explainDefault is the --method explain uses when none is given.
const explainDefault = "ipiqa"

func explainCommand() *cli.Command {
	return &cli.Command{
		Name:      "explain",
		Usage:     "draw attention maps of IP-IQA or CLIP-AGIQA over images (PNG overlays and an index)",
		ArgsUsage: "IMAGE|DIR...",
		Description: "Scores each image and writes, under --out DIR, what the model attended to,\n" +
			"upsampled (bilinear) onto the preprocessed input, colour-mapped and blended:\n\n" +
			"  ipiqa: the cross-modal attention of the prompt's feature over the ResNet grid\n" +
			"         (txt_attnpool) and CLIP's attnpool attention of the mean token, as the\n" +
			"         IP-IQA paper's Fig. 3; every image needs a prompt (--prompt or --prompts).\n" +
			"  agiqa: the class-token attention of the ViT's last block (ViT CLIPs only).\n\n" +
			"Per image and map: NNN_NAME_KIND_mean.png (input | overlay of the mean over heads,\n" +
			"with scores, prompt and the weight range) and NNN_NAME_KIND_heads.png (one overlay\n" +
			"per head, each on its own scale); KIND is cross, visual or cls. DIR/explain.json\n" +
			"(files, scores, token-0 and peak weights, errors) and DIR/index.html list them and\n" +
			"are rewritten after every image, so an interrupted run leaves a usable directory.\n" +
			"The query's own token (mean or class token) is not on the grid; its weight is\n" +
			"printed.\n\n" +
			"Output on stdout: the index (--format json), a table, or CSV image,score,file...\n" +
			"Images that cannot be read or have no prompt are listed as errors; the others\n" +
			"go on, and the exit status is then 1.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "method", Value: explainDefault, Usage: "ipiqa (official IP-IQA checkpoint on a ResNet CLIP) or agiqa (CLIP-AGIQA checkpoint on a ViT CLIP)"},
			clipFlag(true),
			&cli.StringFlag{Name: "checkpoint", Required: true,
				Usage: "ipiqa: the official checkpoint `FILE` (checkpoint_best.pth); agiqa: our checkpoint dir or an official CLIP-AGIQA output dir"},
			&cli.IntFlag{Name: "epoch", Usage: "agiqa: epoch of an official checkpoint dir (0: the highest present)"},
			&cli.StringFlag{Name: "prompts", Usage: "ipiqa: CSV `TABLE` with image and prompt columns (names as given, relative to a directory argument, or base names)"},
			&cli.StringFlag{Name: "prompt", Usage: "ipiqa: one prompt `TEXT` for every image (a --prompts row wins)"},
			&cli.StringFlag{Name: "out", Required: true, Usage: "output `DIR` (created; existing files of the same names are replaced)"},
			&cli.StringFlag{Name: "colormap", Value: "jet", Usage: "colour map: " + strings.Join(plot.ColormapNames(), ", ")},
			&cli.Float64Flag{Name: "alpha", Value: 0.5, Usage: "weight of the colour in the blend, (0, 1]"},
			formatFlag(formatTable, formatJSON, formatCSV),
			deviceFlag(), maxPixelsFlag(), threadsFlag, hostCacheFlag,
		},
		Action: runExplain,
	}
}

func runExplain(c *cli.Context) error {
	format, err := outputFormat(c, formatTable, formatJSON, formatCSV)
	if err != nil {
		return err
	}
	meth, err := explain.LookupMethod(c.String("method"))
	if err != nil {
		return fmt.Errorf("--%w", err) // --method "x" cannot be explained: ...
	}
	method := meth.Name
	if c.NArg() == 0 {
		return fmt.Errorf("no images: give image files or directories")
	}
	if !meth.NeedsPrompt && (c.IsSet("prompt") || c.IsSet("prompts")) {
		return fmt.Errorf("--prompt/--prompts are for methods scored with the image's prompt (--method %s scores without one)", method)
	}
	cmap, err := plot.ColormapByName(c.String("colormap"))
	if err != nil {
		return fmt.Errorf("--colormap: %w", err)
	}
	ro := explain.RenderOptions{Colormap: cmap, ColormapName: strings.ToLower(c.String("colormap")), Alpha: c.Float64("alpha")}
	if a := ro.Alpha; !(a > 0 && a <= 1) {
		return fmt.Errorf("--alpha %v: want a value in (0, 1]", a)
	}
	for _, f := range []string{"clip", "checkpoint", "prompts"} {
		if p := c.String(f); p != "" && (f != "checkpoint" || meth.CheckpointFile) {
			if err := regularfile.Check(p); err != nil {
				return fmt.Errorf("--%s: %w", f, err)
			}
		}
	}
	var table *explain.Prompts
	if p := c.String("prompts"); p != "" {
		if table, err = explain.ReadPrompts(p); err != nil {
			return err
		}
	}
	inputs := explainInputs(c.Args().Slice(), table, c.String("prompt"), c.IsSet("prompt"))
	if err := applyThreads(c); err != nil {
		return err
	}
	dev, err := torch.ParseDevice(c.String("device"))
	if err != nil {
		return err
	}
	if err := torch.CheckDevice(dev); err != nil {
		return err
	}
	opts := explain.Options{Device: dev, MaxPixels: c.Int64("max-pixels"), Epoch: c.Int("epoch")}
	model, err := meth.Open(c.String("clip"), c.String("checkpoint"), opts)
	if err != nil {
		return err
	}
	defer model.Close()
	w, err := explain.NewWriter(c.String("out"), explain.Header{Method: method, CLIP: c.String("clip"), Checkpoint: c.String("checkpoint")}, ro)
	if err != nil {
		return err
	}
	bar := newProgress(c.App.ErrWriter, "explaining", len(inputs))
	failed, err := explain.Run(model, w, inputs, func(done, _ int) { bar.update(done, "") })
	bar.clear()
	if err != nil {
		return err
	}
	idx := w.Index()
	if err := printExplainIndex(c, format, idx); err != nil {
		return err
	}
	for _, e := range idx.Errors {
		fmt.Fprintf(c.App.ErrWriter, "clipagiqa explain: %s: %s\n", e.Image, e.Error)
	}
	if failed > 0 {
		return fmt.Errorf("explain: %d image(s) failed (listed in %s and on stderr)", failed, filepath.Join(c.String("out"), explain.IndexJSON))
	}
	return nil
}

// explainInputs expands the arguments and pairs each image with its prompt:
// a --prompts row (by the path as given, relative to its directory argument,
// or its base name), else --prompt when given.
func explainInputs(args []string, table *explain.Prompts, prompt string, hasPrompt bool) []explain.Input {
	var out []explain.Input
	for _, a := range args {
		for _, in := range expandImages([]string{a}) {
			e := explain.Input{Image: in.Path, Err: in.Err, Prompt: prompt, HasPrompt: hasPrompt}
			if table != nil {
				names := []string{in.Path}
				if rel, err := filepath.Rel(a, in.Path); err == nil && rel != "." && !strings.HasPrefix(rel, "..") {
					names = append(names, rel)
				}
				names = append(names, filepath.Base(in.Path))
				if p, ok := table.Lookup(names...); ok {
					e.Prompt, e.HasPrompt = p, true
				}
			}
			out = append(out, e)
		}
	}
	return out
}

func printExplainIndex(c *cli.Context, format string, idx explain.Index) error {
	dst := c.App.Writer
	switch format {
	case formatJSON:
		return writeJSON(dst, idx)
	case formatCSV:
		w := csv.NewWriter(dst)
		_ = w.Write([]string{"image", "score", "kind", "mean_file", "heads_file"})
		for _, e := range idx.Images {
			for _, m := range e.Maps {
				_ = w.Write([]string{e.Image, strconv.FormatFloat(e.Score, 'g', -1, 64), m.Kind, m.MeanFile, m.HeadsFile})
			}
		}
		w.Flush()
		return w.Error()
	}
	tw := tabwriter.NewWriter(dst, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "IMAGE\tSCORES\tMAP\tTOKEN0\tPEAK CELL\tFILE")
	for _, e := range idx.Images {
		var scores []string
		for _, name := range []string{"score", "quality", "alignment"} {
			if v, ok := e.Scores[name]; ok {
				scores = append(scores, fmt.Sprintf("%s %.4g", name, v))
			}
		}
		for _, m := range e.Maps {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%.2f%%\t%.2f%%\t%s\n", e.Image, strings.Join(scores, " "), m.Kind,
				100*m.Token0Weight, 100*m.MaxGridWeight, filepath.Join(c.String("out"), m.MeanFile))
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(dst, "%d image(s) explained, %d error(s); index: %s\n", len(idx.Images), len(idx.Errors),
		filepath.Join(c.String("out"), explain.IndexHTML))
	return err
}
