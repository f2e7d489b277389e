// Fused CPU ops for CLIP's residual attention blocks: see fused.h.
//
// The model itself (stems, heads, parameter names) is defined once, in Go
// (clipagiqa/clip); these ops run only its block stack, on weights handed
// over by their PyTorch names.
//
// Block stack forward (inference). Why it is faster than running the same
// ops one by one (as the Go plain path and PyTorch eager do):
//  * one thread pool: libtorch's intra-op threads split every matrix
//    multiply by output columns and call BLAS single-threaded, instead of
//    OpenBLAS's own pthreads and OpenMP's spinning workers taking turns on
//    the same cores;
//  * no allocation per op: activations live in buffers reused across calls
//    (large fresh allocations cost a page fault per 4 KiB);
//  * attention reads q, k, v where the packed projection wrote them and
//    writes each head's output in place: no permute/contiguous copies;
//  * biases are folded into the matrix multiplies and QuickGELU runs on
//    cache-sized blocks right after them; the attention scale is applied to
//    the scores in cache.
// The arithmetic is the plain path's (same libtorch kernels for sigmoid and
// softmax, bias added before the product as addmm does), so results agree to
// float32 rounding; clipagiqa/clip/fast_test.go checks it.
//
// Shared-prefix forward (training's text path): see PrefixFn below.
#include "fused.h"

#include <dlfcn.h>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/torch.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace {

char *fused_error(const char *s) {
  size_t n = std::strlen(s);
  char *r = static_cast<char *>(std::malloc(n + 1));
  if (r != nullptr) std::memcpy(r, s, n + 1);
  return r;
}

// ------------------------------------------------------------------ BLAS

using sgemm_fn = void (*)(const char *, const char *, const int *, const int *, const int *,
                          const float *, const float *, const int *, const float *, const int *,
                          const float *, float *, const int *);
using set_threads_fn = void (*)(int);
using get_threads_fn = int (*)(void);

struct Blas {
  sgemm_fn sgemm = nullptr;
  set_threads_fn set_threads = nullptr;
  get_threads_fn get_threads = nullptr;
};

// The BLAS that libtorch itself links (OpenBLAS, MKL, ...) is found by name in
// the process; without one, products go through at::mm on strided views.
const Blas &blas() {
  static const Blas b = [] {
    Blas r;
    if (std::getenv("CLIPAGIQA_FUSED_NO_BLAS") == nullptr) {
      r.sgemm = reinterpret_cast<sgemm_fn>(dlsym(RTLD_DEFAULT, "sgemm_"));
    }
    r.set_threads = reinterpret_cast<set_threads_fn>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"));
    r.get_threads = reinterpret_cast<get_threads_fn>(dlsym(RTLD_DEFAULT, "openblas_get_num_threads"));
    if (r.set_threads == nullptr || r.get_threads == nullptr) r.set_threads = nullptr, r.get_threads = nullptr;
    return r;
  }();
  return b;
}

// While any fused forward runs, an OpenBLAS pool is shrunk to one thread: the
// products are already split across libtorch's threads.
std::mutex g_blas_mu;
int g_blas_users = 0;
int g_blas_saved = -1;

class SingleThreadedBlas {
 public:
  SingleThreadedBlas() {
    if (blas().set_threads == nullptr) return;
    std::lock_guard<std::mutex> l(g_blas_mu);
    if (g_blas_users++ == 0) {
      g_blas_saved = blas().get_threads();
      if (g_blas_saved != 1) blas().set_threads(1);
    }
  }
  ~SingleThreadedBlas() {
    if (blas().set_threads == nullptr) return;
    std::lock_guard<std::mutex> l(g_blas_mu);
    if (--g_blas_users == 0 && g_blas_saved > 1) blas().set_threads(g_blas_saved);
  }
  SingleThreadedBlas(const SingleThreadedBlas &) = delete;
  SingleThreadedBlas &operator=(const SingleThreadedBlas &) = delete;
};

using dnnl_sgemm_fn = int (*)(char, char, int64_t, int64_t, int64_t, float, const float *, int64_t, const float *,
                              int64_t, float, float *, int64_t);

dnnl_sgemm_fn dnnl_sgemm() {
  static const dnnl_sgemm_fn f = std::getenv("CLIPAGIQA_FUSED_NO_DNNL") != nullptr
                                     ? nullptr
                                     : reinterpret_cast<dnnl_sgemm_fn>(dlsym(RTLD_DEFAULT, "dnnl_sgemm"));
  return f;
}

at::Tensor view2d(const float *p, int64_t rows, int64_t cols, int64_t ld) {
  return at::from_blob(const_cast<float *>(p), {rows, cols}, {ld, 1}, at::TensorOptions().dtype(at::kFloat));
}

// Row-major C[m,n] = op(A)[m,k] · op(B)[k,n] + beta·C; op(B) = Bᵀ when transB
// (B stored [n,k], as weights are). beta is 0 or 1.
void gemm(bool transA, bool transB, int64_t m, int64_t n, int64_t k, const float *A, int64_t lda,
          const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
  if (m <= 0 || n <= 0) return;
  // oneDNN's sgemm (libtorch's oneDNN, when its symbols are visible) beats
  // BLAS by 2-3× on products with few rows and an untransposed second
  // operand: the text path's.
  if (!transA && !transB && m <= 128 && dnnl_sgemm() != nullptr &&
      dnnl_sgemm()('N', 'N', m, n, k, 1.0f, A, lda, B, ldb, beta, C, ldc) == 0)
    return;
  if (blas().sgemm != nullptr) {
    // Column-major BLAS sees the transposes: Cᵀ = op(B)ᵀ · op(A)ᵀ.
    const char ta = transB ? 'T' : 'N', tb = transA ? 'T' : 'N';
    const int M = static_cast<int>(n), N = static_cast<int>(m), K = static_cast<int>(k);
    const int la = static_cast<int>(ldb), lb = static_cast<int>(lda), lc = static_cast<int>(ldc);
    const float one = 1.0f;
    blas().sgemm(&ta, &tb, &M, &N, &K, &one, B, &la, A, &lb, &beta, C, &lc);
    return;
  }
  at::Tensor a = transA ? view2d(A, k, m, lda).t() : view2d(A, m, k, lda);
  at::Tensor b = transB ? view2d(B, n, k, ldb).t() : view2d(B, k, n, ldb);
  at::Tensor c = view2d(C, m, n, ldc);
  if (beta == 0.0f) {
    at::mm_out(c, a, b);
  } else {
    c.addmm_(a, b);
  }
}

// ------------------------------------------------------------- kernels

// y = LayerNorm(x) over rows of width w (y may alias x).
void layer_norm_rows(const float *x, float *y, int64_t rows, int64_t w, const float *g,
                     const float *b, float eps) {
  for (int64_t r = 0; r < rows; r++) {
    const float *xr = x + r * w;
    float *yr = y + r * w;
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t j = 0;
    for (; j + 8 <= w; j += 8)
      for (int q = 0; q < 8; q++) acc[q] += xr[j + q];
    float sum = 0;
    for (; j < w; j++) sum += xr[j];
    for (int q = 0; q < 8; q++) sum += acc[q];
    const float mean = sum / static_cast<float>(w);
    float vacc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    j = 0;
    for (; j + 8 <= w; j += 8)
      for (int q = 0; q < 8; q++) {
        float d = xr[j + q] - mean;
        vacc[q] += d * d;
      }
    float var = 0;
    for (; j < w; j++) var += (xr[j] - mean) * (xr[j] - mean);
    for (int q = 0; q < 8; q++) var += vacc[q];
    const float rstd = 1.0f / std::sqrt(var / static_cast<float>(w) + eps);
    for (j = 0; j < w; j++) yr[j] = (xr[j] - mean) * rstd * g[j] + b[j];
  }
}

// C[r, c0:c1] = bias[c0:c1] for rows of a tile, before a beta=1 product
// (the order addmm uses).
void fill_bias(float *C, int64_t ldc, int64_t r0, int64_t r1, int64_t c0, int64_t c1,
               const float *bias) {
  for (int64_t r = r0; r < r1; r++) std::memcpy(C + r * ldc + c0, bias + c0, (c1 - c0) * sizeof(float));
}

// x[r, c0:c1] += t[r, c0:c1].
void add_tile(float *x, const float *t, int64_t ld, int64_t r0, int64_t r1, int64_t c0, int64_t c1) {
  for (int64_t r = r0; r < r1; r++) {
    float *xr = x + r * ld;
    const float *tr = t + r * ld;
    for (int64_t c = c0; c < c1; c++) xr[c] += tr[c];
  }
}

// In place on a tile: v = v · sigmoid(1.702·v), with libtorch's vectorised
// kernels on blocks that stay in cache (scratch holds one block).
void quick_gelu_tile(float *C, int64_t ldc, int64_t r0, int64_t r1, int64_t c0, int64_t c1,
                     at::Tensor &scratch) {
  const int64_t cols = c1 - c0;
  const int64_t step = std::max<int64_t>(1, scratch.numel() / cols);
  for (int64_t r = r0; r < r1; r += step) {
    const int64_t n = std::min(step, r1 - r);
    at::Tensor blk = view2d(C + r * ldc + c0, n, cols, ldc);
    at::Tensor s = scratch.narrow(0, 0, n * cols).view({n, cols});
    s.copy_(blk);
    s.mul_(1.702);
    s.sigmoid_();
    blk.mul_(s);
  }
}

// libtorch's intra-op pool. With OpenMP (libtorch 1.x), at::parallel_for is
// a header template whose `#pragma omp parallel` only takes effect in code
// compiled with -fopenmp; this file is not, so it calls the OpenMP runtime's
// entry point for a parallel region (what the pragma compiles to, also
// provided by Intel's runtime) found in the process. Elsewhere
// at::parallel_for is out of line and used as is.
using gomp_parallel_fn = void (*)(void (*)(void *), void *, unsigned, unsigned);
using omp_int_fn = int (*)(void);

struct OpenMP {
  gomp_parallel_fn parallel = nullptr;
  omp_int_fn thread_num = nullptr;
};

const OpenMP &openmp() {
  static const OpenMP o = [] {
    OpenMP r;
    r.parallel = reinterpret_cast<gomp_parallel_fn>(dlsym(RTLD_DEFAULT, "GOMP_parallel"));
    r.thread_num = reinterpret_cast<omp_int_fn>(dlsym(RTLD_DEFAULT, "omp_get_thread_num"));
    if (r.parallel == nullptr || r.thread_num == nullptr) r = OpenMP();
    return r;
  }();
  return o;
}

// Runs f(i, thread) for i in [0, n) on libtorch's intra-op threads (thread <
// at::get_num_threads()). Tasks are handed out one at a time, so a thread the
// OS preempts delays only the task it holds, not a fixed share of the work.
// libtorch ops called from f run single-threaded (they see a parallel region).
template <class F>
void run_tasks(int64_t n, const F &f) {
  if (n <= 0) return;
  std::atomic<int64_t> next{0};
  std::atomic_flag failed = ATOMIC_FLAG_INIT;
  std::exception_ptr error;
  const int64_t T = std::min<int64_t>(at::get_num_threads(), n);
  auto body = [&](int tid) {
    try {
      at::internal::ThreadIdGuard guard(tid);
      for (int64_t i; (i = next.fetch_add(1)) < n;) f(i, tid);
    } catch (...) {
      if (!failed.test_and_set()) error = std::current_exception();
      next = n;  // the others stop at their next task
    }
  };
  if (T <= 1 || at::in_parallel_region()) {
    body(0);
  } else if (openmp().parallel != nullptr) {
    struct Region {
      decltype(body) *run;
      int64_t T;
    } region{&body, T};
    openmp().parallel(
        [](void *p) {
          auto *r = static_cast<Region *>(p);
          const int tid = openmp().thread_num();
          if (tid < r->T) (*r->run)(tid);
        },
        &region, static_cast<unsigned>(T), 0);
  } else {
    at::parallel_for(0, T, 1, [&](int64_t b, int64_t) { body(static_cast<int>(b)); });
  }
  if (error) std::rethrow_exception(error);
}

// Tiles of a product with m rows and n output columns: row chunks of about
// 1024 rows (activations stay in cache across a chunk's column tiles) and
// columns in multiples of 16, about four tiles per thread.
struct Tiling {
  int64_t rows, cols, rchunk, cwidth, nr, nc;
  Tiling(int64_t m, int64_t n, int64_t threads) : rows(m), cols(n) {
    nr = std::max<int64_t>(1, (m + 1023) / 1024);
    rchunk = (m + nr - 1) / nr;
    const int64_t per = nr == 1 ? 3 : 4;  // small products: fewer tiles, less repacking
    nc = std::max<int64_t>(1, (per * threads + nr - 1) / nr);
    cwidth = std::max<int64_t>(64, ((n + nc - 1) / nc + 15) / 16 * 16);
    nc = (n + cwidth - 1) / cwidth;
  }
  int64_t count() const { return nr * nc; }
  void tile(int64_t i, int64_t *r0, int64_t *r1, int64_t *c0, int64_t *c1) const {
    const int64_t r = i / nc, c = i % nc;
    *r0 = r * rchunk;
    *r1 = std::min(rows, *r0 + rchunk);
    *c0 = c * cwidth;
    *c1 = std::min(cols, *c0 + cwidth);
  }
};

// C[m, n] = bias + A[m, k] · Wᵀ (W [n, k]) in tiles over the threads;
// post(thread, r0, r1, c0, c1) runs on each tile right after its product.
template <class Post>
void linear_tiled(const float *A, int64_t m, int64_t k, const at::Tensor &W, const at::Tensor &bias, float *C,
                  int64_t n, const Post &post) {
  const float *w = W.data_ptr<float>(), *bp = bias.data_ptr<float>();
  const Tiling tl(m, n, at::get_num_threads());
  run_tasks(tl.count(), [&](int64_t i, int tid) {
    int64_t r0, r1, c0, c1;
    tl.tile(i, &r0, &r1, &c0, &c1);
    fill_bias(C, n, r0, r1, c0, c1, bp);
    gemm(false, true, r1 - r0, c1 - c0, k, A + r0 * k, k, w + c0 * k, k, 1.0f, C + r0 * n + c0, n);
    post(tid, r0, r1, c0, c1);
  });
}

// dA[m, k] = dC[m, n] · W (W [n, k]): a linear layer's input gradient.
void linear_grad_tiled(const float *dC, int64_t m, int64_t n, const at::Tensor &W, float *dA, int64_t k) {
  const float *w = W.data_ptr<float>();
  const Tiling tl(m, k, at::get_num_threads());
  run_tasks(tl.count(), [&](int64_t i, int) {
    int64_t r0, r1, c0, c1;
    tl.tile(i, &r0, &r1, &c0, &c1);
    gemm(false, false, r1 - r0, c1 - c0, n, dC + r0 * n, n, w + c0, k, 0.0f, dA + r0 * k + c0, k);
  });
}


// ---------------------------------------------------------------- blocks

bool is_cpu_f32(const at::Tensor &t) { return t.defined() && t.device().is_cpu() && t.scalar_type() == at::kFloat; }

// One residual block's weights.
struct Block {
  at::Tensor in_w, in_b, out_w, out_b, ln1_w, ln1_b, fc_w, fc_b, proj_w, proj_b, ln2_w, ln2_b;
};

// A block's parameters by their PyTorch names under resblocks.<l>., with
// where each goes and its shape in units of the width W (rows, cols; 0 cols
// for a vector).
struct BlockParam {
  const char *name;
  at::Tensor Block::*field;
  int64_t rows, cols;
};
const BlockParam kBlockParams[] = {
    {"attn.in_proj_weight", &Block::in_w, 3, 1},  {"attn.in_proj_bias", &Block::in_b, 3, 0},
    {"attn.out_proj.weight", &Block::out_w, 1, 1}, {"attn.out_proj.bias", &Block::out_b, 1, 0},
    {"ln_1.weight", &Block::ln1_w, 1, 0},          {"ln_1.bias", &Block::ln1_b, 1, 0},
    {"mlp.c_fc.weight", &Block::fc_w, 4, 1},       {"mlp.c_fc.bias", &Block::fc_b, 4, 0},
    {"mlp.c_proj.weight", &Block::proj_w, 1, 4},   {"mlp.c_proj.bias", &Block::proj_b, 1, 0},
    {"ln_2.weight", &Block::ln2_w, 1, 0},          {"ln_2.bias", &Block::ln2_b, 1, 0},
};
constexpr int kBlockParamCount = sizeof(kBlockParams) / sizeof(kBlockParams[0]);

// Reads the blocks from weights named resblocks.<l>.<param>: every block
// 0..L-1 must have each parameter once, with the shape for one width; other
// names are refused.
std::vector<Block> read_blocks(const char *const *names, const ct_tensor *ws, int64_t n, int64_t *width) {
  std::vector<std::array<at::Tensor, kBlockParamCount>> found;
  for (int64_t i = 0; i < n; i++) {
    if (names[i] == nullptr) throw std::invalid_argument("fused blocks: nil weight name");
    const std::string name = names[i];
    const std::string pre = "resblocks.";
    size_t end = pre.size();
    while (end < name.size() && name[end] >= '0' && name[end] <= '9') end++;
    int j = -1;
    if (name.compare(0, pre.size(), pre) == 0 && end > pre.size() && end < name.size() && name[end] == '.' &&
        end - pre.size() < 6)
      for (int q = 0; q < kBlockParamCount; q++)
        if (name.compare(end + 1, std::string::npos, kBlockParams[q].name) == 0) j = q;
    if (j < 0) throw std::invalid_argument("fused blocks: unexpected weight " + name);
    const size_t l = std::stoul(name.substr(pre.size(), end - pre.size()));
    if (found.size() <= l) found.resize(l + 1);
    if (found[l][j].defined()) throw std::invalid_argument("fused blocks: weight " + name + " given twice");
    if (ws[i] == nullptr) throw std::invalid_argument("fused blocks: nil tensor for " + name);
    const at::Tensor &t = *static_cast<at::Tensor *>(ws[i]);
    if (!is_cpu_f32(t)) throw std::invalid_argument("fused blocks: " + name + " must be a CPU float32 tensor");
    found[l][j] = t.detach().contiguous();
  }
  if (found.empty()) throw std::invalid_argument("fused blocks: no weights");
  for (size_t l = 0; l < found.size(); l++)
    for (int j = 0; j < kBlockParamCount; j++)
      if (!found[l][j].defined())
        throw std::invalid_argument("fused blocks: missing weight resblocks." + std::to_string(l) + "." +
                                    kBlockParams[j].name);
  const int64_t w = found[0][0].dim() == 2 ? found[0][0].size(1) : -1;
  if (w < 1) throw std::invalid_argument("fused blocks: resblocks.0.attn.in_proj_weight has shape " +
                                         c10::str(found[0][0].sizes()));
  std::vector<Block> blocks(found.size());
  for (size_t l = 0; l < found.size(); l++)
    for (int j = 0; j < kBlockParamCount; j++) {
      const BlockParam &p = kBlockParams[j];
      const at::Tensor &t = found[l][j];
      std::vector<int64_t> want{p.rows * w};
      if (p.cols > 0) want.push_back(p.cols * w);
      if (t.sizes() != at::IntArrayRef(want))
        throw std::invalid_argument("fused blocks: resblocks." + std::to_string(l) + "." + p.name + " has shape " +
                                    c10::str(t.sizes()) + ", want " + c10::str(at::IntArrayRef(want)));
      blocks[l].*p.field = t;
    }
  *width = w;
  return blocks;
}

// Activation buffers of the inference forward, reused across calls.
struct Buffers {
  int64_t rows = 0, tokens = 0;
  at::Tensor h, o, f;              // [M, W], [M, W], [M, 4W] (f also holds qkv)
  std::vector<at::Tensor> scores;  // per thread [L, L] ×2
  std::vector<at::Tensor> gelu;    // per thread scratch block
  int64_t bytes() const {
    int64_t n = 0;
    for (const at::Tensor *t : {&h, &o, &f})
      if (t->defined()) n += t->numel() * 4;
    for (const auto *v : {&scores, &gelu})
      for (const auto &t : *v) n += t.numel() * 4;
    return n;
  }
};

// A stack of residual attention blocks (x + attn(ln_1(x)), then
// x + mlp(ln_2(x))) with its inference buffers.
struct Stack {
  std::vector<Block> blocks;
  int64_t width = 0, heads = 0;

  std::mutex mu;  // guards buf
  Buffers buf;

  // Transposed copies of each block's in, out, fc and proj weights for the
  // shared-prefix path, made on its first differentiable call when oneDNN is
  // there (training runs it every step; scoring once, without them).
  mutable std::once_flag once;
  mutable std::vector<std::array<at::Tensor, 4>> wt;

  const std::vector<std::array<at::Tensor, 4>> *transposed() const {
    if (dnnl_sgemm() == nullptr) return nullptr;
    std::call_once(once, [this] {
      for (const Block &b : blocks)
        wt.push_back({b.in_w.t().contiguous(), b.out_w.t().contiguous(), b.fc_w.t().contiguous(),
                      b.proj_w.t().contiguous()});
    });
    return &wt;
  }

  void ensure(int64_t m, int64_t L, int64_t T) {
    auto opts = at::TensorOptions().dtype(at::kFloat);
    if (buf.rows < m) {
      buf.h = at::Tensor(), buf.o = at::Tensor(), buf.f = at::Tensor();  // free first: the peak stays one set
      buf.h = at::empty({m, width}, opts);
      buf.o = at::empty({m, width}, opts);
      buf.f = at::empty({m, 4 * width}, opts);
      buf.rows = m;
    }
    if (buf.tokens != L) buf.scores.clear(), buf.tokens = L;
    while (static_cast<int64_t>(buf.scores.size()) < 2 * T) buf.scores.push_back(at::empty({L, L}, opts));
    while (static_cast<int64_t>(buf.gelu.size()) < T) buf.gelu.push_back(at::empty({1 << 16}, opts));
  }

  // Rows [0, m) of dst = LayerNorm(src).
  void norm(const float *src, float *dst, int64_t m, const at::Tensor &g, const at::Tensor &b) {
    const int64_t chunk = 64;
    run_tasks((m + chunk - 1) / chunk, [&](int64_t i, int) {
      const int64_t r0 = i * chunk, r1 = std::min(m, r0 + chunk);
      layer_norm_rows(src + r0 * width, dst + r0 * width, r1 - r0, width, g.data_ptr<float>(),
                      b.data_ptr<float>(), 1e-5f);
    });
  }

  // Unmasked self-attention of n sequences of L tokens: qkv in buf.f, the
  // heads' outputs into buf.o.
  void attention(int64_t n, int64_t L) {
    const int64_t w = width, hd = width / heads, ld = 3 * width;
    const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
    const float *qkv = buf.f.data_ptr<float>();
    float *o = buf.o.data_ptr<float>();
    run_tasks(n * heads, [&](int64_t task, int tid) {
      const int64_t i = task / heads, hh = task % heads;
      at::Tensor &s1 = buf.scores[2 * tid], &s2 = buf.scores[2 * tid + 1];
      const float *q = qkv + i * L * ld + hh * hd;
      gemm(false, true, L, L, hd, q, ld, q + w, ld, 0.0f, s1.data_ptr<float>(), L);
      s1.mul_(scale);
      at::_softmax_out(s2, s1, 1, false);
      gemm(false, false, L, hd, L, s2.data_ptr<float>(), L, q + 2 * w, ld, 0.0f, o + i * L * w + hh * hd, w);
    });
  }

  // x [N, L, W] → the blocks' output [N, L, W] (a new tensor).
  at::Tensor forward(const at::Tensor &input) {
    const int64_t n = input.size(0), L = input.size(1), w = width, m = n * L;
    const int64_t T = at::get_num_threads();
    std::lock_guard<std::mutex> lock(mu);
    SingleThreadedBlas single;
    ensure(m, L, T);
    at::Tensor out = input.clone(at::MemoryFormat::Contiguous);  // the residual stream
    float *x = out.data_ptr<float>(), *h = buf.h.data_ptr<float>(), *o = buf.o.data_ptr<float>();
    float *f = buf.f.data_ptr<float>();
    auto none = [](int, int64_t, int64_t, int64_t, int64_t) {};
    for (const Block &b : blocks) {
      norm(x, h, m, b.ln1_w, b.ln1_b);
      linear_tiled(h, m, w, b.in_w, b.in_b, f, 3 * w, none);  // f holds qkv [m, 3W]
      attention(n, L);
      linear_tiled(o, m, w, b.out_w, b.out_b, h, w,
                   [&](int, int64_t r0, int64_t r1, int64_t c0, int64_t c1) { add_tile(x, h, w, r0, r1, c0, c1); });
      norm(x, h, m, b.ln2_w, b.ln2_b);
      linear_tiled(h, m, w, b.fc_w, b.fc_b, f, 4 * w, [&](int t, int64_t r0, int64_t r1, int64_t c0, int64_t c1) {
        quick_gelu_tile(f, 4 * w, r0, r1, c0, c1, buf.gelu[t]);
      });
      linear_tiled(f, m, 4 * w, b.proj_w, b.proj_b, o, w,
                   [&](int, int64_t r0, int64_t r1, int64_t c0, int64_t c1) { add_tile(x, o, w, r0, r1, c0, c1); });
    }
    return out;
  }
};

// ------------------------------------------- forward with a shared prefix
//
// CLIP-AGIQA's prompts share their first P token embeddings (SOT + context):
// the prefix rows run once and each prompt's L remaining rows attend to the
// prefix's keys and values, causally. PrefixFn computes the suffix rows'
// outputs forward and, as an autograd function, the gradients to both
// inputs backward, by hand: the weights are frozen, so only input gradients
// are needed, and one native call per direction replaces hundreds of small
// autograd ops. All rows (prefix, then each prompt's suffix) share every
// linear layer as one product split over the threads.

// Activations a backward pass needs, kept by the autograd graph.
struct PrefixRun {
  std::shared_ptr<const Stack> st;
  int64_t P = 0, K = 0, L = 0;
  std::vector<at::Tensor> xin, m1, r1, qkv, pp, ps, xmid, m2, r2, a;
};

at::Tensor rows_linear(const at::Tensor &x, const at::Tensor &W, const at::Tensor &b) {
  at::Tensor y = at::empty({x.size(0), W.size(0)}, x.options());
  linear_tiled(x.data_ptr<float>(), x.size(0), x.size(1), W, b, y.data_ptr<float>(), W.size(0),
               [](int, int64_t, int64_t, int64_t, int64_t) {});
  return y;
}

// The same with Wᵀ [k, n] stored: y = x · Wt + b (a product whose second
// operand is not transposed, which oneDNN's sgemm runs fastest for few rows).
at::Tensor rows_linear_t(const at::Tensor &x, const at::Tensor &Wt, const at::Tensor &b) {
  const int64_t m = x.size(0), k = x.size(1), n = Wt.size(1);
  at::Tensor y = at::empty({m, n}, x.options());
  const float *xp = x.data_ptr<float>(), *wp = Wt.data_ptr<float>(), *bp = b.data_ptr<float>();
  float *yp = y.data_ptr<float>();
  const Tiling tl(m, n, at::get_num_threads());
  run_tasks(tl.count(), [&](int64_t i, int) {
    int64_t r0, r1, c0, c1;
    tl.tile(i, &r0, &r1, &c0, &c1);
    fill_bias(yp, n, r0, r1, c0, c1, bp);
    gemm(false, false, r1 - r0, c1 - c0, k, xp + r0 * k, k, wp + c0, n, 1.0f, yp + r0 * n + c0, n);
  });
  return y;
}

at::Tensor rows_linear_grad(const at::Tensor &dy, const at::Tensor &W) {
  at::Tensor dx = at::empty({dy.size(0), W.size(1)}, dy.options());
  linear_grad_tiled(dy.data_ptr<float>(), dy.size(0), dy.size(1), W, dx.data_ptr<float>(), W.size(1));
  return dx;
}

// Additive masks: causal over the prefix [P, P]; a suffix row sees the whole
// prefix and its own prompt's tokens up to itself [L, P+L].
std::pair<at::Tensor, at::Tensor> prefix_masks(int64_t P, int64_t L, const at::TensorOptions &o) {
  const double inf = std::numeric_limits<double>::infinity();
  at::Tensor mp = at::full({P, P}, -inf, o).triu(1);
  at::Tensor ms = at::zeros({L, P + L}, o);
  ms.narrow(1, P, L).copy_(at::full({L, L}, -inf, o).triu(1));
  return {mp, ms};
}

// prefix [1, P, D], suffix [K, L, D] → the suffix rows' outputs [K, L, D].
at::Tensor prefix_forward(const std::shared_ptr<const Stack> &st, const at::Tensor &prefix, const at::Tensor &suffix,
                          PrefixRun *run) {
  const int64_t D = st->width, H = st->heads, hd = D / H;
  const int64_t P = prefix.size(1), K = suffix.size(0), L = suffix.size(1), R = P + K * L;
  const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
  auto o = prefix.options();
  at::Tensor x = at::empty({R, D}, o);
  x.narrow(0, 0, P).copy_(prefix[0]);
  x.narrow(0, P, K * L).view({K, L, D}).copy_(suffix);
  auto masks = prefix_masks(P, L, o);
  if (run != nullptr) {
    run->st = st;
    run->P = P, run->K = K, run->L = L;
  }
  const auto *wt = run != nullptr ? st->transposed() : nullptr;
  for (size_t l = 0; l < st->blocks.size(); l++) {
    const Block &b = st->blocks[l];
    auto lin = [&](const at::Tensor &in, int j, const at::Tensor &W, const at::Tensor &bias) {
      return wt != nullptr ? rows_linear_t(in, (*wt)[l][j], bias) : rows_linear(in, W, bias);
    };
    auto ln1 = at::native_layer_norm(x, {D}, b.ln1_w, b.ln1_b, 1e-5);
    at::Tensor qkv = lin(std::get<0>(ln1), 0, b.in_w, b.in_b);
    at::Tensor qp = qkv.narrow(0, 0, P).view({P, 3, H, hd}).permute({1, 2, 0, 3});  // [3, H, P, hd]
    at::Tensor q = qp[0], k = qp[1], v = qp[2];
    at::Tensor pp = at::softmax(at::matmul(q, k.transpose(1, 2)).mul_(scale).add_(masks.first), -1);
    at::Tensor op = at::matmul(pp, v);                                                           // [H, P, hd]
    at::Tensor qs = qkv.narrow(0, P, K * L).view({K, L, 3, H, hd}).permute({2, 0, 3, 1, 4});  // [3, K, H, L, hd]
    at::Tensor keys = at::cat({k.unsqueeze(0).expand({K, H, P, hd}), qs[1]}, 2);               // [K, H, P+L, hd]
    at::Tensor vals = at::cat({v.unsqueeze(0).expand({K, H, P, hd}), qs[2]}, 2);
    at::Tensor ps = at::softmax(at::matmul(qs[0], keys.transpose(2, 3)).mul_(scale).add_(masks.second), -1);
    at::Tensor os = at::matmul(ps, vals);  // [K, H, L, hd]
    at::Tensor att = at::empty({R, D}, o);
    att.narrow(0, 0, P).view({P, H, hd}).copy_(op.permute({1, 0, 2}));
    att.narrow(0, P, K * L).view({K, L, H, hd}).copy_(os.permute({0, 2, 1, 3}));
    at::Tensor xmid = x + lin(att, 1, b.out_w, b.out_b);
    auto ln2 = at::native_layer_norm(xmid, {D}, b.ln2_w, b.ln2_b, 1e-5);
    at::Tensor a = lin(std::get<0>(ln2), 2, b.fc_w, b.fc_b);
    at::Tensor g = a * at::sigmoid(a * 1.702);
    at::Tensor xout = xmid + lin(g, 3, b.proj_w, b.proj_b);
    if (run != nullptr) {
      run->xin.push_back(x);
      run->m1.push_back(std::get<1>(ln1));
      run->r1.push_back(std::get<2>(ln1));
      run->qkv.push_back(qkv);
      run->pp.push_back(pp);
      run->ps.push_back(ps);
      run->xmid.push_back(xmid);
      run->m2.push_back(std::get<1>(ln2));
      run->r2.push_back(std::get<2>(ln2));
      run->a.push_back(a);
    }
    x = xout;
  }
  return x.narrow(0, P, K * L).view({K, L, D});
}

at::Tensor ln_grad(const at::Tensor &dy, const at::Tensor &x, const at::Tensor &mean, const at::Tensor &rstd,
                   const at::Tensor &w, const at::Tensor &b) {
  return std::get<0>(at::native_layer_norm_backward(dy, x, {x.size(-1)}, mean, rstd, w, b, {true, false, false}));
}

// Gradients of the suffix outputs (dout [K, L, D]) with respect to prefix
// [1, P, D] and suffix [K, L, D].
std::pair<at::Tensor, at::Tensor> prefix_backward(const PrefixRun &run, const at::Tensor &dout) {
  const Stack &st = *run.st;
  const int64_t D = st.width, H = st.heads, hd = D / H, P = run.P, K = run.K, L = run.L, R = P + K * L;
  const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
  at::Tensor dX = at::zeros({R, D}, dout.options());
  dX.narrow(0, P, K * L).copy_(dout.reshape({K * L, D}));
  for (int64_t l = static_cast<int64_t>(st.blocks.size()) - 1; l >= 0; l--) {
    const Block &b = st.blocks[l];
    // MLP: x_out = x_mid + proj(QuickGELU(fc(LN2(x_mid)))).
    at::Tensor dg = rows_linear_grad(dX, b.proj_w);
    const at::Tensor &a = run.a[l];
    at::Tensor sg = at::sigmoid(a * 1.702);
    at::Tensor da = dg * (sg + a * 1.702 * sg * (1 - sg));
    at::Tensor dxmid = dX + ln_grad(rows_linear_grad(da, b.fc_w), run.xmid[l], run.m2[l], run.r2[l], b.ln2_w, b.ln2_b);
    // Attention: x_mid = x_in + out(attention(LN1(x_in))).
    at::Tensor datt = rows_linear_grad(dxmid, b.out_w);
    const at::Tensor &qkv = run.qkv[l], &pp = run.pp[l], &ps = run.ps[l];
    at::Tensor qp = qkv.narrow(0, 0, P).view({P, 3, H, hd}).permute({1, 2, 0, 3});
    at::Tensor q = qp[0], k = qp[1], v = qp[2];
    at::Tensor qs = qkv.narrow(0, P, K * L).view({K, L, 3, H, hd}).permute({2, 0, 3, 1, 4});
    at::Tensor keys = at::cat({k.unsqueeze(0).expand({K, H, P, hd}), qs[1]}, 2);
    at::Tensor vals = at::cat({v.unsqueeze(0).expand({K, H, P, hd}), qs[2]}, 2);
    at::Tensor dos = datt.narrow(0, P, K * L).view({K, L, H, hd}).permute({0, 2, 1, 3});  // [K, H, L, hd]
    at::Tensor dop = datt.narrow(0, 0, P).view({P, H, hd}).permute({1, 0, 2});         // [H, P, hd]
    // Suffix rows.
    at::Tensor dps = at::matmul(dos, vals.transpose(2, 3));
    at::Tensor dvals = at::matmul(ps.transpose(2, 3), dos);
    at::Tensor dss = ps * (dps - (dps * ps).sum(-1, true));
    at::Tensor dqs = at::matmul(dss, keys).mul_(scale);
    at::Tensor dkeys = at::matmul(dss.transpose(2, 3), qs[0]).mul_(scale);
    // Prefix rows, plus what every prompt's attention sent to their keys and values.
    at::Tensor dpp = at::matmul(dop, v.transpose(1, 2));
    at::Tensor dv = at::matmul(pp.transpose(1, 2), dop) + dvals.narrow(2, 0, P).sum(0);
    at::Tensor dsp = pp * (dpp - (dpp * pp).sum(-1, true));
    at::Tensor dq = at::matmul(dsp, k).mul_(scale);
    at::Tensor dk = at::matmul(dsp.transpose(1, 2), q).mul_(scale) + dkeys.narrow(2, 0, P).sum(0);
    at::Tensor dqkv = at::empty({R, 3 * D}, dout.options());
    dqkv.narrow(0, 0, P).view({P, 3, H, hd}).copy_(at::stack({dq, dk, dv}).permute({2, 0, 1, 3}));
    dqkv.narrow(0, P, K * L).view({K, L, 3, H, hd})
        .copy_(at::stack({dqs, dkeys.narrow(2, P, L), dvals.narrow(2, P, L)}).permute({1, 3, 0, 2, 4}));
    dX = dxmid + ln_grad(rows_linear_grad(dqkv, b.in_w), run.xin[l], run.m1[l], run.r1[l], b.ln1_w, b.ln1_b);
  }
  at::Tensor dprefix = dX.narrow(0, 0, P).unsqueeze(0).contiguous();
  at::Tensor dsuffix = dX.narrow(0, P, K * L).view({K, L, D}).contiguous();
  return {dprefix, dsuffix};
}

// Keeps a C++ object alive for as long as a tensor (saved in an autograd
// context) is.
template <class T>
at::Tensor holder(std::shared_ptr<T> p) {
  void *raw = p.get();
  return at::from_blob(raw, {1}, [p](void *) mutable { p.reset(); }, at::TensorOptions().dtype(at::kByte));
}

struct PrefixFn : public torch::autograd::Function<PrefixFn> {
  static at::Tensor forward(torch::autograd::AutogradContext *ctx, const at::Tensor &prefix, const at::Tensor &suffix,
                            std::shared_ptr<const Stack> st) {
    auto run = std::make_shared<PrefixRun>();
    at::Tensor out;
    {
      SingleThreadedBlas single;
      out = prefix_forward(st, prefix, suffix, run.get());
    }
    ctx->saved_data["run"] = holder(run);
    return out;
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext *ctx,
                                                 torch::autograd::variable_list grads) {
    at::Tensor keep = ctx->saved_data["run"].toTensor();
    const PrefixRun &run = *static_cast<const PrefixRun *>(keep.data_ptr());
    std::pair<at::Tensor, at::Tensor> g;
    {
      SingleThreadedBlas single;
      g = prefix_backward(run, grads[0]);
    }
    return {g.first, g.second, at::Tensor()};
  }
};

struct StackHandle {
  std::shared_ptr<Stack> st;
};

}  // namespace

#define FUSED_TRY try {
#define FUSED_CATCH                                  \
  }                                                  \
  catch (const c10::Error &e) {                      \
    return fused_error(e.what_without_backtrace());  \
  }                                                  \
  catch (const std::exception &e) {                  \
    return fused_error(e.what());                    \
  }                                                  \
  catch (...) {                                      \
    return fused_error("unknown C++ exception");     \
  }                                                  \
  return nullptr;

extern "C" {

ct_error ct_blocks_new(const char *const *names, const ct_tensor *ws, int64_t n, int64_t heads, ct_blocks *out) {
  FUSED_TRY
  if (n < 1 || names == nullptr || ws == nullptr) throw std::invalid_argument("fused blocks: no weights");
  auto st = std::make_shared<Stack>();
  st->blocks = read_blocks(names, ws, n, &st->width);
  st->heads = heads;
  if (heads < 1 || st->width % heads != 0)
    throw std::invalid_argument("fused blocks: width " + std::to_string(st->width) + " not divisible by " +
                                std::to_string(heads) + " heads");
  *out = new StackHandle{std::move(st)};
  FUSED_CATCH
}

void ct_blocks_free(ct_blocks b) { delete static_cast<StackHandle *>(b); }

int64_t ct_blocks_layers(ct_blocks b) { return static_cast<int64_t>(static_cast<StackHandle *>(b)->st->blocks.size()); }

void ct_blocks_trim(ct_blocks b) {
  Stack &st = *static_cast<StackHandle *>(b)->st;
  std::lock_guard<std::mutex> lock(st.mu);
  st.buf = Buffers();
}

int64_t ct_blocks_buffer_bytes(ct_blocks b) {
  Stack &st = *static_cast<StackHandle *>(b)->st;
  std::lock_guard<std::mutex> lock(st.mu);
  return st.buf.bytes();
}

ct_error ct_blocks_forward(ct_blocks b, ct_tensor x, ct_tensor *out) {
  FUSED_TRY
  ct_apply_num_threads();
  Stack &st = *static_cast<StackHandle *>(b)->st;
  if (x == nullptr) throw std::invalid_argument("fused blocks: nil input");
  const at::Tensor &in = *static_cast<at::Tensor *>(x);
  if (!is_cpu_f32(in)) throw std::invalid_argument("fused blocks: input must be a CPU float32 tensor");
  if (in.dim() != 3 || in.size(0) < 1 || in.size(1) < 1 || in.size(2) != st.width)
    throw std::invalid_argument("fused blocks: input has shape " + c10::str(in.sizes()) + ", want [N L " +
                                std::to_string(st.width) + "]");
  at::NoGradGuard no_grad;
  *out = new at::Tensor(st.forward(in.detach()));
  FUSED_CATCH
}

ct_error ct_blocks_forward_shared_prefix(ct_blocks b, int32_t grad, ct_tensor prefix, ct_tensor suffix,
                                         ct_tensor *out) {
  FUSED_TRY
  ct_apply_num_threads();
  const std::shared_ptr<Stack> &st = static_cast<StackHandle *>(b)->st;
  if (prefix == nullptr || suffix == nullptr) throw std::invalid_argument("fused blocks: nil input");
  const at::Tensor &pre = *static_cast<at::Tensor *>(prefix);
  const at::Tensor &suf = *static_cast<at::Tensor *>(suffix);
  const int64_t D = st->width;
  if (!is_cpu_f32(pre) || !is_cpu_f32(suf)) throw std::invalid_argument("fused blocks: inputs must be CPU float32 tensors");
  if (pre.dim() != 3 || pre.size(0) != 1 || pre.size(1) < 1 || pre.size(2) != D || suf.dim() != 3 || suf.size(0) < 1 ||
      suf.size(1) < 1 || suf.size(2) != D)
    throw std::invalid_argument("fused blocks: prefix " + c10::str(pre.sizes()) + " and suffix " + c10::str(suf.sizes()) +
                                ", want [1 P " + std::to_string(D) + "] and [K L " + std::to_string(D) + "]");
  if (grad == CT_GRAD_ENABLED && (pre.requires_grad() || suf.requires_grad())) {
    at::AutoGradMode on(true);
    *out = new at::Tensor(PrefixFn::apply(pre, suf, std::shared_ptr<const Stack>(st)));
  } else {
    std::optional<c10::InferenceMode> inference;
    std::optional<at::NoGradGuard> no_grad;
    if (grad == CT_INFERENCE) {
      inference.emplace(true);
    } else {
      no_grad.emplace();
    }
    SingleThreadedBlas single;
    *out = new at::Tensor(prefix_forward(st, pre.detach(), suf.detach(), nullptr));
  }
  FUSED_CATCH
}

ct_error ct_fused_patch_embed(ct_tensor pixels, ct_tensor weight, ct_tensor *out) {
  FUSED_TRY
  ct_apply_num_threads();
  if (pixels == nullptr || weight == nullptr) throw std::invalid_argument("fused patch embed: nil input");
  const at::Tensor &px = *static_cast<at::Tensor *>(pixels), &W = *static_cast<at::Tensor *>(weight);
  if (!is_cpu_f32(px) || !is_cpu_f32(W)) throw std::invalid_argument("fused patch embed: inputs must be CPU float32 tensors");
  if (W.dim() != 4 || W.size(2) != W.size(3) || W.size(2) < 1 || px.dim() != 4 || px.size(0) < 1 ||
      px.size(1) != W.size(1) || px.size(2) != px.size(3) || px.size(2) % W.size(2) != 0)
    throw std::invalid_argument("fused patch embed: pixels " + c10::str(px.sizes()) + " and weight " +
                                c10::str(W.sizes()) + ", want [N C R R] and [W C P P] with P dividing R");
  at::NoGradGuard no_grad;
  SingleThreadedBlas single;
  const at::Tensor x = px.detach().contiguous(), w = W.detach().contiguous();
  const int64_t n = x.size(0), ch = x.size(1), res = x.size(2), width = w.size(0), p = w.size(2), g = res / p;
  const int64_t g2 = g * g, k = ch * p * p;
  at::Tensor y = at::empty({n, g2, width}, x.options());
  const float *img0 = x.data_ptr<float>(), *wp = w.data_ptr<float>();
  float *yp = y.data_ptr<float>();
  // One image per task, its patches gathered into the thread's scratch
  // (kept across calls: a fresh one would cost a page fault per 4 KiB).
  run_tasks(n, [&](int64_t i, int) {
    thread_local std::vector<float> cols;
    if (static_cast<int64_t>(cols.size()) < g2 * k) cols.resize(g2 * k);
    const float *img = img0 + i * ch * res * res;
    for (int64_t gy = 0; gy < g; gy++)
      for (int64_t gx = 0; gx < g; gx++) {
        float *row = cols.data() + (gy * g + gx) * k;
        for (int64_t c = 0; c < ch; c++)
          for (int64_t ky = 0; ky < p; ky++)
            std::memcpy(row + (c * p + ky) * p, img + c * res * res + (gy * p + ky) * res + gx * p, p * sizeof(float));
      }
    gemm(false, true, g2, width, k, cols.data(), k, wp, k, 0.0f, yp + i * g2 * width, width);
  });
  *out = new at::Tensor(std::move(y));
  FUSED_CATCH
}

ct_error ct_fused_layer_norm(ct_tensor x, ct_tensor w, ct_tensor b, double eps, ct_tensor *out) {
  FUSED_TRY
  ct_apply_num_threads();
  if (x == nullptr || w == nullptr || b == nullptr) throw std::invalid_argument("fused layer norm: nil input");
  const at::Tensor &in = *static_cast<at::Tensor *>(x), &g = *static_cast<at::Tensor *>(w),
                   &beta = *static_cast<at::Tensor *>(b);
  if (!is_cpu_f32(in) || !is_cpu_f32(g) || !is_cpu_f32(beta))
    throw std::invalid_argument("fused layer norm: inputs must be CPU float32 tensors");
  if (in.dim() < 1 || g.dim() != 1 || beta.sizes() != g.sizes() || in.size(-1) != g.size(0))
    throw std::invalid_argument("fused layer norm: x " + c10::str(in.sizes()) + ", weight " + c10::str(g.sizes()) +
                                ", bias " + c10::str(beta.sizes()) + ", want [... W], [W], [W]");
  at::NoGradGuard no_grad;
  const at::Tensor xc = in.detach().contiguous(), gc = g.detach().contiguous(), bc = beta.detach().contiguous();
  at::Tensor y = at::empty_like(xc);
  const int64_t width = g.size(0), rows = width > 0 ? xc.numel() / width : 0, chunk = 64;
  const float *xp = xc.data_ptr<float>(), *gp = gc.data_ptr<float>(), *bp = bc.data_ptr<float>();
  float *yp = y.data_ptr<float>();
  run_tasks((rows + chunk - 1) / chunk, [&](int64_t i, int) {
    const int64_t r0 = i * chunk, r1 = std::min(rows, r0 + chunk);
    layer_norm_rows(xp + r0 * width, yp + r0 * width, r1 - r0, width, gp, bp, static_cast<float>(eps));
  });
  *out = new at::Tensor(std::move(y));
  FUSED_CATCH
}

int32_t ct_fused_direct_blas(void) { return blas().sgemm != nullptr ? 1 : 0; }

int32_t ct_fused_dnnl(void) { return dnnl_sgemm() != nullptr ? 1 : 0; }

int32_t ct_blas_get_threads(void) { return blas().get_threads != nullptr ? blas().get_threads() : -1; }

int32_t ct_blas_set_threads(int32_t n) {
  if (blas().set_threads == nullptr || n < 1) return 0;
  blas().set_threads(n);
  return 1;
}

}  // extern "C"
