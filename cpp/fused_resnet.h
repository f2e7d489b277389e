/* Eval-mode trunk of CLIP's ModifiedResNet as one native op (see
 * fused_resnet.cc): every BatchNorm folded into the convolution before it,
 * channels-last activations, ReLU and the residual add in place. The Go
 * model keeps its weights; the handle memoises the folded copies and refolds
 * a convolution whenever one of its source tensors changed (another tensor,
 * or the same one modified in place by an op that bumps its version
 * counter; ct_resnet_invalidate covers writes that do not). Same conventions as shim.h: errors are malloc'd strings, NULL on
 * success.
 */
#ifndef CLIPAGIQA_FUSED_RESNET_H
#define CLIPAGIQA_FUSED_RESNET_H

#include "shim.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef void *ct_resnet;

/* Lays out a trunk from n weights named as in CLIP's ModifiedResNet (relative
 * to "visual."): conv1..conv3.weight and bn1..bn3.{weight,bias,running_mean,
 * running_var} of the stem, then layer<S>.<I>.conv1..conv3.weight,
 * .bn1..bn3.*, and .downsample.0.weight, .downsample.1.* where present, for
 * stages 1..4 with blocks 0..B-1 each. Other names (attnpool, counters) are
 * refused. strides holds each block's stride (its average pool; 1: none),
 * stage by stage, nstrides of them: the model's, so the layout has one
 * source. The weights must be CPU float32 with matching shapes; eps is
 * BatchNorm's. */
ct_error ct_resnet_new(const char *const *names, const ct_tensor *weights, int64_t n, const int64_t *strides,
                       int64_t nstrides, double eps, ct_resnet *out);
void ct_resnet_free(ct_resnet r);
/* The weights, in the order of ct_resnet_new's names, and pixels [N, 3, H, W]
 * (CPU float32) → the last stage's map [N, 32·width, H/32, W/32], row-major,
 * without autograd history. When the call's mode records history and the
 * pixels or a weight require grad, *out is set to NULL and nothing is
 * computed: the caller takes the op-by-op path. Calls may run concurrently. */
ct_error ct_resnet_forward(ct_resnet r, ct_mode m, const ct_tensor *weights, int64_t n, ct_tensor pixels,
                           ct_tensor *out);
/* Marks every fold stale, so the next call refolds each convolution: for
 * writes that leave the version counters alone (training-mode BatchNorm
 * updates its running statistics in its kernel; c10d collectives write
 * through the data pointer). */
ct_error ct_resnet_invalidate(ct_resnet r);
/* How many convolutions the handle has folded so far (one per convolution at
 * the first call, then one per convolution whose weights changed); -1 if
 * the handle's lock fails. */
int64_t ct_resnet_folds(ct_resnet r);
/* Bytes of folded weights the handle holds; -1 if the handle's lock fails. */
int64_t ct_resnet_folded_bytes(ct_resnet r);

#ifdef __cplusplus
}
#endif
#endif
