// Package loader decodes and preprocesses dataset images into float32
// batches in parallel, deterministically (augmentation draws depend on the
// seed and the sample, not on scheduling), and reports unreadable images
// instead of stopping.
package loader

import (
	"context"
	"fmt"
	"iter"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/clipagiqa/clipagiqa/clipagiqa/imageprep"
	"github.com/clipagiqa/clipagiqa/data"
	"github.com/clipagiqa/clipagiqa/internal/regularfile"
)

// Options configure LoadBatches.
type Options struct {
	// Prep sets the output size, normalisation and pixel limit.
	Prep imageprep.Options
	// BatchSize is the number of images per batch (0: 32).
	BatchSize int
	// Workers decode and transform in parallel (0: runtime.NumCPU()).
	Workers int
	// Prefetch is how many batches may be prepared ahead of the consumer
	// (0: 2); with Workers it bounds the memory in flight.
	Prefetch int
	// Augment applies the training augmentation (RandomResizedCrop + flip)
	// instead of the centre transform, drawing from SampleRNG(Seed, Stream,
	// sample index), so the result does not depend on scheduling.
	Augment bool
	// Seed and Stream (usually the epoch) select the augmentation draws.
	Seed, Stream uint64
	// Transform, if set, replaces both transforms: it writes sample's tensor
	// into dst (length Prep.TensorLen()).
	Transform func(dst []float32, img *imageprep.Image, sample int) error
}

func (o *Options) normalise() {
	if o.BatchSize <= 0 {
		o.BatchSize = 32
	}
	if o.Workers <= 0 {
		o.Workers = runtime.NumCPU()
	}
	if o.Prefetch <= 0 {
		o.Prefetch = 2
	}
}

// Batch is a run of consecutive positions of the loading order, decoded and
// preprocessed; images that failed are left out and listed in Failed.
type Batch struct {
	// Start is the position in the order of the batch's first image.
	Start int
	// Indices are the sample indices of the images in Pixels, in order.
	Indices []int
	// Pixels is len(Indices)×3×Size×Size float32, NCHW.
	Pixels []float32
	MOS    []float32
	Names  []string
	Failed []ImageError
}

// Len is the number of images in the batch.
func (b *Batch) Len() int { return len(b.Indices) }

// ImageError is an image that could not be read, decoded or transformed.
type ImageError struct {
	Index int // sample index
	Name  string
	Path  string
	Err   error
}

func (e ImageError) Error() string { return fmt.Sprintf("%s: %v", e.Name, e.Err) }

// Unwrap returns the cause.
func (e ImageError) Unwrap() error { return e.Err }

// ImageErrors reports every unreadable image at once, so a user can fix
// them together.
type ImageErrors []ImageError

// maxImageErrorsListed bounds the message; all errors stay in the slice.
const maxImageErrorsListed = 20

func (e ImageErrors) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d image(s) could not be read: ", len(e))
	for i, x := range e {
		if i == maxImageErrorsListed {
			fmt.Fprintf(&b, "; … and %d more", len(e)-i)
			break
		}
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(x.Error())
	}
	return b.String()
}

// Unwrap exposes the individual errors to errors.Is/As.
func (e ImageErrors) Unwrap() []error {
	out := make([]error, len(e))
	for i, x := range e {
		out[i] = x
	}
	return out
}

// Mix64 is SplitMix64's finaliser: a bijective scramble so nearby seeds,
// epochs and indices give unrelated streams.
func Mix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// SampleRNG is the random source of one image's augmentation in one stream
// (epoch): a pure function of (seed, stream, index), so parallel workers
// give the same draws in any order.
func SampleRNG(seed, stream uint64, index int) *rand.Rand {
	return rand.New(rand.NewPCG(Mix64(seed^Mix64(stream)), Mix64(uint64(index)^0x5851f42d4c957f2d)))
}

// loadSlot is one batch being prepared.
type loadSlot struct {
	start, n  int
	pixels    []float32
	errs      []error
	remaining atomic.Int64
	done      chan struct{}
}

type loadJob struct {
	slot *loadSlot
	k    int // position in the batch
	idx  int // sample index
}

// LoadBatches decodes and preprocesses samples[order[i]] (all samples in
// order when order is nil) with a pool of workers and yields batches in
// order. Per-image failures are reported in Batch.Failed; the error is
// only set (and iteration ends) when ctx is cancelled. Breaking out of the
// loop stops the workers.
func LoadBatches(ctx context.Context, samples []data.Sample, order []int, opts Options) iter.Seq2[*Batch, error] {
	opts.normalise()
	if order == nil {
		order = make([]int, len(samples))
		for i := range order {
			order[i] = i
		}
	}
	return func(yield func(*Batch, error) bool) {
		for _, i := range order {
			if i < 0 || i >= len(samples) {
				yield(nil, fmt.Errorf("loader: sample index %d out of range [0, %d)", i, len(samples)))
				return
			}
		}
		ctx, cancel := context.WithCancel(ctx)
		per := opts.Prep.TensorLen()
		jobs := make(chan loadJob, 2*opts.Workers)
		ready := make(chan *loadSlot, opts.Prefetch)
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { // producer: slots in order, then their jobs
			defer wg.Done()
			defer close(jobs)
			defer close(ready)
			for start := 0; start < len(order); start += opts.BatchSize {
				n := min(opts.BatchSize, len(order)-start)
				sl := &loadSlot{start: start, n: n, pixels: make([]float32, n*per), errs: make([]error, n), done: make(chan struct{})}
				sl.remaining.Store(int64(n))
				select {
				case ready <- sl:
				case <-ctx.Done():
					return
				}
				for k := range n {
					select {
					case jobs <- loadJob{slot: sl, k: k, idx: order[start+k]}:
					case <-ctx.Done():
						return
					}
				}
			}
		}()
		for range opts.Workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := range jobs {
					if ctx.Err() == nil {
						j.slot.errs[j.k] = loadOne(j.slot.pixels[j.k*per:(j.k+1)*per], samples[j.idx], j.idx, &opts)
					}
					if j.slot.remaining.Add(-1) == 0 {
						close(j.slot.done)
					}
				}
			}()
		}
		defer func() {
			cancel()
			for range ready { // unblock the producer
			}
			wg.Wait()
		}()
		for sl := range ready {
			select {
			case <-sl.done:
			case <-ctx.Done():
				yield(nil, fmt.Errorf("loader: %w", ctx.Err()))
				return
			}
			if err := ctx.Err(); err != nil {
				yield(nil, fmt.Errorf("loader: %w", err))
				return
			}
			if !yield(assemble(sl, samples, order, per), nil) {
				return
			}
		}
		if err := ctx.Err(); err != nil { // the producer stopped early
			yield(nil, fmt.Errorf("loader: %w", err))
		}
	}
}

// loadOne reads, decodes and transforms one sample into dst.
func loadOne(dst []float32, s data.Sample, idx int, opts *Options) error {
	raw, err := regularfile.ReadFile(s.Path)
	if err != nil {
		return err
	}
	img, err := imageprep.Decode(raw, opts.Prep.MaxPixels)
	if err != nil {
		return err
	}
	switch {
	case opts.Transform != nil:
		err = opts.Transform(dst, img, idx)
	case opts.Augment:
		err = imageprep.RandomTransformInto(dst, img, opts.Prep, SampleRNG(opts.Seed, opts.Stream, idx))
	default:
		err = imageprep.CenterTransformInto(dst, img, opts.Prep)
	}
	if err != nil {
		return fmt.Errorf("transform: %w", err)
	}
	return nil
}

// assemble compacts a finished slot into a Batch, moving failed images out.
func assemble(sl *loadSlot, samples []data.Sample, order []int, per int) *Batch {
	b := &Batch{Start: sl.start, Pixels: sl.pixels}
	w := 0
	for k := range sl.n {
		idx := order[sl.start+k]
		s := samples[idx]
		if err := sl.errs[k]; err != nil {
			b.Failed = append(b.Failed, ImageError{Index: idx, Name: s.Name, Path: s.Path, Err: err})
			continue
		}
		if w != k {
			copy(b.Pixels[w*per:(w+1)*per], b.Pixels[k*per:(k+1)*per])
		}
		b.Indices = append(b.Indices, idx)
		b.MOS = append(b.MOS, float32(s.MOS))
		b.Names = append(b.Names, s.Name)
		w++
	}
	b.Pixels = b.Pixels[:w*per]
	return b
}
