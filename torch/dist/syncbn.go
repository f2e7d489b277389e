package dist

// #cgo CFLAGS: -I${SRCDIR}/../../cpp
// #cgo pkg-config: clipagiqa
// #include <stdlib.h>
// #include "syncbn.h"
import "C"

import (
	"errors"
	"fmt"
	"runtime"
	"time"
	"unsafe"

	"github.com/clipagiqa/clipagiqa/torch"
	"github.com/clipagiqa/clipagiqa/torch/nn"
)

// SyncBatchNorm is PyTorch's nn.SyncBatchNorm over a Group: in training mode
// each BatchNorm layer all-gathers every rank's per-channel (count, mean,
// sum of squared deviations), normalises by the global mean and biased
// variance, updates the running buffers with the unbiased global variance,
// and in backward all-reduces (sum) Σdy and Σdy·(x−mean) per channel, so
// inputs receive the gradient through the global statistics. Pass it to
// nn.ConvertSyncBatchNorm. On one process it is Scope.BatchNorm itself.
//
// Every rank must run the same BatchNorm layers in the same order, forward
// and backward. Like PyTorch's, the backward gradient is that of the sum of
// the ranks' losses; DataParallel.AverageGradients then divides by the
// global sample count weighting, which matches the single-process gradient
// exactly when every rank holds the same number of samples (the trainer's
// LocalBatch guarantees that for whole batches).
type SyncBatchNorm struct{ g *Group }

// NewSyncBatchNorm synchronises batch statistics over g (Local() for one process).
func NewSyncBatchNorm(g *Group) *SyncBatchNorm { return &SyncBatchNorm{g: g} }

// SyncBatchNorm returns batch-norm synchronisation over d's group.
func (d *DataParallel) SyncBatchNorm() *SyncBatchNorm { return NewSyncBatchNorm(d.Group()) }

var _ nn.BatchNormSync = (*SyncBatchNorm)(nil)

// BatchNormTrain implements nn.BatchNormSync.
func (b *SyncBatchNorm) BatchNormTrain(s *torch.Scope, x, weight, bias, runningMean, runningVar *torch.Tensor, momentum, eps float64) *torch.Tensor {
	if b == nil || b.g == nil || b.g.WorldSize() == 1 {
		return s.BatchNorm(x, weight, bias, runningMean, runningVar, true, momentum, eps)
	}
	if s.Err() != nil {
		return nil
	}
	if x == nil {
		s.Fail(errors.New("sync batch norm: input is nil"))
		return nil
	}
	h, err := b.g.native()
	if err != nil {
		s.Fail(fmt.Errorf("sync batch norm: %w", err))
		return nil
	}
	world := b.g.WorldSize()
	inputs := []*torch.Tensor{x, weight, bias, runningMean, runningVar}
	return s.RunNative("sync_batch_norm", inputs, func(mode unsafe.Pointer, in []unsafe.Pointer) (unsafe.Pointer, error) {
		var out C.ct_tensor
		err := cErr(C.ct_dist_sync_batch_norm(*(*C.ct_mode)(mode), h, C.int32_t(world),
			C.ct_tensor(in[0]), C.ct_tensor(in[1]), C.ct_tensor(in[2]), C.ct_tensor(in[3]), C.ct_tensor(in[4]),
			C.double(momentum), C.double(eps), &out))
		runtime.KeepAlive(b.g)
		return unsafe.Pointer(out), err
	})
}

// BufferSource lists a model's buffers by name in a fixed order (nn.Store and
// nn.Path do). An alias of the unnamed interface, so that packages that do
// not import dist (the generic trainer) can name the same method signature.
type BufferSource = interface {
	Buffers() []nn.NamedParam
}

// BroadcastBuffers overwrites every buffer of m (BatchNorm running_mean,
// running_var, num_batches_tracked, ...) with rank 0's values, as PyTorch DDP
// does before each forward with broadcast_buffers=True (its default): call it
// at the start of each training step (the generic trainer does, and before
// each evaluation). Ranks normalise by their own batch
// statistics, so after a step each rank's running stats differ until the
// next broadcast; rank 0's are the ones that persist (and that rank 0
// checkpoints). The buffer names must agree across ranks; a mismatch in count
// or shape is an error from the collective.
func (d *DataParallel) BroadcastBuffers(m BufferSource) error {
	if d.WorldSize() == 1 || m == nil {
		return nil
	}
	bufs := m.Buffers()
	if len(bufs) == 0 {
		return nil
	}
	// Coalesced as DDP does: one broadcast per dtype instead of one per buffer.
	s := torch.NewScope().WithGrad(torch.NoGrad)
	defer s.Close()
	var order []torch.DType
	byType := map[torch.DType][]nn.NamedParam{}
	for _, b := range bufs {
		if !b.T.Valid() {
			return fmt.Errorf("dist: broadcast buffer %q: tensor is closed", b.Name)
		}
		dt := b.T.DType()
		if _, ok := byType[dt]; !ok {
			order = append(order, dt)
		}
		byType[dt] = append(byType[dt], b)
	}
	for _, dt := range order {
		group := byType[dt]
		parts := make([]*torch.Tensor, len(group))
		for i, b := range group {
			parts[i] = s.Reshape(b.T, -1)
		}
		flat := s.Contiguous(s.Cat(0, parts...))
		if err := s.Err(); err != nil {
			return fmt.Errorf("dist: packing %d %v buffers: %w", len(group), dt, err)
		}
		t0 := time.Now()
		if err := d.g.Broadcast(0, flat); err != nil {
			return fmt.Errorf("dist: broadcast of %d %v buffers: %w", len(group), dt, err)
		}
		d.bufferNanos.Add(int64(time.Since(t0)))
		d.bufferBytes.Add(flat.Numel() * int64(dt.Size()))
		d.bufferCalls.Add(1)
		var off int64
		for _, b := range group {
			n := b.T.Numel()
			v := s.Reshape(s.Narrow(flat, 0, off, n), b.T.Shape()...)
			if err := s.Err(); err != nil {
				return err
			}
			if err := b.T.CopyFrom(v); err != nil {
				return fmt.Errorf("dist: writing buffer %q: %w", b.Name, err)
			}
			off += n
		}
	}
	return nil
}
