// Internal helpers for shim entry points outside shim.cc: handle access, the
// per-call grad/autocast/thread state, and the try/catch pair that keeps C++
// exceptions from crossing cgo. Header-only; not part of the C interface.
#ifndef CLIPAGIQA_OP_GUARD_H
#define CLIPAGIQA_OP_GUARD_H

#include "shim.h"

#include <ATen/autocast_mode.h>
#include <torch/torch.h>
#include <torch/version.h>

#include <cstdlib>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <string>

// Autocast API: the answer of CMake's feature test (cmake/torch_features.cmake).
#if !defined(CT_AUTOCAST_PER_DEVICE)
#error "CT_AUTOCAST_PER_DEVICE is set by cmake/torch_features.cmake; build through CMake"
#endif
#define CT_OP_AUTOCAST_PER_DEVICE CT_AUTOCAST_PER_DEVICE

namespace ct_op {

inline char *dup_string(const char *s) {
  size_t n = std::strlen(s);
  char *r = static_cast<char *>(std::malloc(n + 1));
  if (r != nullptr) std::memcpy(r, s, n + 1);
  return r;
}

inline at::Tensor &T(ct_tensor t) {
  if (t == nullptr) throw std::invalid_argument("nil tensor handle");
  return *static_cast<at::Tensor *>(t);
}

inline c10::optional<at::Tensor> opt(ct_tensor t) {
  if (t == nullptr) return c10::nullopt;
  return *static_cast<at::Tensor *>(t);
}

inline ct_tensor wrap(at::Tensor t) { return new at::Tensor(std::move(t)); }

// Sets the thread count, grad mode and autocast for the duration of one call,
// for every shim entry point (libtorch keeps all three per OS thread).
class Mode {
 public:
  explicit Mode(ct_mode m) {
    ct_apply_num_threads();
    if (m.grad == CT_INFERENCE) {
      inference_.emplace(true);
    } else {
      grad_.emplace(m.grad != CT_NO_GRAD);
    }
    if (m.autocast_dtype >= 0) {
      if (m.autocast_dtype >= static_cast<int32_t>(at::ScalarType::NumOptions))
        throw std::invalid_argument("unknown autocast dtype code " + std::to_string(m.autocast_dtype));
      auto dt = static_cast<at::ScalarType>(m.autocast_dtype);
      autocast_ = true;
#if CT_OP_AUTOCAST_PER_DEVICE
      prev_enabled_ = at::autocast::is_autocast_enabled(at::kCUDA);
      prev_dtype_ = at::autocast::get_autocast_dtype(at::kCUDA);
      at::autocast::set_autocast_enabled(at::kCUDA, true);
      at::autocast::set_autocast_dtype(at::kCUDA, dt);
#else
      prev_enabled_ = at::autocast::is_enabled();
      prev_dtype_ = at::autocast::get_autocast_gpu_dtype();
      at::autocast::set_enabled(true);
      at::autocast::set_autocast_gpu_dtype(dt);
#endif
      at::autocast::increment_nesting();
    }
  }
  ~Mode() {
    if (!autocast_) return;
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
#if CT_OP_AUTOCAST_PER_DEVICE
    at::autocast::set_autocast_enabled(at::kCUDA, prev_enabled_);
    at::autocast::set_autocast_dtype(at::kCUDA, prev_dtype_);
#else
    at::autocast::set_enabled(prev_enabled_);
    at::autocast::set_autocast_gpu_dtype(prev_dtype_);
#endif
  }
  Mode(const Mode &) = delete;
  Mode &operator=(const Mode &) = delete;

 private:
  std::optional<c10::InferenceMode> inference_;
  std::optional<at::AutoGradMode> grad_;
  bool autocast_ = false;
  bool prev_enabled_ = false;
  at::ScalarType prev_dtype_ = at::kHalf;
};

}  // namespace ct_op

// Every entry point runs its body inside this pair, so no exception escapes.
#define CT_OP_TRY try {
#define CT_OP_CATCH                                          \
  }                                                          \
  catch (const c10::Error &e) {                              \
    return ct_op::dup_string(e.what_without_backtrace());    \
  }                                                          \
  catch (const std::exception &e) {                          \
    return ct_op::dup_string(e.what());                      \
  }                                                          \
  catch (...) {                                              \
    return ct_op::dup_string("unknown C++ exception");       \
  }                                                          \
  return nullptr;

// One op returning one tensor, run under the call's mode.
#define CT_OP_RUN(body)  \
  CT_OP_TRY              \
  ct_op::Mode mode(m);   \
  *out = ct_op::wrap(body); \
  CT_OP_CATCH

#endif
