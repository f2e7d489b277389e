package agiqa

import (
	"fmt"
	"path/filepath"

	"github.com/clipagiqa/clipagiqa/clipagiqa/method"
	"github.com/clipagiqa/clipagiqa/clipagiqa/tokenizer"
	"github.com/clipagiqa/clipagiqa/torch"
)

// Export is CLIP-AGIQA's export capability: it reads req.Checkpoint (ours,
// or an official directory at req.Epoch), rebuilds the model on req's CLIP
// (token_prefix/token_suffix come from its token embedding) and writes the
// official (Dassl) layout under req.Out with ExportOfficial. req.LR 0
// records the paper's schedule at the checkpoint's epoch (100 epochs).
func Export(req method.ExportRequest) (string, error) {
	ck, err := ReadCheckpoint(req.Checkpoint, req.Epoch)
	if err != nil {
		return "", err
	}
	cm, err := req.CLIP()
	if err != nil {
		return "", err
	}
	defer cm.Close()
	tok, err := tokenizer.Default()
	if err != nil {
		return "", err
	}
	m, err := FromCheckpoint(cm, tok, ck)
	if err != nil {
		return "", fmt.Errorf("export: %w", err)
	}
	defer m.Close()
	prefix, err := torch.ToRaw(m.TokenPrefix)
	if err != nil {
		return "", fmt.Errorf("export: token prefix: %w", err)
	}
	suffix, err := torch.ToRaw(m.TokenSuffix)
	if err != nil {
		return "", fmt.Errorf("export: token suffix: %w", err)
	}
	lr := req.LR
	if lr == 0 {
		// Dassl saves after update_lr, i.e. the lr of the next epoch.
		lr = LRAt(ck.Epoch, 100, 1, 0.002, 1e-5)
	}
	if err := ck.ExportOfficial(req.Out, prefix, suffix, lr); err != nil {
		return "", err
	}
	ep := max(ck.Epoch, 1)
	return fmt.Sprintf("wrote %s and %s (epoch %d)",
		filepath.Join(req.Out, "prompt_learner", fmt.Sprintf("model.pth.tar-%d", ep)),
		filepath.Join(req.Out, "regression", fmt.Sprintf("model.pth.tar-%d", ep)), ep), nil
}
