package agiqa

import (
	"context"
	"fmt"

	"github.com/clipagiqa/clipagiqa/clipagiqa/loader"
	"github.com/clipagiqa/clipagiqa/data"
	"github.com/clipagiqa/clipagiqa/torch/dist"
)

// Gatherer is what a sharded feature-cache build needs from a process group
// (*dist.DataParallel and *dist.Group provide it).
type Gatherer interface {
	Rank() int
	WorldSize() int
	// AllGatherFloat32 concatenates equal-length slices of all ranks in rank order.
	AllGatherFloat32(local []float32) ([]float32, error)
}

func isMainRank(g Gatherer) bool { return g == nil || g.Rank() == 0 }

// encodeMissing encodes the views of samples[miss[j]], in one process or
// split across opts.Parallel's ranks.
func encodeMissing(ctx context.Context, m *Model, samples []data.Sample, miss []int, hashes [][32]byte, spec featureSpec, opts CacheOptions) ([]float32, []loader.ImageError, error) {
	if opts.Parallel == nil || opts.Parallel.WorldSize() <= 1 {
		return encodeViews(ctx, m, samples, miss, hashes, spec, opts, nil)
	}
	return encodeSharded(ctx, m, samples, miss, hashes, spec, opts, opts.Parallel)
}

// encodeSharded cuts the jobs (miss × views, image-major) into the encoder
// batches one process would run, gives each rank a contiguous run of whole
// batches (dist.Span over the batch count), encodes its run and all-gathers
// rows and per-job success flags. Every batch is encoded with the same
// members as in one process, so the rows are bit-identical to a
// single-process build. A failure found on another rank is reported by that
// rank's number (its message stays in that rank's own output).
func encodeSharded(ctx context.Context, m *Model, samples []data.Sample, miss []int, hashes [][32]byte, spec featureSpec, opts CacheOptions, g Gatherer) ([]float32, []loader.ImageError, error) {
	views, embed := spec.Views, spec.Embed
	jobs := len(miss) * views
	bs := opts.BatchSize
	batches := (jobs + bs - 1) / bs
	w, rank := g.WorldSize(), g.Rank()
	jobSpan := func(r int) (int, int) {
		lo, hi := dist.Span(batches, r, w)
		return min(lo*bs, jobs), min(hi*bs, jobs)
	}
	longest := 0
	for r := range w {
		lo, hi := jobSpan(r)
		longest = max(longest, hi-lo)
	}
	lo, hi := jobSpan(rank)
	part := make([]int, 0, hi-lo)
	for j := lo; j < hi; j++ {
		part = append(part, j)
	}
	rows, failed, err := encodeViews(ctx, m, samples, miss, hashes, spec, opts, part)
	if err != nil {
		return nil, nil, err
	}
	bad := map[int]bool{}
	for _, f := range failed {
		bad[f.Index] = true
	}
	// Block of this rank: longest×embed rows, then longest flags (1 = encoded).
	block := longest * (embed + 1)
	local := make([]float32, block)
	copy(local, rows[lo*embed:hi*embed])
	for j := lo; j < hi; j++ {
		if !bad[miss[j/views]] {
			local[longest*embed+j-lo] = 1
		}
	}
	all, err := g.AllGatherFloat32(local)
	if err != nil {
		return nil, nil, fmt.Errorf("feature cache: gathering the ranks' features: %w", err)
	}
	if len(all) != block*w {
		return nil, nil, fmt.Errorf("feature cache: gathered %d values, want %d", len(all), block*w)
	}
	reported := map[int]bool{}
	for _, f := range failed {
		reported[f.Index] = true
	}
	for r := range w {
		rlo, rhi := jobSpan(r)
		b := all[r*block : (r+1)*block]
		copy(rows[rlo*embed:rhi*embed], b[:(rhi-rlo)*embed])
		for j := rlo; j < rhi; j++ {
			i := miss[j/views]
			if b[longest*embed+j-rlo] == 0 && !reported[i] {
				reported[i] = true
				failed = append(failed, loader.ImageError{Index: i, Name: samples[i].Name, Path: samples[i].Path,
					Err: fmt.Errorf("could not be read or decoded (reported by rank %d)", r)})
			}
		}
	}
	sortImageErrors(failed)
	return rows, failed, nil
}

// agree checks that every rank holds the same values (small integers, below
// 2^24), so that ranks which would run different collectives fail with a
// clear error instead of mismatching. what names the values for the message.
func agree(g Gatherer, what string, vals ...int) error {
	if g == nil || g.WorldSize() <= 1 {
		return nil
	}
	local := make([]float32, len(vals))
	for i, v := range vals {
		local[i] = float32(v)
	}
	all, err := g.AllGatherFloat32(local)
	if err != nil {
		return fmt.Errorf("checking %s across ranks: %w", what, err)
	}
	for r := range g.WorldSize() {
		for i := range vals {
			if all[r*len(vals)+i] != all[i] {
				return fmt.Errorf("ranks disagree on %s: rank 0 has %v, rank %d has %v (are the output and cache directories on a filesystem all ranks share?)",
					what, all[:len(vals)], r, all[r*len(vals):(r+1)*len(vals)])
			}
		}
	}
	return nil
}

// missKey summarises the contents to encode: their count and a 16-bit hash.
func missKey(miss []int, hashes [][32]byte) []int {
	var h uint16
	for _, i := range miss {
		h = h*31 + uint16(hashes[i][0])<<8 + uint16(hashes[i][1])
	}
	return []int{len(miss), int(h)}
}

// stopContext is the context a data-parallel epoch loop watches: it ends
// only once the ranks agreed to stop (this rank votes when ctx ends; votes
// ride on the gradient all-reduce), so all ranks stop after the same step
// instead of one leaving the others in a collective. One process: ctx itself.
func stopContext(ctx context.Context, dp *dist.DataParallel) (context.Context, context.CancelFunc) {
	if dp.WorldSize() <= 1 {
		return ctx, func() {}
	}
	agreed, cancel := context.WithCancel(context.WithoutCancel(ctx))
	dp.StopVote = func() bool { return ctx.Err() != nil }
	dp.OnStop = cancel
	return agreed, func() {
		dp.StopVote, dp.OnStop = nil, nil
		cancel()
	}
}
