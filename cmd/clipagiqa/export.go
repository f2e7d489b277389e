package main

import (
	"fmt"

	"github.com/clipagiqa/clipagiqa/clipagiqa"
	"github.com/clipagiqa/clipagiqa/clipagiqa/clip"
	"github.com/clipagiqa/clipagiqa/clipagiqa/method"
	"github.com/urfave/cli/v2"
)

func exportCommand() *cli.Command {
	return &cli.Command{
		Name:  "export",
		Usage: "write a checkpoint in the official code's layout (CLIP-AGIQA or IP-IQA) for the Python code",
		Description: "--method agiqa (default): reads a checkpoint (ours, or an official directory) and\n" +
			"writes OUT/prompt_learner/model.pth.tar-N and OUT/regression/model.pth.tar-N plus their\n" +
			"'checkpoint' files, as the official code's save_model does, so that its load_model\n" +
			"(and --resume, through the SGD momentum buffers) reads what Go trained. The prompt\n" +
			"learner's token_prefix/token_suffix are recomputed from --clip's token embedding.\n\n" +
			"--method ipiqa: reads an IP-IQA checkpoint (a FILE, or a train run DIR: its\n" +
			"checkpoint_best.pth, else its newest checkpoint_N.pth; --epoch N takes checkpoint_N.pth),\n" +
			"loads it onto --clip (so a checkpoint of another CLIP is refused) and writes the FILE\n" +
			"--out as the official Trainer._save_checkpoint does: torch.save of {\"model\": the state\n" +
			"dict without frozen parameters, \"optimizer\": the AdamW state dict, \"config\",\n" +
			"\"scaler\": None, \"epoch\"}. The official _reload_best_model (non-strict) and --resume\n" +
			"read it. Tensors are written in float32; without an optimizer state in the input,\n" +
			"AdamW's initial state (official schedule) is written, and said so.",
		Flags: []cli.Flag{
			clipFlag(true),
			&cli.StringFlag{Name: "method", Value: clipagiqa.MethodAGIQA, Usage: "model to export: agiqa (CLIP-AGIQA) or ipiqa (IP-IQA)"},
			&cli.StringFlag{Name: "checkpoint", Required: true, Usage: "agiqa: checkpoint `DIR` (or model.pt file); ipiqa: checkpoint FILE or train run DIR"},
			&cli.IntFlag{Name: "epoch", Usage: "agiqa: epoch of an official checkpoint directory (0: the last); ipiqa: checkpoint_N.pth of a run DIR (0: checkpoint_best.pth, else the newest)"},
			&cli.StringFlag{Name: "format", Value: "official", Usage: "output layout: official (the only one so far)"},
			&cli.StringFlag{Name: "out", Required: true, Usage: "output `DIR` (agiqa) or FILE (ipiqa, e.g. checkpoint_best.pth)"},
			&cli.Float64Flag{Name: "lr", Usage: "agiqa: learning rate recorded in the optimizer state (0: the paper's schedule at the checkpoint's epoch, 100 epochs)"},
			threadsFlag,
		},
		Action: runExport,
	}
}

func runExport(c *cli.Context) error {
	if f := c.String("format"); f != "official" {
		return fmt.Errorf("--format %q: only official is supported", f)
	}
	m, err := lookupMethod(c)
	if err != nil {
		return err
	}
	if m.Export == nil {
		return fmt.Errorf("--method %s has no trained weights to export (want one of %v)", m.Name, exportableMethods())
	}
	summary, err := m.Export(method.ExportRequest{
		CLIPPath:   c.String("clip"),
		LoadCLIP:   func() (*clip.Model, error) { return loadCLIP(c) },
		Checkpoint: c.String("checkpoint"),
		Epoch:      c.Int("epoch"),
		Out:        c.String("out"),
		LR:         c.Float64("lr"),
		Log:        c.App.ErrWriter,
	})
	if err != nil {
		return err
	}
	fmt.Fprintln(c.App.Writer, summary)
	return nil
}

// exportableMethods lists the registered methods with an Export capability,
// sorted (zero-shot ones have nothing to export).
func exportableMethods() []string {
	var names []string
	for _, name := range clipagiqa.MethodNames() {
		if m, err := clipagiqa.LookupMethod(name); err == nil && m.Export != nil {
			names = append(names, name)
		}
	}
	return names
}
