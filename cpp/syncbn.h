/* SyncBatchNorm over a c10d group (dist.h): training-mode batch
 * normalisation whose statistics are those of the global batch, all ranks'
 * samples together, with a backward pass that all-reduces the two per-channel
 * gradient reductions, as torch.nn.SyncBatchNorm does. Errors as in shim.h. */
#ifndef CLIPAGIQA_SYNCBN_H
#define CLIPAGIQA_SYNCBN_H

#include <stdint.h>

#include "dist.h"
#include "shim.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Normalises x [N, C, ...] by the mean and biased variance over every rank's
 * x, scales by w and shifts by b (either may be NULL), and updates
 * running_mean / running_var (either may be NULL) with momentum, the running
 * variance from the unbiased global variance. Every rank of g (of
 * world_size ranks) must call it for the same layers in the same order. */
ct_error ct_dist_sync_batch_norm(ct_mode m, ct_dist_group g, int32_t world_size, ct_tensor x,
                                 ct_tensor w, ct_tensor b, ct_tensor running_mean,
                                 ct_tensor running_var, double momentum, double eps,
                                 ct_tensor *out);

#ifdef __cplusplus
}
#endif

#endif
