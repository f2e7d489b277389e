package ipiqatrain

import (
	"fmt"

	"github.com/clipagiqa/clipagiqa/torch"
	"github.com/clipagiqa/clipagiqa/torch/optim"
	"github.com/clipagiqa/clipagiqa/torch/ptfile"
)

// MixedPrecision is how IP-IQA trains at a precision, as PyTorch AMP does:
// the weights, their gradients and AdamW's state stay fp32 (load the CLIP
// in fp32); only the training forward runs under CUDA autocast. fp16 adds
// a loss scaler (torch.cuda.amp.GradScaler's defaults); bf16 has fp32's
// exponent range and needs none. Float32 returns (0, nil): plain fp32.
// Half precisions need a CUDA device: on the CPU the caller refuses them.
func MixedPrecision(prec torch.DType) (autocast torch.DType, scaler *optim.GradScaler, err error) {
	switch prec {
	case torch.Float32:
		return 0, nil, nil
	case torch.Float16:
		return torch.Float16, optim.NewGradScaler(), nil
	case torch.BFloat16:
		return torch.BFloat16, nil, nil
	}
	return 0, nil, fmt.Errorf("ipiqa training: precision %v: want fp32, fp16 or bf16", prec)
}

// restoreScaler loads a checkpoint's "scaler" entry into sc. A checkpoint
// without one (None: an fp32/bf16 run or the official code's) leaves sc at
// its initial state; a scaler saved by an fp16 run is ignored by a run
// without one.
func restoreScaler(sc *optim.GradScaler, saved any, path string) error {
	if sc == nil || saved == nil {
		return nil
	}
	d, ok := saved.(*ptfile.Dict)
	if !ok {
		return fmt.Errorf("ipiqa: %s: \"scaler\" is not a GradScaler state dict", path)
	}
	if err := sc.LoadStateDict(d); err != nil {
		return fmt.Errorf("ipiqa: %s: %w", path, err)
	}
	return nil
}
