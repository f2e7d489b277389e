package main

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/clipagiqa/clipagiqa/clipagiqa/pretrain"
	"github.com/clipagiqa/clipagiqa/clipagiqa/train"
	"github.com/urfave/cli/v2"
)

// pretrainCLIPFile is the CLIP file pretrain writes under --out.
const pretrainCLIPFile = "clip.pt"

func pretrainCommand() *cli.Command {
	d := pretrain.DefaultOptions()
	return &cli.Command{
		Name:  "pretrain",
		Usage: "Image2Prompt: pre-train a CLIP image tower towards the frozen text embeddings of image prompts",
		Description: "IP-IQA's incremental pre-training stage: AdamW on the whole image tower, loss\n" +
			"CosineEmbeddingLoss(image feature, frozen text feature of the image's prompt).\n" +
			"Prompt embeddings are computed once. --min-cosine first drops pairs whose\n" +
			"frozen-CLIP cosine is below it (the paper kept DiffusionDB pairs above 0.35).\n" +
			"Writes OUT/" + pretrainCLIPFile + " (a torch.save state dict under OpenAI's names, which\n" +
			"`train --clip`, `predict --clip` and this command's --clip read), OUT/summary.json\n" +
			"and, with the filter, OUT/dropped_pairs.csv. Every file is written atomically;\n" +
			"OUT/" + pretrainCLIPFile + " is rewritten only at the end, so an interrupted run leaves the\n" +
			"previous one intact.",
		Flags: []cli.Flag{
			clipFlag(true),
			&cli.StringFlag{Name: "pairs", Required: true, Usage: "CSV `TABLE` with columns image,prompt (image names relative to --root)"},
			&cli.StringFlag{Name: "root", Usage: "image root `DIR` (default: the table's directory)"},
			&cli.StringFlag{Name: "out", Required: true, Usage: "output `DIR`"},
			&cli.IntFlag{Name: "epochs", Value: d.Epochs, Usage: "passes over the pairs"},
			&cli.IntFlag{Name: "batch-size", Value: d.BatchSize, Usage: "pairs per AdamW step"},
			&cli.Float64Flag{Name: "lr", Value: d.LR, Usage: "AdamW learning rate (constant)"},
			&cli.Float64Flag{Name: "weight-decay", Usage: "AdamW weight decay"},
			&cli.Float64Flag{Name: "min-cosine", Usage: "drop pairs whose frozen-CLIP image–prompt cosine is below this (0: keep all; the paper used 0.35)"},
			&cli.Uint64Flag{Name: "seed", Value: 1, Usage: "shuffling seed"},
			&cli.BoolFlag{Name: "half", Usage: "store weights other than norms as float16 (half the size)"},
			formatFlag(formatTable, formatJSON),
			deviceFlag(), threadsFlag, hostCacheFlag,
		},
		Action: runPretrain,
	}
}

// pretrainSummary is OUT/summary.json.
type pretrainSummary struct {
	CLIP         string                 `json:"clip"`
	Base         string                 `json:"base_clip"`
	Pairs        int                    `json:"pairs"`
	Kept         int                    `json:"kept"`
	MinCosine    float64                `json:"min_cosine"`
	CosineBefore float64                `json:"mean_cosine_before"`
	CosineAfter  float64                `json:"mean_cosine_after"`
	Epochs       []pretrain.EpochStats  `json:"epochs"`
	Options      map[string]interface{} `json:"options"`
	Seconds      float64                `json:"seconds"`
}

func runPretrain(c *cli.Context) error {
	// One OS thread for the whole run: libtorch numbers autograd's nodes
	// per thread and orders the backward pass by them, so a goroutine that
	// moved mid-step could change the last bits of summed gradients.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	start := time.Now()
	out := c.String("out")
	root := c.String("root")
	if root == "" {
		root = filepath.Dir(c.String("pairs"))
	}
	pairs, err := pretrain.ReadPairs(c.String("pairs"), root)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return fmt.Errorf("pretrain: %w", err)
	}
	cm, tok, err := loadCLIPAndTokenizer(c)
	if err != nil {
		return err
	}
	defer cm.Close()
	opts := pretrain.Options{Epochs: c.Int("epochs"), BatchSize: c.Int("batch-size"), LR: c.Float64("lr"),
		WeightDecay: c.Float64("weight-decay"), MinCosine: c.Float64("min-cosine"), Seed: c.Uint64("seed")}
	errw := c.App.ErrWriter
	last := time.Time{}
	opts.Progress = func(p pretrain.Progress) {
		if p.Step == p.Steps || time.Since(last) > 2*time.Second {
			last = time.Now()
			fmt.Fprintf(errw, "\rpretrain: epoch %d/%d step %d/%d loss %.4f   ", p.Epoch, p.Epochs, p.Step, p.Steps, p.Loss)
			if p.Step == p.Steps {
				fmt.Fprintln(errw)
			}
		}
	}
	fmt.Fprintf(errw, "pretrain: %d pairs, CLIP %s (%s, embed %d, %d px)\n", len(pairs), c.String("clip"), cm.Config.Backbone, cm.Config.EmbedDim, cm.Config.ImageResolution)
	ctx, stop := interruptible(c)
	defer stop()
	res, err := pretrain.Run(ctx, cm, tok, pairs, opts)
	if err != nil {
		return err
	}
	if len(res.Dropped) > 0 {
		var b strings.Builder
		b.WriteString("image,prompt,cosine\n")
		for i, p := range res.Dropped {
			fmt.Fprintf(&b, "%s,%s,%s\n", csvField(p.Image), csvField(p.Prompt), strconv.FormatFloat(res.DroppedCos[i], 'f', 6, 64))
		}
		if err := train.WriteFileAtomic(filepath.Join(out, "dropped_pairs.csv"), []byte(b.String())); err != nil {
			return fmt.Errorf("pretrain: %w", err)
		}
	}
	clipPath := filepath.Join(out, pretrainCLIPFile)
	if err := pretrain.Save(clipPath, cm, c.Bool("half")); err != nil {
		return err
	}
	sum := pretrainSummary{CLIP: clipPath, Base: c.String("clip"), Pairs: res.Pairs, Kept: res.Kept, MinCosine: opts.MinCosine,
		CosineBefore: res.MeanCosine0, CosineAfter: res.MeanCosine, Epochs: res.Epochs, Seconds: time.Since(start).Seconds(),
		Options: map[string]interface{}{"epochs": opts.Epochs, "batch_size": opts.BatchSize, "lr": opts.LR,
			"weight_decay": opts.WeightDecay, "seed": opts.Seed, "half": c.Bool("half")}}
	if err := writeJSONFile(filepath.Join(out, "summary.json"), sum); err != nil {
		return fmt.Errorf("pretrain: %w", err)
	}
	w := c.App.Writer
	if c.String("format") == formatJSON {
		return writeJSON(w, sum)
	}
	fmt.Fprintf(w, "pairs %d, kept %d (min cosine %g)\n", res.Pairs, res.Kept, opts.MinCosine)
	fmt.Fprintf(w, "mean image–prompt cosine: %.4f before, %.4f after\n", res.MeanCosine0, res.MeanCosine)
	for _, e := range res.Epochs {
		fmt.Fprintf(w, "epoch %3d loss %.4f\n", e.Epoch, e.Loss)
	}
	fmt.Fprintf(w, "wrote %s (%.1fs)\n", clipPath, time.Since(start).Seconds())
	return nil
}

// csvField quotes s when CSV needs it.
func csvField(s string) string {
	if strings.ContainsAny(s, ",\"\n\r") {
		return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
	}
	return s
}
