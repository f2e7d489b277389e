/* Neural-network ops for torch/nn (convolution, normalisation, pooling,
 * resampling, masking). Same conventions as shim.h: every entry point catches
 * everything and returns NULL or a malloc'd error message; results come back
 * through out-parameters; m carries the grad mode of the call. Pairs of
 * int64_t are (height, width).
 */
#ifndef CLIPAGIQA_NN_OPS_H
#define CLIPAGIQA_NN_OPS_H

#include "shim.h"

#ifdef __cplusplus
extern "C" {
#endif

/* F.conv2d with per-axis stride, padding and dilation, and groups; b may be NULL. */
ct_error ct_conv2d_ex(ct_mode m, ct_tensor x, ct_tensor w, ct_tensor b, const int64_t *stride,
                      const int64_t *padding, const int64_t *dilation, int64_t groups,
                      ct_tensor *out);

/* F.batch_norm. training != 0 normalises with batch statistics and updates
 * running_mean/running_var in place (momentum, unbiased variance); otherwise
 * uses the running statistics. w, b, running_mean, running_var may be NULL
 * (training without running buffers). */
ct_error ct_batch_norm(ct_mode m, ct_tensor x, ct_tensor w, ct_tensor b, ct_tensor running_mean,
                       ct_tensor running_var, int32_t training, double momentum, double eps,
                       ct_tensor *out);

/* F.avg_pool2d. divisor_override <= 0 means none. */
ct_error ct_avg_pool2d(ct_mode m, ct_tensor x, const int64_t *kernel, const int64_t *stride,
                       const int64_t *padding, int32_t ceil_mode, int32_t count_include_pad,
                       int64_t divisor_override, ct_tensor *out);

/* F.max_pool2d (values only). */
ct_error ct_max_pool2d(ct_mode m, ct_tensor x, const int64_t *kernel, const int64_t *stride,
                       const int64_t *padding, const int64_t *dilation, int32_t ceil_mode,
                       ct_tensor *out);

/* F.adaptive_avg_pool2d to the given output size. */
ct_error ct_adaptive_avg_pool2d(ct_mode m, ct_tensor x, const int64_t *size, ct_tensor *out);

/* Interpolation modes of ct_interpolate. */
enum { CT_INTERP_NEAREST = 0, CT_INTERP_BILINEAR = 1, CT_INTERP_BICUBIC = 2 };

/* F.interpolate(x, size=size, mode=mode, align_corners=...) of a 4-D tensor.
 * align_corners is ignored for nearest, as in PyTorch. */
ct_error ct_interpolate(ct_mode m, ct_tensor x, const int64_t *size, int32_t mode,
                        int32_t align_corners, ct_tensor *out);

/* torch.flatten(x, start_dim, end_dim). */
ct_error ct_flatten(ct_mode m, ct_tensor x, int64_t start_dim, int64_t end_dim, ct_tensor *out);

/* torch.amax over dims (all when dims is NULL). */
ct_error ct_amax(ct_mode m, ct_tensor x, const int64_t *dims, int64_t ndims, int32_t keepdim,
                 ct_tensor *out);

/* x.masked_fill(mask, value); mask is bool and broadcasts to x. */
ct_error ct_masked_fill(ct_mode m, ct_tensor x, ct_tensor mask, double value, ct_tensor *out);

/* F.embedding with padding_idx (< 0: none); rows at padding_idx get no gradient. */
ct_error ct_embedding_ex(ct_mode m, ct_tensor weight, ct_tensor ids, int64_t padding_idx,
                         ct_tensor *out);

/* F.cosine_embedding_loss(a, b, target, margin) with mean reduction. */
ct_error ct_cosine_embedding_loss(ct_mode m, ct_tensor a, ct_tensor b, ct_tensor target,
                                  double margin, ct_tensor *out);

/* torch.nn.utils.clip_grad_norm_ over n tensors (those without a gradient are
 * skipped): scales gradients in place so that their joint norm_type-norm is at
 * most max_norm; *total is the norm before clipping. norm_type may be +Inf. */
ct_error ct_clip_grad_norm(const ct_tensor *params, int64_t n, double max_norm, double norm_type,
                           double *total);

/* Memory formats of ct_to_memory_format and ct_is_contiguous_as. */
enum { CT_FORMAT_CONTIGUOUS = 0, CT_FORMAT_CHANNELS_LAST = 1 };

/* x.contiguous(memory_format): a 4-D tensor laid out row-major (NCHW) or
 * channels-last (NHWC strides, same shape); x itself when it already is. */
ct_error ct_to_memory_format(ct_mode m, ct_tensor x, int32_t format, ct_tensor *out);

/* x.is_contiguous(memory_format) into *out (1 or 0). */
ct_error ct_is_contiguous_as(ct_tensor x, int32_t format, int32_t *out);

#ifdef __cplusplus
}
#endif
#endif
