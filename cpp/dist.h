/* C interface over libtorch's distributed engine, c10d: a process group
 * (Gloo for CPU tensors, NCCL for CUDA ones where libtorch was built with it)
 * rendezvoused through a TCPStore hosted by rank 0.
 *
 * As in shim.h, every call that can fail returns NULL or a malloc'd error
 * message (free with ct_free_string); no C++ exception leaves these functions.
 * Every collective is bounded by the group's timeout. When one fails, the
 * message names the ranks whose heartbeat stopped, when that can be told.
 */
#ifndef CLIPAGIQA_DIST_H
#define CLIPAGIQA_DIST_H

#include <stdint.h>

#include "shim.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef void *ct_dist_group;

enum { CT_DIST_GLOO = 0, CT_DIST_NCCL = 1 };
enum { CT_DIST_SUM = 0, CT_DIST_AVG = 1, CT_DIST_MAX = 2, CT_DIST_MIN = 3 };

/* Report whether this library was compiled with the Gloo / NCCL backends. */
int32_t ct_dist_has_gloo(void);
int32_t ct_dist_has_nccl(void);

/* Joins the group: rank 0 hosts the TCPStore on master_port, the others
 * connect to master_addr:master_port. With agent_store set, a launcher
 * (torchrun's static rendezvous) already hosts it and every rank connects as
 * a client. Keys are prefixed with store_prefix ("" for none). timeout_ms
 * bounds the rendezvous and every later collective; heartbeat_ms > 0 starts a
 * liveness counter used to name lost peers. */
ct_error ct_dist_init(const char *master_addr, int32_t master_port,
                      int32_t rank, int32_t world_size, int32_t backend,
                      int64_t timeout_ms, int64_t heartbeat_ms,
                      int32_t agent_store, const char *store_prefix,
                      ct_dist_group *out);
/* Destroys the group (waits for its worker threads). NULL is ignored. */
void ct_dist_free(ct_dist_group g);

/* In-place all-reduce of each tensor (dense, contiguous, same device). */
ct_error ct_dist_all_reduce(ct_dist_group g, const ct_tensor *ts, int64_t n,
                            int32_t op);
/* In-place broadcast of each tensor from root. */
ct_error ct_dist_broadcast(ct_dist_group g, const ct_tensor *ts, int64_t n,
                           int32_t root);
/* Gathers input from every rank into output, whose first dimension is
 * world_size times input's (rank r's block at rows [r*n, (r+1)*n)). */
ct_error ct_dist_all_gather(ct_dist_group g, ct_tensor input, ct_tensor output);
ct_error ct_dist_barrier(ct_dist_group g);

/* Ranks whose heartbeat stopped during a probe of about 3 heartbeats, as a
 * bitmask in *lost (bit r = rank r; ranks >= 64 are not reported). *store_lost
 * is 1 when the store (rank 0) itself cannot be reached. */
ct_error ct_dist_probe_peers(ct_dist_group g, uint64_t *lost,
                             int32_t *store_lost);

#ifdef __cplusplus
}
#endif

#endif
