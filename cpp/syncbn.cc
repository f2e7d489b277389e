// SyncBatchNorm: batch statistics over every rank of a c10d group. The
// collectives go through dist.h's C interface, so this file needs nothing of
// dist.cc's internals.
#include "syncbn.h"

#include "op_guard.h"

#include <torch/torch.h>

#include <cstdlib>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

using ct_op::T;

// Turns a collective's error string into an exception (caught at the shim
// boundary, or by ct_backward when raised inside autograd).
void check(ct_error e) {
  if (e == nullptr) return;
  std::string msg(e);
  std::free(e);
  throw std::runtime_error(msg);
}

// Per-channel view shape [1, C, 1, ...] for broadcasting over x.
std::vector<int64_t> channel_shape(const at::Tensor &x) {
  std::vector<int64_t> s(x.dim(), 1);
  s[1] = x.size(1);
  return s;
}

std::vector<int64_t> reduce_dims(const at::Tensor &x) {
  std::vector<int64_t> d{0};
  for (int64_t i = 2; i < x.dim(); ++i) d.push_back(i);
  return d;
}

// The normalisation given global statistics; backward all-reduces
// Σdy and Σdy·(x−mean) so that dx is the gradient of the sum of every rank's
// loss (DDP's gradient averaging then divides by the world size).
struct SyncBNFn : public torch::autograd::Function<SyncBNFn> {
  static at::Tensor forward(torch::autograd::AutogradContext *ctx, at::Tensor x, at::Tensor w,
                            at::Tensor b, at::Tensor mean, at::Tensor invstd, int64_t group,
                            double total) {
    auto cs = channel_shape(x);
    at::Tensor xf = x.to(at::kFloat);
    at::Tensor y = (xf - mean.view(cs)) * invstd.view(cs);
    if (w.defined()) y = y * w.to(at::kFloat).view(cs);
    if (b.defined()) y = y + b.to(at::kFloat).view(cs);
    ctx->save_for_backward({x, w, mean, invstd});
    ctx->saved_data["group"] = group;
    ctx->saved_data["total"] = total;
    ctx->saved_data["has_bias"] = b.defined();
    ctx->saved_data["bias_dtype"] = b.defined() ? static_cast<int64_t>(b.scalar_type()) : int64_t(0);
    return y.to(x.scalar_type());
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext *ctx,
                                                 torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    at::Tensor x = saved[0], w = saved[1], mean = saved[2], invstd = saved[3];
    auto group = reinterpret_cast<ct_dist_group>(ctx->saved_data["group"].toInt());
    double total = ctx->saved_data["total"].toDouble();
    auto cs = channel_shape(x);
    auto dims = reduce_dims(x);
    at::Tensor dy = grads[0].to(at::kFloat);
    at::Tensor xmu = x.to(at::kFloat) - mean.view(cs);
    at::Tensor sum_dy = dy.sum(dims);
    at::Tensor sum_dy_xmu = (dy * xmu).sum(dims);
    at::Tensor dx, dw, db;
    if (ctx->needs_input_grad(0)) {
      int64_t c = x.size(1);
      at::Tensor both = at::cat({sum_dy, sum_dy_xmu}).contiguous();
      ct_tensor h = &both;
      check(ct_dist_all_reduce(group, &h, 1, CT_DIST_SUM));
      at::Tensor mean_dy = both.narrow(0, 0, c) / total;
      at::Tensor mean_dy_xmu = both.narrow(0, c, c) / total;
      at::Tensor scale = w.defined() ? invstd * w.to(at::kFloat) : invstd;
      dx = (dy - mean_dy.view(cs) - xmu * (invstd * invstd * mean_dy_xmu).view(cs)) * scale.view(cs);
      dx = dx.to(x.scalar_type());
    }
    if (w.defined() && ctx->needs_input_grad(1)) dw = (sum_dy_xmu * invstd).to(w.scalar_type());
    if (ctx->saved_data["has_bias"].toBool() && ctx->needs_input_grad(2))
      db = sum_dy.to(static_cast<at::ScalarType>(ctx->saved_data["bias_dtype"].toInt()));
    return {dx, dw, db, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

extern "C" {

ct_error ct_dist_sync_batch_norm(ct_mode m, ct_dist_group g, int32_t world_size, ct_tensor x,
                                 ct_tensor w, ct_tensor b, ct_tensor running_mean,
                                 ct_tensor running_var, double momentum, double eps,
                                 ct_tensor *out) {
  CT_OP_TRY
  if (g == nullptr) throw std::invalid_argument("sync batch norm: no process group");
  if (world_size < 1) throw std::invalid_argument("sync batch norm: world size below 1");
  ct_op::Mode mode(m);
  const at::Tensor &in = T(x);
  if (in.dim() < 2) throw std::invalid_argument("sync batch norm: input needs a channel dimension");
  int64_t c = in.size(1);
  at::Tensor mean, invstd;
  double total;
  {
    // Global statistics from every rank's (count, mean, M2), combined as
    // Chan et al.'s parallel variance does, in double.
    at::NoGradGuard no_grad;
    auto dims = reduce_dims(in);
    at::Tensor xd = in.detach().to(at::kDouble);
    double n_local = static_cast<double>(in.numel() / c);
    at::Tensor mean_l, m2_l;
    if (n_local > 0) {
      mean_l = xd.mean(dims);
      m2_l = (xd - mean_l.view(channel_shape(in))).pow(2).sum(dims);
    } else {
      mean_l = at::zeros({c}, xd.options());
      m2_l = at::zeros({c}, xd.options());
    }
    at::Tensor local = at::cat({mean_l, m2_l, at::full({1}, n_local, xd.options())}).contiguous();
    at::Tensor all = at::empty({world_size, 2 * c + 1}, local.options());
    at::Tensor flat = all.view({world_size * (2 * c + 1)});
    check(ct_dist_all_gather(g, &local, &flat));
    at::Tensor counts = all.select(1, 2 * c);
    total = counts.sum().item<double>();
    if (total <= 1)
      throw std::invalid_argument("sync batch norm: expected more than 1 value per channel over all ranks when training");
    at::Tensor means = all.narrow(1, 0, c), m2s = all.narrow(1, c, c);
    at::Tensor cw = counts.unsqueeze(1);
    at::Tensor gmean = (means * cw).sum(0) / total;
    at::Tensor gm2 = (m2s + cw * (means - gmean).pow(2)).sum(0);
    at::Tensor var = gm2 / total;
    if (running_mean != nullptr) {
      at::Tensor &rm = T(running_mean);
      rm.mul_(1 - momentum).add_(gmean.to(rm.scalar_type()), momentum);
    }
    if (running_var != nullptr) {
      at::Tensor &rv = T(running_var);
      rv.mul_(1 - momentum).add_((var * (total / (total - 1))).to(rv.scalar_type()), momentum);
    }
    mean = gmean.to(at::kFloat);
    invstd = (var + eps).rsqrt().to(at::kFloat);
  }
  at::Tensor wt = w != nullptr ? T(w) : at::Tensor();
  at::Tensor bt = b != nullptr ? T(b) : at::Tensor();
  *out = ct_op::wrap(SyncBNFn::apply(in, wt, bt, mean, invstd, reinterpret_cast<int64_t>(g), total));
  CT_OP_CATCH
}

}  // extern "C"
