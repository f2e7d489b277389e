package dist

import (
	"fmt"
	"sync/atomic"
	"time"

	"github.com/clipagiqa/clipagiqa/torch"
)

// DefaultBucketBytes caps one gradient all-reduce buffer, as PyTorch DDP's
// bucket_cap_mb = 25 does.
const DefaultBucketBytes = 25 << 20

// DataParallel is one process's side of data-parallel training over a Group:
// the three hooks a trainer calls are Sampler (which samples of each global
// batch this rank takes), AverageGradients (after backward, before the
// optimiser step) and IsMain (only rank 0 writes shared files). It also
// broadcasts parameters from rank 0 and gathers sharded work.
//
// BatchNorm: BroadcastBuffers gives DDP's default (per-rank batch statistics,
// rank 0's buffers broadcast before each forward; the generic trainer calls
// it), SyncBatchNorm with nn.ConvertSyncBatchNorm statistics over the global
// batch.
type DataParallel struct {
	g           *Group
	BucketBytes int64 // gradient bucket size; DefaultBucketBytes when 0
	// StopVote, when set, is this rank's wish to stop (a signal arrived). The
	// votes ride on each gradient all-reduce; once any rank voted, every rank
	// sees StopAgreed after the same step and OnStop runs (if set).
	StopVote func() bool
	OnStop   func()

	stopAgreed atomic.Bool

	reduceNanos atomic.Int64
	reduceBytes atomic.Int64
	reduceCalls atomic.Int64

	bufferNanos atomic.Int64
	bufferBytes atomic.Int64
	bufferCalls atomic.Int64
}

// NewDataParallel wraps a joined group (Local() for a single process).
func NewDataParallel(g *Group) *DataParallel { return &DataParallel{g: g} }

// A nil *DataParallel is a single process: rank 0 of 1.

// Group is the underlying process group (Local() for nil).
func (d *DataParallel) Group() *Group {
	if d == nil {
		return Local()
	}
	return d.g
}

// Rank is this process's rank.
func (d *DataParallel) Rank() int {
	if d == nil {
		return 0
	}
	return d.g.Rank()
}

// WorldSize is the number of processes.
func (d *DataParallel) WorldSize() int {
	if d == nil {
		return 1
	}
	return d.g.WorldSize()
}

// IsMain reports whether this rank writes checkpoints, metrics and plots.
func (d *DataParallel) IsMain() bool { return d.Rank() == 0 }

// LocalBatch is each rank's share of a global batch; sizes that do not
// divide by the world size are refused, so every step averages equal shards.
func (d *DataParallel) LocalBatch(global int) (int, error) {
	w := d.WorldSize()
	if global <= 0 || global%w != 0 {
		return 0, fmt.Errorf("batch size %d (the global batch) does not divide by the world size %d", global, w)
	}
	return global / w, nil
}

// Sampler returns this rank's samples of one global batch: the contiguous
// block [r·n/W, (r+1)·n/W) of its n positions. With n divisible by W every
// rank gets n/W; otherwise (only a dataset smaller than one batch) the blocks
// differ by at most one and AverageGradients weights them by size.
func (d *DataParallel) Sampler(batch []int) []int {
	lo, hi := Span(len(batch), d.Rank(), d.WorldSize())
	return batch[lo:hi]
}

// Span is rank r's contiguous block [r·n/W, (r+1)·n/W) of n items split W
// ways; the blocks cover [0, n) exactly once.
func Span(n, r, w int) (lo, hi int) { return r * n / w, (r + 1) * n / w }

// BroadcastParams overwrites every tensor with rank 0's values (call at start
// and after a resume, so all ranks start from identical weights).
func (d *DataParallel) BroadcastParams(params ...*torch.Tensor) error {
	if d.WorldSize() == 1 {
		return nil
	}
	det := make([]*torch.Tensor, 0, len(params))
	defer func() {
		for _, t := range det {
			t.Close()
		}
	}()
	for i, p := range params {
		t, err := p.Detach() // in-place writes outside autograd
		if err != nil {
			return fmt.Errorf("dist: broadcast parameter %d: %w", i, err)
		}
		det = append(det, t)
	}
	return d.g.Broadcast(0, det...)
}

// AverageGradients turns each parameter's gradient, computed from a loss
// that is the mean over this rank's n samples, into the gradient of the mean
// loss over the global batch: Σ_r n_r·g_r / Σ_r n_r. Gradients are flattened
// into buckets of at most BucketBytes, one all-reduce each; the loss and n
// ride in the last bucket, so the global mean loss is returned at no extra
// cost, and so do the stop votes (see StopVote). Parameters without a gradient contribute zeros, as in DDP with
// find_unused_parameters.
func (d *DataParallel) AverageGradients(params []*torch.Tensor, loss float64, n int) (float64, error) {
	if d.WorldSize() == 1 {
		return loss, nil
	}
	s := torch.NewScope().WithGrad(torch.NoGrad)
	defer s.Close()
	grads := make([]*torch.Tensor, len(params))
	for i, p := range params {
		g, err := p.Grad()
		if err != nil {
			return 0, fmt.Errorf("dist: gradient of parameter %d: %w", i, err)
		}
		if g == nil {
			g = s.Zeros(p.DType(), p.Shape()...)
			if err := s.Err(); err != nil {
				return 0, err
			}
		} else {
			s.Adopt(g)
		}
		grads[i] = g
	}
	cap := d.BucketBytes
	if cap <= 0 {
		cap = DefaultBucketBytes
	}
	var buckets [][]int
	var cur []int
	var curBytes int64
	for i, g := range grads {
		b := g.Numel() * 4
		if len(cur) > 0 && curBytes+b > cap {
			buckets = append(buckets, cur)
			cur, curBytes = nil, 0
		}
		cur = append(cur, i)
		curBytes += b
	}
	buckets = append(buckets, cur)

	var total float64
	var globalLoss float64
	flats := make([]*torch.Tensor, len(buckets))
	for bi, idx := range buckets {
		parts := make([]*torch.Tensor, 0, len(idx)+1)
		for _, i := range idx {
			parts = append(parts, s.Reshape(s.To(grads[i], torch.Float32, grads[i].Device()), -1))
		}
		if bi == len(buckets)-1 {
			vote := float32(0)
			if d.StopVote != nil && d.StopVote() {
				vote = 1
			}
			parts = append(parts, s.FromFloat32On(grads[idx[0]].Device(), []float32{float32(loss), 1, vote}, 3))
		}
		flat := s.MulScalar(s.Cat(0, parts...), float64(n))
		if err := s.Err(); err != nil {
			return 0, fmt.Errorf("dist: gradient bucket %d: %w", bi, err)
		}
		t0 := time.Now()
		if err := d.g.AllReduce(Sum, flat); err != nil {
			return 0, err
		}
		d.reduceNanos.Add(int64(time.Since(t0)))
		d.reduceBytes.Add(flat.Numel() * 4)
		d.reduceCalls.Add(1)
		flats[bi] = flat
	}
	tail := flats[len(flats)-1]
	k := tail.Numel()
	sums, err := s.Narrow(tail, 0, k-3, 3).Float64s()
	if err != nil {
		return 0, fmt.Errorf("dist: reading the reduced loss: %w", err)
	}
	total = sums[1]
	if total <= 0 {
		return 0, fmt.Errorf("dist: the global batch is empty")
	}
	globalLoss = sums[0] / total
	if sums[2] > 0 && !d.stopAgreed.Swap(true) && d.OnStop != nil {
		d.OnStop()
	}
	for bi, idx := range buckets {
		flat := s.DivScalar(flats[bi], total)
		var off int64
		for _, i := range idx {
			g := grads[i]
			n := g.Numel()
			v := s.Reshape(s.To(s.Narrow(flat, 0, off, n), g.DType(), g.Device()), g.Shape()...)
			if err := s.Err(); err != nil {
				return 0, err
			}
			if params[i].Valid() {
				if pg, _ := params[i].Grad(); pg != nil {
					err = pg.CopyFrom(v)
					pg.Close()
					if err != nil {
						return 0, fmt.Errorf("dist: writing gradient %d: %w", i, err)
					}
				}
			}
			off += n
		}
	}
	return globalLoss, nil
}

// StopAgreed reports whether a rank voted to stop in a finished step.
func (d *DataParallel) StopAgreed() bool { return d != nil && d.stopAgreed.Load() }

// ReduceStats are the cumulative gradient all-reduce costs of this rank.
type ReduceStats struct {
	Calls   int64         // all-reduce calls (buckets)
	Bytes   int64         // bytes all-reduced (per rank)
	Elapsed time.Duration // time spent waiting in them
	// Buffers are BroadcastBuffers' costs (BatchNorm buffers; calls are
	// coalesced broadcasts, one per dtype).
	Buffers BroadcastStats
}

// BroadcastStats are the cumulative costs of broadcasting buffers.
type BroadcastStats struct {
	Calls   int64
	Bytes   int64
	Elapsed time.Duration
}

// Stats returns the all-reduce costs so far.
func (d *DataParallel) Stats() ReduceStats {
	if d == nil {
		return ReduceStats{}
	}
	return ReduceStats{Calls: d.reduceCalls.Load(), Bytes: d.reduceBytes.Load(), Elapsed: time.Duration(d.reduceNanos.Load()),
		Buffers: BroadcastStats{Calls: d.bufferCalls.Load(), Bytes: d.bufferBytes.Load(), Elapsed: time.Duration(d.bufferNanos.Load())}}
}

// AllGatherFloat32 concatenates every rank's slice in rank order; all slices
// must have the same length.
func (d *DataParallel) AllGatherFloat32(local []float32) ([]float32, error) {
	return d.Group().AllGatherFloat32(local)
}

// AllGatherFloat32 concatenates every rank's slice in rank order; all slices
// must have the same length (pad to the longest first).
func (g *Group) AllGatherFloat32(local []float32) ([]float32, error) {
	if g.WorldSize() == 1 {
		return append([]float32(nil), local...), nil
	}
	n := int64(len(local))
	buf := local
	if n == 0 {
		buf = []float32{0} // c10d needs a non-empty tensor
	}
	in, err := torch.FromFloat32(buf, 1, int64(len(buf)))
	if err != nil {
		return nil, err
	}
	defer in.Close()
	out, err := torch.FromFloat32(make([]float32, len(buf)*g.WorldSize()), int64(g.WorldSize()), int64(len(buf)))
	if err != nil {
		return nil, err
	}
	defer out.Close()
	if err := g.AllGather(in, out); err != nil {
		return nil, err
	}
	if n == 0 {
		return []float32{}, nil
	}
	return out.Float32s()
}
