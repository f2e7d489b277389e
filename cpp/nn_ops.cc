// Neural-network ops for torch/nn: see nn_ops.h for the contract.
#include "nn_ops.h"

#include "op_guard.h"

#include <vector>

using ct_op::opt;
using ct_op::T;

namespace {

at::IntArrayRef pair(const int64_t *p) {
  if (p == nullptr) throw std::invalid_argument("nil size pair");
  return at::IntArrayRef(p, 2);
}

at::MemoryFormat memory_format(int32_t f) {
  switch (f) {
    case CT_FORMAT_CONTIGUOUS: return at::MemoryFormat::Contiguous;
    case CT_FORMAT_CHANNELS_LAST: return at::MemoryFormat::ChannelsLast;
  }
  throw std::invalid_argument("unknown memory format " + std::to_string(f));
}

}  // namespace

extern "C" {

ct_error ct_conv2d_ex(ct_mode m, ct_tensor x, ct_tensor w, ct_tensor b, const int64_t *stride,
                      const int64_t *padding, const int64_t *dilation, int64_t groups,
                      ct_tensor *out) {
  CT_OP_RUN(at::conv2d(T(x), T(w), opt(b), pair(stride), pair(padding), pair(dilation), groups))
}

ct_error ct_batch_norm(ct_mode m, ct_tensor x, ct_tensor w, ct_tensor b, ct_tensor running_mean,
                       ct_tensor running_var, int32_t training, double momentum, double eps,
                       ct_tensor *out) {
  CT_OP_TRY
  if (training == 0 && (running_mean == nullptr || running_var == nullptr))
    throw std::invalid_argument("batch_norm in eval mode needs running_mean and running_var");
  ct_op::Mode mode(m);
  *out = ct_op::wrap(at::batch_norm(T(x), opt(w), opt(b), opt(running_mean), opt(running_var),
                                    training != 0, momentum, eps, /*cudnn_enabled=*/true));
  CT_OP_CATCH
}

ct_error ct_avg_pool2d(ct_mode m, ct_tensor x, const int64_t *kernel, const int64_t *stride,
                       const int64_t *padding, int32_t ceil_mode, int32_t count_include_pad,
                       int64_t divisor_override, ct_tensor *out) {
  CT_OP_RUN(at::avg_pool2d(T(x), pair(kernel), pair(stride), pair(padding), ceil_mode != 0,
                           count_include_pad != 0,
                           divisor_override > 0 ? c10::optional<int64_t>(divisor_override)
                                                : c10::nullopt))
}

ct_error ct_max_pool2d(ct_mode m, ct_tensor x, const int64_t *kernel, const int64_t *stride,
                       const int64_t *padding, const int64_t *dilation, int32_t ceil_mode,
                       ct_tensor *out) {
  CT_OP_RUN(at::max_pool2d(T(x), pair(kernel), pair(stride), pair(padding), pair(dilation),
                           ceil_mode != 0))
}

ct_error ct_adaptive_avg_pool2d(ct_mode m, ct_tensor x, const int64_t *size, ct_tensor *out) {
  CT_OP_RUN(at::adaptive_avg_pool2d(T(x), pair(size)))
}

ct_error ct_interpolate(ct_mode m, ct_tensor x, const int64_t *size, int32_t mode_code,
                        int32_t align_corners, ct_tensor *out) {
  CT_OP_TRY
  ct_op::Mode mode(m);
  const at::Tensor &in = T(x);
  if (in.dim() != 4) throw std::invalid_argument("interpolate wants a 4-D [N,C,H,W] tensor");
  // F.interpolate(size=...) passes no scale factors: the kernels derive them
  // from input/output sizes.
  switch (mode_code) {
    case CT_INTERP_NEAREST:
      *out = ct_op::wrap(at::upsample_nearest2d(in, pair(size), c10::nullopt, c10::nullopt));
      break;
    case CT_INTERP_BILINEAR:
      *out = ct_op::wrap(at::upsample_bilinear2d(in, pair(size), align_corners != 0, c10::nullopt,
                                                 c10::nullopt));
      break;
    case CT_INTERP_BICUBIC:
      *out = ct_op::wrap(at::upsample_bicubic2d(in, pair(size), align_corners != 0, c10::nullopt,
                                                c10::nullopt));
      break;
    default:
      throw std::invalid_argument("unknown interpolation mode " + std::to_string(mode_code));
  }
  CT_OP_CATCH
}

ct_error ct_flatten(ct_mode m, ct_tensor x, int64_t start_dim, int64_t end_dim, ct_tensor *out) {
  CT_OP_RUN(T(x).flatten(start_dim, end_dim))
}

ct_error ct_amax(ct_mode m, ct_tensor x, const int64_t *dims, int64_t ndims, int32_t keepdim,
                 ct_tensor *out) {
  CT_OP_RUN(dims == nullptr ? at::amax(T(x), at::IntArrayRef{}, keepdim != 0)
                            : at::amax(T(x), at::IntArrayRef(dims, ndims), keepdim != 0))
}

ct_error ct_masked_fill(ct_mode m, ct_tensor x, ct_tensor mask, double value, ct_tensor *out) {
  CT_OP_RUN(T(x).masked_fill(T(mask), value))
}

ct_error ct_embedding_ex(ct_mode m, ct_tensor weight, ct_tensor ids, int64_t padding_idx,
                         ct_tensor *out) {
  CT_OP_RUN(at::embedding(T(weight), T(ids), padding_idx < 0 ? -1 : padding_idx))
}

ct_error ct_cosine_embedding_loss(ct_mode m, ct_tensor a, ct_tensor b, ct_tensor target,
                                  double margin, ct_tensor *out) {
  CT_OP_RUN(at::cosine_embedding_loss(T(a), T(b), T(target), margin, at::Reduction::Mean))
}

ct_error ct_clip_grad_norm(const ct_tensor *params, int64_t n, double max_norm, double norm_type,
                           double *total) {
  CT_OP_TRY
  ct_apply_num_threads();
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> ps;
  ps.reserve(n);
  for (int64_t i = 0; i < n; i++) ps.push_back(T(params[i]));
  *total = torch::nn::utils::clip_grad_norm_(ps, max_norm, norm_type);
  CT_OP_CATCH
}

ct_error ct_to_memory_format(ct_mode m, ct_tensor x, int32_t format, ct_tensor *out) {
  CT_OP_TRY
  const at::MemoryFormat f = memory_format(format);
  if (f == at::MemoryFormat::ChannelsLast && T(x).dim() != 4)
    throw std::invalid_argument("channels-last needs a 4-D tensor, got " +
                                std::to_string(T(x).dim()) + "-D");
  ct_op::Mode mode(m);
  *out = ct_op::wrap(T(x).contiguous(f));
  CT_OP_CATCH
}

ct_error ct_is_contiguous_as(ct_tensor x, int32_t format, int32_t *out) {
  CT_OP_TRY
  *out = T(x).is_contiguous(memory_format(format)) ? 1 : 0;
  CT_OP_CATCH
}

}  // extern "C"
