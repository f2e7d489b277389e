// Optimizer updates: see optim_ops.h. Each function mirrors one branch of
// PyTorch 1.13's _single_tensor_* implementation line by line; the scalar
// arithmetic (bias corrections, step size) is done in double as Python does.
#include "optim_ops.h"

#include <torch/torch.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <exception>

namespace {

char *optim_error(const char *s) {
  size_t n = std::strlen(s);
  char *r = static_cast<char *>(std::malloc(n + 1));
  if (r != nullptr) std::memcpy(r, s, n + 1);
  return r;
}

at::Tensor &ref(ct_tensor t) {
  if (t == nullptr) throw std::invalid_argument("nil tensor handle");
  return *static_cast<at::Tensor *>(t);
}

}  // namespace

#define OPTIM_TRY try {
#define OPTIM_CATCH                                  \
  }                                                  \
  catch (const c10::Error &e) {                      \
    return optim_error(e.what_without_backtrace());  \
  }                                                  \
  catch (const std::exception &e) {                  \
    return optim_error(e.what());                    \
  }                                                  \
  catch (...) {                                      \
    return optim_error("unknown C++ exception");     \
  }                                                  \
  return nullptr;

extern "C" {

ct_error ct_optim_sgd(ct_tensor param, ct_tensor *buf, double lr, double momentum,
                      double dampening, double weight_decay, int32_t nesterov,
                      int32_t maximize, int32_t *stepped) {
  OPTIM_TRY
  ct_apply_num_threads();
  at::NoGradGuard no_grad;
  *stepped = 0;
  at::Tensor &p = ref(param);
  if (!p.grad().defined()) return nullptr;
  if (p.grad().is_sparse()) throw std::invalid_argument("sparse gradients are not supported");
  at::Tensor d_p = maximize ? -p.grad() : p.grad();
  if (weight_decay != 0) d_p = d_p.add(p, weight_decay);
  if (momentum != 0) {
    if (*buf == nullptr) {
      at::Tensor b = d_p.clone().detach();
      *buf = new at::Tensor(std::move(b));
    } else {
      ref(*buf).mul_(momentum).add_(d_p, 1 - dampening);
    }
    at::Tensor &b = ref(*buf);
    if (nesterov) {
      d_p = d_p.add(b, momentum);
    } else {
      d_p = b;
    }
  }
  p.add_(d_p, -lr);
  *stepped = 1;
  OPTIM_CATCH
}

ct_error ct_optim_adam(ct_tensor param, ct_tensor *step, ct_tensor *exp_avg,
                       ct_tensor *exp_avg_sq, double lr, double beta1, double beta2,
                       double eps, double weight_decay, int32_t decoupled, int32_t maximize,
                       int32_t *stepped) {
  OPTIM_TRY
  ct_apply_num_threads();
  at::NoGradGuard no_grad;
  *stepped = 0;
  at::Tensor &p = ref(param);
  if (!p.grad().defined()) return nullptr;
  if (p.grad().is_sparse()) throw std::invalid_argument("sparse gradients are not supported");
  if (p.is_complex()) throw std::invalid_argument("complex parameters are not supported");
  bool fresh = *step == nullptr, partial = *exp_avg == nullptr || *exp_avg_sq == nullptr;
  if (fresh != partial) throw std::invalid_argument("adam state is incomplete");
  if (fresh) {
    // Lazy state initialisation, as Adam.step / AdamW.step.
    at::Tensor s = at::scalar_tensor(0.0, at::TensorOptions().dtype(at::kFloat));
    at::Tensor m = at::zeros_like(p, at::MemoryFormat::Preserve);
    at::Tensor v = at::zeros_like(p, at::MemoryFormat::Preserve);
    *step = new at::Tensor(std::move(s));
    *exp_avg = new at::Tensor(std::move(m));
    *exp_avg_sq = new at::Tensor(std::move(v));
  }
  at::Tensor &step_t = ref(*step);
  at::Tensor &m = ref(*exp_avg);
  at::Tensor &v = ref(*exp_avg_sq);
  at::Tensor grad = maximize ? -p.grad() : p.grad();

  step_t.add_(1);
  if (decoupled) {
    p.mul_(1 - lr * weight_decay);  // AdamW: stepweight decay
  } else if (weight_decay != 0) {
    grad = grad.add(p, weight_decay);  // Adam: L2 penalty
  }
  m.mul_(beta1).add_(grad, 1 - beta1);
  v.mul_(beta2).addcmul_(grad, decoupled ? grad : grad.conj(), 1 - beta2);

  double s = step_t.item<double>();
  double bias_correction1 = 1 - std::pow(beta1, s);
  double bias_correction2 = 1 - std::pow(beta2, s);
  double step_size = lr / bias_correction1;
  double bias_correction2_sqrt = std::sqrt(bias_correction2);
  at::Tensor denom = (v.sqrt() / bias_correction2_sqrt).add_(eps);
  p.addcdiv_(m, denom, -step_size);
  *stepped = 1;
  OPTIM_CATCH
}

}  // extern "C"
