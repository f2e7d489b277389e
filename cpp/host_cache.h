/* A caching allocator for large host (CPU) tensor blocks.
 *
 * libtorch's default CPU allocator hands every block to malloc, and glibc
 * serves blocks above its mmap threshold (at most 32 MiB) with a fresh mmap
 * that munmap returns on free; a training step at 512 px then faults in and
 * zeroes gigabytes of pages per step (a third of its CPU time, measured).
 * Installed, this allocator keeps freed blocks of at least min_bytes for reuse
 * by a request of the same size in whole pages (2 MiB pieces on transparent
 * huge pages where the kernel allows); smaller blocks still go to the
 * allocator it replaced. Idle blocks never exceed the gap between the bytes
 * in use and the most ever in use at once (so the cache adds nothing to the
 * peak), nor limit_bytes. Blocks already handed out keep their own deleter,
 * so installing and removing is safe at any time. Process-wide, like
 * libtorch's allocator registry.
 */
#ifndef CLIPAGIQA_HOST_CACHE_H
#define CLIPAGIQA_HOST_CACHE_H

#include "shim.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Installs the cache (or changes its limits when installed). */
ct_error ct_host_cache_enable(int64_t min_bytes, int64_t limit_bytes);
/* Restores the allocator the cache replaced and unmaps every idle block;
 * blocks in use are unmapped when their tensors are freed. */
ct_error ct_host_cache_disable(void);
/* Unmaps every idle block and restarts the peak from the bytes in use. */
ct_error ct_host_cache_empty(void);

/* Counters of ct_host_cache_stats, in this order. */
enum {
  CT_HOST_CACHE_ENABLED = 0, /* 1 while installed */
  CT_HOST_CACHE_IN_USE_BYTES,  /* large blocks held by tensors */
  CT_HOST_CACHE_IDLE_BYTES,    /* large blocks kept for reuse */
  CT_HOST_CACHE_PEAK_BYTES,    /* most in use at once since enable or empty */
  CT_HOST_CACHE_HITS,          /* large requests served from idle blocks */
  CT_HOST_CACHE_MISSES,        /* large requests that mapped a new block */
  CT_HOST_CACHE_EVICTIONS,     /* idle blocks unmapped to keep to the bounds */
  CT_HOST_CACHE_NSTATS
};
ct_error ct_host_cache_stats(int64_t *out, int64_t n);

#ifdef __cplusplus
}
#endif

#endif
