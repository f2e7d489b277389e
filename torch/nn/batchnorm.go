package nn

import "github.com/clipagiqa/clipagiqa/torch"

// BatchNormSync computes training-mode batch normalisation with statistics
// over a group of processes instead of this process's batch alone (PyTorch's
// nn.SyncBatchNorm). torch/dist.SyncBatchNorm implements it over a process
// group; nn does not import torch/dist.
//
// BatchNormTrain normalises x [N, C, ...] by the mean and biased variance of
// every rank's x together, applies weight and bias, and updates the running
// buffers in place with momentum (the running variance from the unbiased
// global variance), exactly as Scope.BatchNorm does in training mode for one
// process. Every rank must call it for the same layers in the same order.
type BatchNormSync interface {
	BatchNormTrain(s *torch.Scope, x, weight, bias, runningMean, runningVar *torch.Tensor, momentum, eps float64) *torch.Tensor
}

// ConvertSyncBatchNorm makes every BatchNorm2d of store normalise by
// statistics over sync's group while in training mode (as PyTorch's
// nn.SyncBatchNorm.convert_sync_batchnorm does for a module tree); nil
// restores per-process statistics. Eval mode is unaffected (running stats),
// parameters and buffers keep their names, so checkpoints stay compatible.
func ConvertSyncBatchNorm(store *Store, sync BatchNormSync) {
	if store != nil {
		store.batchNormSync = sync
	}
}

// BatchNormSyncOf is the synchronisation ConvertSyncBatchNorm set on store
// (nil: per-process statistics).
func BatchNormSyncOf(store *Store) BatchNormSync {
	if store == nil {
		return nil
	}
	return store.batchNormSync
}
