package main

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/clipagiqa/clipagiqa/clipagiqa"
	"github.com/clipagiqa/clipagiqa/clipagiqa/ipiqa"
	"github.com/clipagiqa/clipagiqa/clipagiqa/train"
	"github.com/clipagiqa/clipagiqa/clipagiqa/train/ipiqatrain"
	"github.com/clipagiqa/clipagiqa/data"
	"github.com/clipagiqa/clipagiqa/internal/regularfile"
	"github.com/clipagiqa/clipagiqa/torch"
	"github.com/clipagiqa/clipagiqa/torch/ptfile"
	"github.com/urfave/cli/v2"
)

// exporters write a method's checkpoint in its official code's layout, by
// --method name (a registered method; zero-shot ones have nothing to export).
var exporters = map[string]func(c *cli.Context) error{
	clipagiqa.MethodAGIQA: exportAGIQA,
	clipagiqa.MethodIPIQA: exportIPIQA,
}

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
	export, ok := exporters[m.Name]
	if !ok {
		names := make([]string, 0, len(exporters))
		for n := range exporters {
			names = append(names, n)
		}
		sort.Strings(names)
		return fmt.Errorf("--method %s has no trained weights to export (want one of %v)", m.Name, names)
	}
	return export(c)
}

// exportAGIQA writes the official CLIP-AGIQA (Dassl) directory layout.
func exportAGIQA(c *cli.Context) error {
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

// ipiqaCheckpointFile resolves export's --checkpoint for ipiqa: a file as
// given, or in a run directory checkpoint_N.pth (epoch > 0), else
// checkpoint_best.pth, else the newest checkpoint_N.pth.
func ipiqaCheckpointFile(path string, epoch int) (string, error) {
	st, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("--checkpoint: %w", err)
	}
	if !st.IsDir() {
		if err := regularfile.Check(path); err != nil {
			return "", fmt.Errorf("--checkpoint: %w", err)
		}
		return path, nil
	}
	if epoch > 0 {
		p := filepath.Join(path, train.CheckpointName(epoch))
		if err := regularfile.Check(p); err != nil {
			return "", fmt.Errorf("--checkpoint %s --epoch %d: %w (training keeps only the newest checkpoint_N.pth and checkpoint_best.pth)", path, epoch, err)
		}
		return p, nil
	}
	if p := filepath.Join(path, train.BestCheckpoint); regularfile.Check(p) == nil {
		return p, nil
	}
	p, err := train.LatestCheckpoint(path)
	if err != nil {
		return "", fmt.Errorf("--checkpoint: %w", err)
	}
	if p == "" {
		return "", fmt.Errorf("--checkpoint %s: no %s or checkpoint_N.pth in it (a run with several splits keeps them in one directory per split: give that one)", path, train.BestCheckpoint)
	}
	return p, nil
}

// exportIPIQA loads an IP-IQA checkpoint onto --clip, with its AdamW state,
// and writes it back in the official layout (ipiqa.Model.SaveOfficial, as
// training writes its checkpoints).
func exportIPIQA(c *cli.Context) error {
	if c.IsSet("lr") {
		return fmt.Errorf("--lr is for --method agiqa: an IP-IQA checkpoint keeps the learning rates of its optimizer state")
	}
	in, err := ipiqaCheckpointFile(c.String("checkpoint"), c.Int("epoch"))
	if err != nil {
		return err
	}
	opts, err := ipiqa.OptionsFromOfficial(in)
	if err != nil {
		return err
	}
	f, err := ptfile.Load(in)
	if err != nil {
		return fmt.Errorf("export: %w", err)
	}
	ov, _ := ptfile.Get(f.Root, "optimizer")
	_, hasOpt := ov.(*ptfile.Dict)
	f = nil // the model load below reads the file again; let this copy go
	cm, err := loadCLIP(c)
	if err != nil {
		return err
	}
	defer cm.Close()
	m, err := ipiqa.New(cm, opts)
	if err != nil {
		return fmt.Errorf("export: %w", err)
	}
	defer m.Store().Close() // the CLIP is closed above
	sc := ipiqatrain.OfficialSchedule()
	opt, err := ipiqatrain.NewOptimizer(m, sc)
	if err != nil {
		return fmt.Errorf("export: %w", err)
	}
	defer opt.Close()
	var load ipiqa.OptimizerState
	if hasOpt {
		load = opt
	}
	ck, err := m.LoadOfficial(in, load)
	if err != nil {
		return fmt.Errorf("export: IP-IQA checkpoint does not fit CLIP %s (trained on another CLIP?): %w", c.String("clip"), err)
	}
	config := ck.Config
	if config == nil {
		task := "agiqa"
		if opts.Outputs == 2 {
			task = "agiqa_doublescore"
		}
		config = ipiqatrain.OfficialConfig(m, sc, 32, 100, data.IPIQAOfficialSeed, task)
	}
	out := c.String("out")
	if st, err := os.Stat(out); err == nil && st.IsDir() {
		return fmt.Errorf("--out %s is a directory: IP-IQA exports one FILE (e.g. %s)", out, filepath.Join(out, train.BestCheckpoint))
	}
	if err := m.SaveOfficial(out, opt, config, ck.Epoch); err != nil {
		return fmt.Errorf("export: %w", err)
	}
	state := "AdamW state from the input"
	if !hasOpt {
		state = "no optimizer state in the input: wrote AdamW's initial state (official schedule)"
	}
	fmt.Fprintf(c.App.Writer, "wrote %s from %s (IP-IQA, epoch %d, %d output(s), %d×%d input; %s)\n",
		out, in, ck.Epoch, opts.Outputs, opts.InputResolution, opts.InputResolution, state)
	return nil
}
