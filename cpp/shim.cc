// clipagiqa libtorch shim: see shim.h for the contract.
#include "shim.h"
#include "op_guard.h"

#include <ATen/autocast_mode.h>
#include <torch/script.h>
#include <torch/torch.h>
#include <torch/version.h>
#if CT_HAS_TEXPR_FUSER_SWITCH
#include <torch/csrc/jit/passes/tensorexpr_fuser.h>
#endif

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#define CT_SHIM_VERSION "clipagiqa-shim/4"

// Version-specific API choices come from CMake feature tests (cmake/torch_features.cmake).
#if !defined(CT_HAS_SDPA) || !defined(CT_AUTOCAST_PER_DEVICE) || !defined(CT_HAS_TEXPR_FUSER_SWITCH)
#error "build through CMake: CT_HAS_SDPA, CT_AUTOCAST_PER_DEVICE and CT_HAS_TEXPR_FUSER_SWITCH come from its feature tests"
#endif

namespace {

char *dup_string(const char *s) {
  size_t n = std::strlen(s);
  char *r = static_cast<char *>(std::malloc(n + 1));
  if (r != nullptr) std::memcpy(r, s, n + 1);
  return r;
}

at::Tensor &T(ct_tensor t) {
  if (t == nullptr) throw std::invalid_argument("nil tensor handle");
  return *static_cast<at::Tensor *>(t);
}

c10::optional<at::Tensor> opt(ct_tensor t) {
  if (t == nullptr) return c10::nullopt;
  return *static_cast<at::Tensor *>(t);
}

ct_tensor wrap(at::Tensor t) { return new at::Tensor(std::move(t)); }

at::Device device_of(int32_t type, int32_t index) {
  if (type == 1) return at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(index));
  return at::Device(at::kCPU);
}

at::ScalarType scalar_type(int32_t code) {
  if (code < 0 || code >= static_cast<int32_t>(at::ScalarType::NumOptions))
    throw std::invalid_argument("unknown dtype code " + std::to_string(code));
  return static_cast<at::ScalarType>(code);
}

// The thread count asked for through ct_set_num_threads. libtorch keeps it per
// OS thread (OpenMP's nthreads ICV), and goroutines run on many OS threads, so
// every op re-applies it on the thread it runs on.
std::atomic<int32_t> g_num_threads{0};

void apply_num_threads() {
  int32_t n = g_num_threads.load(std::memory_order_relaxed);
  if (n > 0 && at::get_num_threads() != n) at::set_num_threads(n);
}

// Grad mode, autocast and the thread count for the duration of one call.
using ModeGuard = ct_op::Mode;

std::vector<at::Tensor> tensor_list(const ct_tensor *xs, int64_t n) {
  std::vector<at::Tensor> v;
  v.reserve(n);
  for (int64_t i = 0; i < n; i++) v.push_back(T(xs[i]));
  return v;
}

}  // namespace

// Every entry point runs its body inside this pair, so no exception escapes.
#define CT_TRY try {
#define CT_CATCH                                                   \
  }                                                                \
  catch (const c10::Error &e) {                                    \
    return dup_string(e.what_without_backtrace());                 \
  }                                                                \
  catch (const std::exception &e) {                                \
    return dup_string(e.what());                                   \
  }                                                                \
  catch (...) {                                                    \
    return dup_string("unknown C++ exception");                    \
  }                                                                \
  return nullptr;

#define CT_OP(body)    \
  CT_TRY               \
  ModeGuard guard(m);  \
  *out = wrap(body);   \
  CT_CATCH

extern "C" {

const char *ct_shim_version(void) { return CT_SHIM_VERSION; }
const char *ct_torch_version(void) { return TORCH_VERSION; }
void ct_free_string(char *s) { std::free(s); }

int32_t ct_cuda_is_available(void) {
  try {
    return torch::cuda::is_available() ? 1 : 0;
  } catch (...) {
    return 0;
  }
}

int32_t ct_cuda_device_count(void) {
  try {
    return static_cast<int32_t>(torch::cuda::device_count());
  } catch (...) {
    return 0;
  }
}

ct_error ct_cuda_synchronize(int32_t device) {
  CT_TRY
  torch::cuda::synchronize(device);
  CT_CATCH
}

ct_error ct_set_num_threads(int32_t n) {
  CT_TRY
  if (n < 1) throw std::invalid_argument("thread count must be at least 1");
  g_num_threads.store(n);
  at::set_num_threads(n);
  CT_CATCH
}

void ct_apply_num_threads(void) {
  try {
    apply_num_threads();
  } catch (...) {
  }
}

int32_t ct_get_num_threads(void) {
  int32_t n = g_num_threads.load();
  return n > 0 ? n : at::get_num_threads();
}

ct_error ct_manual_seed(uint64_t seed) {
  CT_TRY
  torch::manual_seed(seed);
  CT_CATCH
}

int32_t ct_has_fused_attention(void) { return CT_HAS_SDPA; }

void ct_tensor_free(ct_tensor t) { delete static_cast<at::Tensor *>(t); }

ct_error ct_tensor_shallow_copy(ct_tensor t, ct_tensor *out) {
  CT_TRY
  *out = wrap(T(t));
  CT_CATCH
}

ct_error ct_tensor_dim(ct_tensor t, int64_t *out) {
  CT_TRY
  *out = T(t).dim();
  CT_CATCH
}

ct_error ct_tensor_shape(ct_tensor t, int64_t *dims, int64_t cap) {
  CT_TRY
  auto sizes = T(t).sizes();
  if (static_cast<int64_t>(sizes.size()) > cap) throw std::invalid_argument("shape buffer too small");
  for (size_t i = 0; i < sizes.size(); i++) dims[i] = sizes[i];
  CT_CATCH
}

ct_error ct_tensor_dtype(ct_tensor t, int32_t *out) {
  CT_TRY
  *out = static_cast<int32_t>(T(t).scalar_type());
  CT_CATCH
}

ct_error ct_tensor_device(ct_tensor t, int32_t *type, int32_t *index) {
  CT_TRY
  auto d = T(t).device();
  *type = d.is_cuda() ? 1 : 0;
  *index = d.has_index() ? d.index() : 0;
  CT_CATCH
}

ct_error ct_tensor_requires_grad(ct_tensor t, int32_t *out) {
  CT_TRY
  *out = T(t).requires_grad() ? 1 : 0;
  CT_CATCH
}

ct_error ct_tensor_version(ct_tensor t, int64_t *out) {
  CT_TRY
  *out = T(t).is_inference() ? -1 : static_cast<int64_t>(T(t)._version());
  CT_CATCH
}

ct_error ct_tensor_is_contiguous(ct_tensor t, int32_t *out) {
  CT_TRY
  *out = T(t).is_contiguous() ? 1 : 0;
  CT_CATCH
}

ct_error ct_tensor_to_string(ct_tensor t, char **out) {
  CT_TRY
  std::ostringstream os;
  os << T(t);
  *out = dup_string(os.str().c_str());
  CT_CATCH
}

ct_error ct_from_blob(const void *data, int32_t dtype, const int64_t *shape, int64_t ndim,
                      int32_t device_type, int32_t device_index, ct_tensor *out) {
  CT_TRY
  at::NoGradGuard ng;
  auto opts = at::TensorOptions().dtype(scalar_type(dtype));
  auto t = torch::from_blob(const_cast<void *>(data), at::IntArrayRef(shape, ndim), opts);
  auto dev = device_of(device_type, device_index);
  *out = wrap(dev.is_cpu() ? t.clone() : t.to(dev));
  CT_CATCH
}

ct_error ct_copy_to_host(ct_tensor t, int32_t dtype, void *dst, int64_t nbytes) {
  CT_TRY
  at::NoGradGuard ng;
  auto h = T(t).detach().to(at::kCPU, scalar_type(dtype)).contiguous();
  int64_t need = h.numel() * static_cast<int64_t>(h.element_size());
  if (need != nbytes)
    throw std::invalid_argument("destination holds " + std::to_string(nbytes) +
                                " bytes, tensor needs " + std::to_string(need));
  if (need > 0) std::memcpy(dst, h.data_ptr(), need);
  CT_CATCH
}

ct_error ct_full(const int64_t *shape, int64_t ndim, double value, int32_t dtype,
                 int32_t device_type, int32_t device_index, ct_tensor *out) {
  CT_TRY
  auto opts = at::TensorOptions().dtype(scalar_type(dtype)).device(device_of(device_type, device_index));
  *out = wrap(torch::full(at::IntArrayRef(shape, ndim), value, opts));
  CT_CATCH
}

ct_error ct_randn(const int64_t *shape, int64_t ndim, int32_t dtype, int32_t device_type,
                  int32_t device_index, ct_tensor *out) {
  CT_TRY
  auto opts = at::TensorOptions().dtype(scalar_type(dtype)).device(device_of(device_type, device_index));
  *out = wrap(torch::randn(at::IntArrayRef(shape, ndim), opts));
  CT_CATCH
}

ct_error ct_rand(const int64_t *shape, int64_t ndim, int32_t dtype, int32_t device_type,
                 int32_t device_index, ct_tensor *out) {
  CT_TRY
  auto opts = at::TensorOptions().dtype(scalar_type(dtype)).device(device_of(device_type, device_index));
  *out = wrap(torch::rand(at::IntArrayRef(shape, ndim), opts));
  CT_CATCH
}

ct_error ct_arange(int64_t end, int32_t dtype, int32_t device_type, int32_t device_index,
                   ct_tensor *out) {
  CT_TRY
  auto opts = at::TensorOptions().dtype(scalar_type(dtype)).device(device_of(device_type, device_index));
  *out = wrap(torch::arange(end, opts));
  CT_CATCH
}

ct_error ct_item(ct_tensor t, double *out) {
  CT_TRY
  *out = T(t).item<double>();
  CT_CATCH
}

ct_error ct_to(ct_mode m, ct_tensor t, int32_t dtype, int32_t device_type, int32_t device_index,
               int32_t non_blocking, ct_tensor *out) {
  CT_OP(T(t).to(device_of(device_type, device_index), scalar_type(dtype), non_blocking != 0))
}

ct_error ct_pin_memory(ct_tensor t, ct_tensor *out) {
  CT_TRY
  *out = wrap(T(t).pin_memory());
  CT_CATCH
}

ct_error ct_clone(ct_mode m, ct_tensor t, ct_tensor *out) { CT_OP(T(t).clone()) }

ct_error ct_detach(ct_tensor t, ct_tensor *out) {
  CT_TRY
  *out = wrap(T(t).detach());
  CT_CATCH
}

ct_error ct_set_requires_grad(ct_tensor t, int32_t on) {
  CT_TRY
  T(t).set_requires_grad(on != 0);
  CT_CATCH
}

ct_error ct_contiguous(ct_mode m, ct_tensor t, ct_tensor *out) { CT_OP(T(t).contiguous()) }

// Binary op codes.
enum { BIN_ADD = 0, BIN_SUB, BIN_MUL, BIN_DIV, BIN_MAXIMUM, BIN_MINIMUM, BIN_POW, BIN_RSUB };
// Unary op codes.
enum {
  UN_NEG = 0, UN_EXP, UN_LOG, UN_SQRT, UN_RELU, UN_GELU, UN_QUICK_GELU, UN_SIGMOID,
  UN_TANH, UN_ABS, UN_RSQRT, UN_SQUARE
};

ct_error ct_binary(ct_mode m, int32_t op, ct_tensor a, ct_tensor b, ct_tensor *out) {
  CT_TRY
  ModeGuard guard(m);
  const at::Tensor &x = T(a), &y = T(b);
  switch (op) {
    case BIN_ADD: *out = wrap(x + y); break;
    case BIN_SUB: *out = wrap(x - y); break;
    case BIN_MUL: *out = wrap(x * y); break;
    case BIN_DIV: *out = wrap(x / y); break;
    case BIN_MAXIMUM: *out = wrap(at::maximum(x, y)); break;
    case BIN_MINIMUM: *out = wrap(at::minimum(x, y)); break;
    case BIN_POW: *out = wrap(at::pow(x, y)); break;
    case BIN_RSUB: *out = wrap(y - x); break;
    default: throw std::invalid_argument("unknown binary op " + std::to_string(op));
  }
  CT_CATCH
}

ct_error ct_binary_scalar(ct_mode m, int32_t op, ct_tensor a, double s, ct_tensor *out) {
  CT_TRY
  ModeGuard guard(m);
  const at::Tensor &x = T(a);
  switch (op) {
    case BIN_ADD: *out = wrap(x + s); break;
    case BIN_SUB: *out = wrap(x - s); break;
    case BIN_MUL: *out = wrap(x * s); break;
    case BIN_DIV: *out = wrap(x / s); break;
    case BIN_MAXIMUM: *out = wrap(at::clamp_min(x, s)); break;
    case BIN_MINIMUM: *out = wrap(at::clamp_max(x, s)); break;
    case BIN_POW: *out = wrap(at::pow(x, s)); break;
    case BIN_RSUB: *out = wrap(s - x); break;
    default: throw std::invalid_argument("unknown scalar op " + std::to_string(op));
  }
  CT_CATCH
}

ct_error ct_unary(ct_mode m, int32_t op, ct_tensor a, ct_tensor *out) {
  CT_TRY
  ModeGuard guard(m);
  const at::Tensor &x = T(a);
  switch (op) {
    case UN_NEG: *out = wrap(-x); break;
    case UN_EXP: *out = wrap(x.exp()); break;
    case UN_LOG: *out = wrap(x.log()); break;
    case UN_SQRT: *out = wrap(x.sqrt()); break;
    case UN_RELU: *out = wrap(at::relu(x)); break;
    case UN_GELU: *out = wrap(at::gelu(x)); break;
    case UN_QUICK_GELU: *out = wrap(x * at::sigmoid(x * 1.702)); break;
    case UN_SIGMOID: *out = wrap(at::sigmoid(x)); break;
    case UN_TANH: *out = wrap(at::tanh(x)); break;
    case UN_ABS: *out = wrap(x.abs()); break;
    case UN_RSQRT: *out = wrap(x.rsqrt()); break;
    case UN_SQUARE: *out = wrap(x * x); break;
    default: throw std::invalid_argument("unknown unary op " + std::to_string(op));
  }
  CT_CATCH
}

ct_error ct_reduce(ct_mode m, int32_t op, ct_tensor a, const int64_t *dims, int64_t ndims,
                   int32_t keepdim, ct_tensor *out) {
  CT_TRY
  ModeGuard guard(m);
  const at::Tensor &x = T(a);
  if (dims == nullptr) {
    *out = wrap(op == 0 ? x.sum() : x.mean());
  } else {
    at::IntArrayRef d(dims, ndims);
    *out = wrap(op == 0 ? x.sum(d, keepdim != 0) : x.mean(d, keepdim != 0));
  }
  CT_CATCH
}

ct_error ct_argmax(ct_mode m, ct_tensor a, int64_t dim, int32_t keepdim, ct_tensor *out) {
  CT_OP(T(a).argmax(dim, keepdim != 0))
}

ct_error ct_layer_norm(ct_mode m, ct_tensor x, ct_tensor w, ct_tensor b, double eps,
                       ct_tensor *out) {
  CT_OP(at::layer_norm(T(x), {T(x).size(-1)}, opt(w), opt(b), eps))
}

ct_error ct_softmax(ct_mode m, ct_tensor x, int64_t dim, ct_tensor *out) {
  CT_OP(at::softmax(T(x), dim))
}

ct_error ct_log_softmax(ct_mode m, ct_tensor x, int64_t dim, ct_tensor *out) {
  CT_OP(at::log_softmax(T(x), dim))
}

ct_error ct_matmul(ct_mode m, ct_tensor a, ct_tensor b, ct_tensor *out) {
  CT_OP(at::matmul(T(a), T(b)))
}

ct_error ct_bmm(ct_mode m, ct_tensor a, ct_tensor b, ct_tensor *out) { CT_OP(at::bmm(T(a), T(b))) }

ct_error ct_baddbmm(ct_mode m, ct_tensor self, ct_tensor a, ct_tensor b, double beta, double alpha,
                    ct_tensor *out) {
  CT_OP(at::baddbmm(T(self), T(a), T(b), beta, alpha))
}

ct_error ct_linear(ct_mode m, ct_tensor x, ct_tensor w, ct_tensor b, ct_tensor *out) {
  CT_OP(at::linear(T(x), T(w), opt(b)))
}

ct_error ct_conv2d(ct_mode m, ct_tensor x, ct_tensor w, ct_tensor b, int64_t stride,
                   int64_t padding, ct_tensor *out) {
  CT_OP(at::conv2d(T(x), T(w), opt(b), {stride, stride}, {padding, padding}))
}

ct_error ct_embedding(ct_mode m, ct_tensor weight, ct_tensor ids, ct_tensor *out) {
  CT_OP(at::embedding(T(weight), T(ids)))
}

ct_error ct_normalize(ct_mode m, ct_tensor x, double p, int64_t dim, double eps, ct_tensor *out) {
  // F.normalize: x / max(||x||_p, eps)
  CT_OP(T(x) / at::clamp_min(at::norm(T(x), p, {dim}, true), eps).expand_as(T(x)))
}

ct_error ct_dropout(ct_mode m, ct_tensor x, double p, int32_t train, ct_tensor *out) {
  CT_OP(at::dropout(T(x), p, train != 0))
}

ct_error ct_mse_loss(ct_mode m, ct_tensor a, ct_tensor b, ct_tensor *out) {
  CT_OP(at::mse_loss(T(a), T(b)))
}

ct_error ct_attention(ct_mode m, ct_tensor q, ct_tensor k, ct_tensor v, ct_tensor mask,
                      ct_tensor *out) {
  CT_TRY
  ModeGuard guard(m);
#if CT_HAS_SDPA
  *out = wrap(at::scaled_dot_product_attention(T(q), T(k), T(v), opt(mask), 0.0, false));
#else
  const at::Tensor &Q = T(q);
  double scale = 1.0 / std::sqrt(static_cast<double>(Q.size(-1)));
  at::Tensor scores = at::matmul(Q * scale, T(k).transpose(-2, -1));
  if (mask != nullptr) scores = scores + T(mask);
  *out = wrap(at::matmul(at::softmax(scores, -1), T(v)));
#endif
  CT_CATCH
}

ct_error ct_reshape(ct_mode m, ct_tensor x, const int64_t *shape, int64_t ndim, ct_tensor *out) {
  CT_OP(T(x).reshape(at::IntArrayRef(shape, ndim)))
}

ct_error ct_permute(ct_mode m, ct_tensor x, const int64_t *dims, int64_t ndim, ct_tensor *out) {
  CT_OP(T(x).permute(at::IntArrayRef(dims, ndim)))
}

ct_error ct_transpose(ct_mode m, ct_tensor x, int64_t d0, int64_t d1, ct_tensor *out) {
  CT_OP(T(x).transpose(d0, d1))
}

ct_error ct_expand(ct_mode m, ct_tensor x, const int64_t *shape, int64_t ndim, ct_tensor *out) {
  CT_OP(T(x).expand(at::IntArrayRef(shape, ndim)))
}

ct_error ct_cat(ct_mode m, const ct_tensor *xs, int64_t n, int64_t dim, ct_tensor *out) {
  CT_OP(at::cat(tensor_list(xs, n), dim))
}

ct_error ct_stack(ct_mode m, const ct_tensor *xs, int64_t n, int64_t dim, ct_tensor *out) {
  CT_OP(at::stack(tensor_list(xs, n), dim))
}

ct_error ct_narrow(ct_mode m, ct_tensor x, int64_t dim, int64_t start, int64_t length,
                   ct_tensor *out) {
  CT_OP(T(x).narrow(dim, start, length))
}

ct_error ct_select(ct_mode m, ct_tensor x, int64_t dim, int64_t index, ct_tensor *out) {
  CT_OP(T(x).select(dim, index))
}

ct_error ct_index_select(ct_mode m, ct_tensor x, int64_t dim, ct_tensor index, ct_tensor *out) {
  CT_OP(T(x).index_select(dim, T(index)))
}

ct_error ct_gather(ct_mode m, ct_tensor x, int64_t dim, ct_tensor index, ct_tensor *out) {
  CT_OP(T(x).gather(dim, T(index)))
}

ct_error ct_squeeze(ct_mode m, ct_tensor x, int64_t dim, ct_tensor *out) { CT_OP(T(x).squeeze(dim)) }

ct_error ct_unsqueeze(ct_mode m, ct_tensor x, int64_t dim, ct_tensor *out) {
  CT_OP(T(x).unsqueeze(dim))
}

ct_error ct_triu(ct_mode m, ct_tensor x, int64_t diagonal, ct_tensor *out) {
  CT_OP(T(x).triu(diagonal))
}

ct_error ct_backward(ct_tensor loss) {
  CT_TRY
  apply_num_threads();
  at::AutoGradMode on(true);
  T(loss).backward();
  CT_CATCH
}

ct_error ct_grad(ct_tensor t, ct_tensor *out) {
  CT_TRY
  const at::Tensor &g = T(t).grad();
  *out = g.defined() ? wrap(g) : nullptr;
  CT_CATCH
}

ct_error ct_zero_grad(ct_tensor t) {
  CT_TRY
  at::Tensor &x = T(t);
  if (x.grad().defined()) x.mutable_grad().reset();
  CT_CATCH
}

ct_error ct_sgd_step(ct_tensor *params, ct_tensor *bufs, int64_t n, double lr, double momentum,
                     double dampening, double weight_decay, int32_t nesterov) {
  CT_TRY
  at::NoGradGuard ng;
  for (int64_t i = 0; i < n; i++) {
    at::Tensor &p = T(params[i]);
    if (!p.grad().defined()) continue;
    at::Tensor d = p.grad();
    if (weight_decay != 0) d = d.add(p, weight_decay);
    if (momentum != 0) {
      if (bufs[i] == nullptr) {
        bufs[i] = wrap(d.clone().detach());
      } else {
        T(bufs[i]).mul_(momentum).add_(d, 1 - dampening);
      }
      d = nesterov ? d.add(T(bufs[i]), momentum) : T(bufs[i]);
    }
    p.add_(d, -lr);
  }
  CT_CATCH
}

ct_error ct_copy_(ct_tensor dst, ct_tensor src) {
  CT_TRY
  at::NoGradGuard ng;
  T(dst).copy_(T(src));
  CT_CATCH
}

ct_error ct_jit_load(const char *path, ct_module *out) {
  CT_TRY
#if CT_HAS_TEXPR_FUSER_SWITCH
  // A libtorch built with LLVM (Debian's 2.6) fuses CPU graphs with the
  // TensorExpr fuser on a method's second call, and its LLVM compile of a traced
  // ResNet CLIP graph never returns. Modules serve as references here, so they
  // run op by op as traced, as on libtorch builds without LLVM.
  torch::jit::setTensorExprFuserEnabled(false);
#endif
  auto mod = torch::jit::load(std::string(path), at::Device(at::kCPU));
  mod.eval();
  *out = new torch::jit::Module(std::move(mod));
  CT_CATCH
}

void ct_module_free(ct_module m) { delete static_cast<torch::jit::Module *>(m); }

ct_error ct_module_named_tensors(ct_module m, char ***names, ct_tensor **tensors, int64_t *n) {
  CT_TRY
  auto *mod = static_cast<torch::jit::Module *>(m);
  std::vector<std::pair<std::string, at::Tensor>> all;
  for (const auto &p : mod->named_parameters(true)) all.emplace_back(p.name, p.value);
  for (const auto &b : mod->named_buffers(true)) all.emplace_back(b.name, b.value);
  *n = static_cast<int64_t>(all.size());
  *names = static_cast<char **>(std::calloc(all.size() + 1, sizeof(char *)));
  *tensors = static_cast<ct_tensor *>(std::calloc(all.size() + 1, sizeof(ct_tensor)));
  if (*names == nullptr || *tensors == nullptr) throw std::bad_alloc();
  for (size_t i = 0; i < all.size(); i++) {
    (*names)[i] = dup_string(all[i].first.c_str());
    (*tensors)[i] = wrap(all[i].second.detach());
  }
  CT_CATCH
}

ct_error ct_module_run_method(ct_module m, const char *method, const ct_tensor *inputs, int64_t n,
                              ct_tensor *out) {
  CT_TRY
  at::NoGradGuard ng;
  auto *mod = static_cast<torch::jit::Module *>(m);
  std::vector<c10::IValue> args;
  for (int64_t i = 0; i < n; i++) args.emplace_back(T(inputs[i]));
  auto result = mod->get_method(method)(args);
  if (!result.isTensor()) throw std::runtime_error(std::string("method ") + method + " did not return a tensor");
  *out = wrap(result.toTensor());
  CT_CATCH
}

}  // extern "C"
