package ipiqatrain

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/clipagiqa/clipagiqa/clipagiqa/ipiqa"
	"github.com/clipagiqa/clipagiqa/clipagiqa/method"
	"github.com/clipagiqa/clipagiqa/clipagiqa/train"
	"github.com/clipagiqa/clipagiqa/data"
	"github.com/clipagiqa/clipagiqa/internal/regularfile"
	"github.com/clipagiqa/clipagiqa/torch/ptfile"
)

// IP-IQA's export needs the AdamW optimizer and the official config, which
// live here rather than in ipiqa (which the trainer imports), so the
// capability is attached here, after ipiqa has registered the method.
func init() {
	if err := method.RegisterExport(ipiqa.MethodName, Export); err != nil {
		panic(err) // a duplicate built-in exporter is a programming error
	}
}

// CheckpointFile resolves an IP-IQA checkpoint path for export: a file as
// given, or in a run directory checkpoint_N.pth (epoch > 0), else
// checkpoint_best.pth, else the newest checkpoint_N.pth.
func CheckpointFile(path string, epoch int) (string, error) {
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

// Export is IP-IQA's export capability: it loads the checkpoint that
// req.Checkpoint and req.Epoch resolve to (CheckpointFile) onto req's CLIP,
// with its AdamW state, so that a checkpoint of another CLIP is refused,
// and writes the FILE req.Out as training writes its checkpoints
// (ipiqa.Model.SaveOfficial). Without an optimizer state in the input,
// AdamW's initial state (official schedule) is written. A non-zero req.LR
// is refused: the optimizer state keeps its own learning rates.
func Export(req method.ExportRequest) (string, error) {
	if req.LR != 0 {
		return "", fmt.Errorf("--lr is for --method agiqa: an IP-IQA checkpoint keeps the learning rates of its optimizer state")
	}
	in, err := CheckpointFile(req.Checkpoint, req.Epoch)
	if err != nil {
		return "", err
	}
	opts, err := ipiqa.OptionsFromOfficial(in)
	if err != nil {
		return "", err
	}
	f, err := ptfile.Load(in)
	if err != nil {
		return "", fmt.Errorf("export: %w", err)
	}
	ov, _ := ptfile.Get(f.Root, "optimizer")
	_, hasOpt := ov.(*ptfile.Dict)
	f = nil // the model load below reads the file again; let this copy go
	cm, err := req.CLIP()
	if err != nil {
		return "", err
	}
	defer cm.Close()
	m, err := ipiqa.New(cm, opts)
	if err != nil {
		return "", fmt.Errorf("export: %w", err)
	}
	defer m.Store().Close() // the CLIP is closed above
	sc := OfficialSchedule()
	opt, err := NewOptimizer(m, sc)
	if err != nil {
		return "", fmt.Errorf("export: %w", err)
	}
	defer opt.Close()
	var load ipiqa.OptimizerState
	if hasOpt {
		load = opt
	}
	ck, err := m.LoadOfficial(in, load)
	if err != nil {
		return "", fmt.Errorf("export: IP-IQA checkpoint does not fit CLIP %s (trained on another CLIP?): %w", req.CLIPPath, err)
	}
	config := ck.Config
	if config == nil {
		task := "agiqa"
		if opts.Outputs == 2 {
			task = "agiqa_doublescore"
		}
		config = OfficialConfig(m, sc, 32, 100, data.IPIQAOfficialSeed, task)
	}
	if st, err := os.Stat(req.Out); err == nil && st.IsDir() {
		return "", fmt.Errorf("--out %s is a directory: IP-IQA exports one FILE (e.g. %s)", req.Out, filepath.Join(req.Out, train.BestCheckpoint))
	}
	if err := m.SaveOfficial(req.Out, opt, config, ck.Epoch); err != nil {
		return "", fmt.Errorf("export: %w", err)
	}
	state := "AdamW state from the input"
	if !hasOpt {
		state = "no optimizer state in the input: wrote AdamW's initial state (official schedule)"
	}
	return fmt.Sprintf("wrote %s from %s (IP-IQA, epoch %d, %d output(s), %d×%d input; %s)",
		req.Out, in, ck.Epoch, opts.Outputs, opts.InputResolution, opts.InputResolution, state), nil
}
