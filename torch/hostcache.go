package torch

// #include "host_cache.h"
import "C"

import (
	"fmt"
	"math"
)

// HostCache configures the caching allocator for large CPU tensor blocks
// (cpp/host_cache.h). libtorch's default allocator gives every block to
// malloc, and glibc maps each block above 32 MiB afresh and unmaps it on
// free, so a training step at 512 px spends a third of its CPU time faulting
// in and zeroing pages it had a moment before. With the cache, a freed block
// of at least MinBytes waits for the next request of its size (whole pages;
// 2 MiB pieces on transparent huge pages where the kernel offers them).
//
// Idle blocks only fill the gap between the bytes in use and the most ever
// in use at once (since the cache was installed or last emptied): the cache
// never raises the process's peak memory. A block that would break that is
// unmapped, least recently freed first.
type HostCache struct {
	// MinBytes is the smallest block the cache serves; smaller ones stay
	// with libtorch's allocator. 0 means DefaultHostCacheMinBytes.
	MinBytes int64
	// IdleLimitBytes caps the idle blocks further; 0: no cap beyond the
	// peak rule.
	IdleLimitBytes int64
}

// DefaultHostCacheMinBytes is HostCache.MinBytes when unset: below it glibc
// reuses freed memory itself.
const DefaultHostCacheMinBytes = 1 << 20

// HostCacheStats are the cache's counters.
type HostCacheStats struct {
	Enabled    bool  // installed as libtorch's CPU allocator
	InUseBytes int64 // large blocks held by tensors
	IdleBytes  int64 // large blocks kept for reuse
	PeakBytes  int64 // most bytes in use at once since the cache was installed or emptied; in use + idle ≤ this
	Hits       int64 // large requests served from idle blocks
	Misses     int64 // large requests that mapped a new block
	Evictions  int64 // idle blocks unmapped to keep to the peak rule or IdleLimitBytes
}

// EnableHostCache installs the cache as libtorch's CPU allocator, or sets
// new limits when it is installed (idle blocks over a lower limit are
// unmapped at once). It is process-wide, as libtorch's
// allocator is; tensors that exist already keep their own deleters.
func EnableHostCache(c HostCache) error {
	if c.MinBytes == 0 {
		c.MinBytes = DefaultHostCacheMinBytes
	}
	if c.MinBytes < 0 || c.IdleLimitBytes < 0 {
		return fmt.Errorf("torch: host cache limits must not be negative (min %d, idle limit %d bytes)", c.MinBytes, c.IdleLimitBytes)
	}
	if c.IdleLimitBytes == 0 {
		c.IdleLimitBytes = math.MaxInt64
	}
	if err := CheckRuntime(); err != nil {
		return err
	}
	return cErr(C.ct_host_cache_enable(C.int64_t(c.MinBytes), C.int64_t(c.IdleLimitBytes)))
}

// DisableHostCache puts back the allocator the cache replaced and unmaps the
// idle blocks; blocks in use are unmapped as their tensors are freed.
// Disabling a cache that is not installed does nothing.
func DisableHostCache() error { return cErr(C.ct_host_cache_disable()) }

// EmptyHostCache unmaps every idle block, returning its memory to the
// system, and restarts the peak that bounds the idle blocks from the bytes
// in use now: call it between phases of different size (after training,
// before serving).
func EmptyHostCache() error { return cErr(C.ct_host_cache_empty()) }

// ReadHostCacheStats returns the cache's counters.
func ReadHostCacheStats() (HostCacheStats, error) {
	var v [C.CT_HOST_CACHE_NSTATS]C.int64_t
	if err := cErr(C.ct_host_cache_stats(&v[0], C.int64_t(len(v)))); err != nil {
		return HostCacheStats{}, err
	}
	return HostCacheStats{
		Enabled:    v[C.CT_HOST_CACHE_ENABLED] != 0,
		InUseBytes: int64(v[C.CT_HOST_CACHE_IN_USE_BYTES]),
		IdleBytes:  int64(v[C.CT_HOST_CACHE_IDLE_BYTES]),
		PeakBytes:  int64(v[C.CT_HOST_CACHE_PEAK_BYTES]),
		Hits:       int64(v[C.CT_HOST_CACHE_HITS]),
		Misses:     int64(v[C.CT_HOST_CACHE_MISSES]),
		Evictions:  int64(v[C.CT_HOST_CACHE_EVICTIONS]),
	}, nil
}
