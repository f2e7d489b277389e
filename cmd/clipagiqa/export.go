package main

import (
	"fmt"
	"path/filepath"

	"github.com/clipagiqa/clipagiqa/clipagiqa"
	"github.com/clipagiqa/clipagiqa/torch"
	"github.com/urfave/cli/v2"
)

func exportCommand() *cli.Command {
	return &cli.Command{
		Name:  "export",
		Usage: "write a checkpoint in the official CLIP-AGIQA layout for the Python code",
		Description: "Reads a checkpoint (ours, or an official directory) and writes\n" +
			"OUT/prompt_learner/model.pth.tar-N and OUT/regression/model.pth.tar-N plus their\n" +
			"'checkpoint' files, as the official code's save_model does, so that its load_model\n" +
			"(and --resume, through the SGD momentum buffers) reads what Go trained. The prompt\n" +
			"learner's token_prefix/token_suffix are recomputed from --clip's token embedding.",
		Flags: []cli.Flag{
			clipFlag(true),
			&cli.StringFlag{Name: "checkpoint", Required: true, Usage: "checkpoint `DIR` (or model.pt file) to export"},
			&cli.IntFlag{Name: "epoch", Usage: "epoch of an official checkpoint directory (0: the last)"},
			&cli.StringFlag{Name: "format", Value: "official", Usage: "output layout: official (the only one so far)"},
			&cli.StringFlag{Name: "out", Required: true, Usage: "output `DIR`"},
			&cli.Float64Flag{Name: "lr", Usage: "learning rate recorded in the optimizer state (0: the paper's schedule at the checkpoint's epoch, 100 epochs)"},
			threadsFlag,
		},
		Action: runExport,
	}
}

func runExport(c *cli.Context) error {
	if f := c.String("format"); f != "official" {
		return fmt.Errorf("--format %q: only official is supported", f)
	}
	ck, err := clipagiqa.ReadCheckpoint(c.String("checkpoint"), c.Int("epoch"))
	if err != nil {
		return err
	}
	cm, tok, err := loadCLIPAndTokenizer(c)
	if err != nil {
		return err
	}
	defer cm.Close()
	m, err := clipagiqa.FromCheckpoint(cm, tok, ck)
	if err != nil {
		return fmt.Errorf("export: %w", err)
	}
	defer m.Close()
	prefix, err := torch.ToRaw(m.TokenPrefix)
	if err != nil {
		return fmt.Errorf("export: token prefix: %w", err)
	}
	suffix, err := torch.ToRaw(m.TokenSuffix)
	if err != nil {
		return fmt.Errorf("export: token suffix: %w", err)
	}
	lr := c.Float64("lr")
	if lr == 0 {
		// Dassl saves after update_lr, i.e. the lr of the next epoch.
		lr = clipagiqa.LRAt(ck.Epoch, 100, 1, 0.002, 1e-5)
	}
	out := c.String("out")
	if err := ck.ExportOfficial(out, prefix, suffix, lr); err != nil {
		return err
	}
	ep := max(ck.Epoch, 1)
	fmt.Fprintf(c.App.Writer, "wrote %s and %s (epoch %d)\n",
		filepath.Join(out, "prompt_learner", fmt.Sprintf("model.pth.tar-%d", ep)),
		filepath.Join(out, "regression", fmt.Sprintf("model.pth.tar-%d", ep)), ep)
	return nil
}
