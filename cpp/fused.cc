// Fused CPU paths for CLIP: see fused.h.
//
// Image encoder (inference). Why it is faster than running the same ops one
// by one (as the Go plain path and PyTorch eager do):
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
// Text path with a shared prefix (training): see TextFn below.
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

// ---------------------------------------------------------------- model

struct Block {
  at::Tensor in_w, in_b, out_w, out_b, ln1_w, ln1_b, fc_w, fc_b, proj_w, proj_b, ln2_w, ln2_b;
};

struct Buffers {
  int64_t rows = 0;
  at::Tensor x, h, o, f;              // [M, W], [M, W], [M, W], [M, 4W] (also holds qkv)
  std::vector<at::Tensor> scores;     // per thread [L, L] ×2
  std::vector<at::Tensor> gelu;       // per thread scratch block
  std::vector<at::Tensor> patches;    // per thread [G², 3·P·P]
  int64_t bytes() const {
    int64_t n = 0;
    for (const at::Tensor *t : {&x, &h, &o, &f})
      if (t->defined()) n += t->numel() * 4;
    for (const auto *v : {&scores, &gelu, &patches})
      for (const auto &t : *v) n += t.numel() * 4;
    return n;
  }
};

struct ViT {
  at::Tensor conv_w, cls, pos, ln_pre_w, ln_pre_b, ln_post_w, ln_post_b, proj;
  std::vector<Block> blocks;
  int64_t width = 0, heads = 0, patch = 0, grid = 0, tokens = 0, res = 0;
  std::mutex mu;
  Buffers buf;

  void ensure(int64_t n, int64_t T) {
    const int64_t m = n * tokens;
    auto opts = at::TensorOptions().dtype(at::kFloat);
    if (buf.rows < m) {
      buf = Buffers();  // free the old ones first: the peak stays one set
      buf.x = at::empty({m, width}, opts);
      buf.h = at::empty({m, width}, opts);
      buf.o = at::empty({m, width}, opts);
      buf.f = at::empty({m, 4 * width}, opts);
      buf.rows = m;
    }
    while (static_cast<int64_t>(buf.scores.size()) < 2 * T) buf.scores.push_back(at::empty({tokens, tokens}, opts));
    while (static_cast<int64_t>(buf.gelu.size()) < T) buf.gelu.push_back(at::empty({1 << 16}, opts));
    while (static_cast<int64_t>(buf.patches.size()) < T)
      buf.patches.push_back(at::empty({grid * grid, 3 * patch * patch}, opts));
  }

  // Patch embedding (conv as a product), class token and positions for image i.
  void embed(const float *pix, int64_t i, at::Tensor &cols) {
    const int64_t g2 = grid * grid, pp = patch * patch, w = width;
    float *pc = cols.data_ptr<float>();
    const float *img = pix + i * 3 * res * res;
    for (int64_t gy = 0; gy < grid; gy++)
      for (int64_t gx = 0; gx < grid; gx++) {
        float *row = pc + (gy * grid + gx) * 3 * pp;
        for (int64_t c = 0; c < 3; c++)
          for (int64_t ky = 0; ky < patch; ky++)
            std::memcpy(row + c * pp + ky * patch, img + c * res * res + (gy * patch + ky) * res + gx * patch,
                        patch * sizeof(float));
      }
    float *x = buf.x.data_ptr<float>() + i * tokens * w;
    gemm(false, true, g2, w, 3 * pp, pc, 3 * pp, conv_w.data_ptr<float>(), 3 * pp, 0.0f, x + w, w);
    const float *p = pos.data_ptr<float>(), *ce = cls.data_ptr<float>();
    for (int64_t c = 0; c < w; c++) x[c] = ce[c] + p[c];
    for (int64_t t = 1; t < tokens; t++)
      for (int64_t c = 0; c < w; c++) x[t * w + c] += p[t * w + c];
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

  template <class Post>
  void linear(const float *A, int64_t m, int64_t k, const at::Tensor &W, const at::Tensor &bias, float *C,
              int64_t n, const Post &post) {
    linear_tiled(A, m, k, W, bias, C, n, post);
  }

  void attention(int64_t n) {
    const int64_t L = tokens, w = width, hd = width / heads, ld = 3 * width;
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

  at::Tensor forward(const at::Tensor &pixels) {
    const int64_t n = pixels.size(0), L = tokens, w = width, m = n * L;
    const int64_t T = at::get_num_threads();
    std::lock_guard<std::mutex> lock(mu);
    SingleThreadedBlas single;
    ensure(n, T);
    float *x = buf.x.data_ptr<float>(), *h = buf.h.data_ptr<float>(), *o = buf.o.data_ptr<float>();
    float *f = buf.f.data_ptr<float>();
    const float *pix = pixels.data_ptr<float>();
    run_tasks(n, [&](int64_t i, int tid) { embed(pix, i, buf.patches[tid]); });
    norm(x, x, m, ln_pre_w, ln_pre_b);
    auto none = [](int, int64_t, int64_t, int64_t, int64_t) {};
    for (const Block &b : blocks) {
      norm(x, h, m, b.ln1_w, b.ln1_b);
      linear(h, m, w, b.in_w, b.in_b, f, 3 * w, none);  // f holds qkv [m, 3W]
      attention(n);
      linear(o, m, w, b.out_w, b.out_b, h, w,
             [&](int, int64_t r0, int64_t r1, int64_t c0, int64_t c1) { add_tile(x, h, w, r0, r1, c0, c1); });
      norm(x, h, m, b.ln2_w, b.ln2_b);
      linear(h, m, w, b.fc_w, b.fc_b, f, 4 * w, [&](int t, int64_t r0, int64_t r1, int64_t c0, int64_t c1) {
        quick_gelu_tile(f, 4 * w, r0, r1, c0, c1, buf.gelu[t]);
      });
      linear(f, m, 4 * w, b.proj_w, b.proj_b, o, w,
             [&](int, int64_t r0, int64_t r1, int64_t c0, int64_t c1) { add_tile(x, o, w, r0, r1, c0, c1); });
    }
    at::Tensor cls_rows = buf.x.narrow(0, 0, m).view({n, L, w}).select(1, 0);
    at::Tensor y = at::layer_norm(cls_rows, {w}, ln_post_w, ln_post_b, 1e-5);
    return at::matmul(y, proj);
  }
};

bool is_cpu_f32(const at::Tensor &t) { return t.defined() && t.device().is_cpu() && t.scalar_type() == at::kFloat; }

at::Tensor weight(const ct_tensor *ws, int64_t i, const char *what) {
  if (ws[i] == nullptr) throw std::invalid_argument(std::string("fused ViT: nil tensor for ") + what);
  at::Tensor t = *static_cast<at::Tensor *>(ws[i]);
  if (!is_cpu_f32(t)) throw std::invalid_argument(std::string("fused ViT: ") + what + " must be a CPU float32 tensor");
  return t.detach().contiguous();
}

void expect_shape(const at::Tensor &t, std::vector<int64_t> want, const char *what) {
  if (t.sizes() != at::IntArrayRef(want)) {
    std::string msg = std::string("fused ViT: ") + what + " has shape " + c10::str(t.sizes()) + ", want " +
                      c10::str(at::IntArrayRef(want));
    throw std::invalid_argument(msg);
  }
}


// Reads `layers` residual blocks of width w, 12 weights each in the order of
// ct_vit_new, starting at ws[first], checking every shape.
std::vector<Block> read_blocks(const ct_tensor *ws, int64_t first, int64_t layers, int64_t w) {
  static const char *names[12] = {"in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias",
                                  "ln_1.weight",    "ln_1.bias",    "c_fc.weight",     "c_fc.bias",
                                  "c_proj.weight",  "c_proj.bias",  "ln_2.weight",     "ln_2.bias"};
  const std::vector<std::vector<int64_t>> shapes = {{3 * w, w}, {3 * w}, {w, w},     {w}, {w}, {w},
                                                    {4 * w, w}, {4 * w}, {w, 4 * w}, {w}, {w}, {w}};
  std::vector<Block> blocks;
  for (int64_t l = 0; l < layers; l++) {
    at::Tensor t[12];
    for (int j = 0; j < 12; j++) {
      t[j] = weight(ws, first + 12 * l + j, names[j]);
      expect_shape(t[j], shapes[j], names[j]);
    }
    blocks.push_back(Block{t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7], t[8], t[9], t[10], t[11]});
  }
  return blocks;
}

// ------------------------------------------- text path with a shared prefix
//
// CLIP-AGIQA's prompts share their first P token embeddings (SOT + context):
// the prefix runs once and each prompt's remaining L tokens attend to the
// prefix's keys and values. TextPrefix computes the features forward and,
// as an autograd function, the gradients to both inputs backward, by hand:
// the weights are frozen, so only input gradients are needed, and one native
// call per direction replaces hundreds of small autograd ops. All rows
// (prefix, then each prompt's suffix) share every linear layer as one
// product split over the threads.

struct TextWeights {
  at::Tensor pos, lnf_w, lnf_b, tproj;
  std::vector<Block> blocks;
  int64_t width = 0, heads = 0;
  // Transposed copies of each block's in, out, fc and proj weights, made on
  // the first differentiable call when oneDNN is there (training runs the
  // text path every step; scoring once, without them).
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
};

// Activations a backward pass needs, kept by the autograd graph.
struct TextRun {
  std::shared_ptr<const TextWeights> tw;
  int64_t P = 0, K = 0, L = 0, S = 0;
  at::Tensor rows;  // int64 [K]: each prompt's EOT row
  std::vector<at::Tensor> xin, m1, r1, qkv, pp, ps, xmid, m2, r2, a;
  at::Tensor xf, mf, rf;
};

at::Tensor text_linear(const at::Tensor &x, const at::Tensor &W, const at::Tensor &b) {
  at::Tensor y = at::empty({x.size(0), W.size(0)}, x.options());
  linear_tiled(x.data_ptr<float>(), x.size(0), x.size(1), W, b, y.data_ptr<float>(), W.size(0),
               [](int, int64_t, int64_t, int64_t, int64_t) {});
  return y;
}

// The same with Wᵀ [k, n] stored: y = x · Wt + b (a product whose second
// operand is not transposed, which oneDNN's sgemm runs fastest for few rows).
at::Tensor text_linear_t(const at::Tensor &x, const at::Tensor &Wt, const at::Tensor &b) {
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

at::Tensor text_linear_grad(const at::Tensor &dy, const at::Tensor &W) {
  at::Tensor dx = at::empty({dy.size(0), W.size(1)}, dy.options());
  linear_grad_tiled(dy.data_ptr<float>(), dy.size(0), dy.size(1), W, dx.data_ptr<float>(), W.size(1));
  return dx;
}

// Additive masks: causal over the prefix [P, P]; a suffix row sees the whole
// prefix and its own prompt's tokens up to itself [L, P+L].
std::pair<at::Tensor, at::Tensor> text_masks(int64_t P, int64_t L, const at::TensorOptions &o) {
  const double inf = std::numeric_limits<double>::infinity();
  at::Tensor mp = at::full({P, P}, -inf, o).triu(1);
  at::Tensor ms = at::zeros({L, P + L}, o);
  ms.narrow(1, P, L).copy_(at::full({L, L}, -inf, o).triu(1));
  return {mp, ms};
}

at::Tensor text_forward(const std::shared_ptr<const TextWeights> &tw, const at::Tensor &prefix,
                        const at::Tensor &suffix, const std::vector<int64_t> &eot, TextRun *run) {
  const int64_t D = tw->width, H = tw->heads, hd = D / H;
  const int64_t P = prefix.size(1), K = suffix.size(0);
  int64_t last = 0;
  for (int64_t e : eot) last = std::max(last, e);
  const int64_t L = last + 1 - P, R = P + K * L;
  const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
  auto o = prefix.options();
  at::Tensor x = at::empty({R, D}, o);
  x.narrow(0, 0, P).copy_(prefix[0] + tw->pos.narrow(0, 0, P));
  x.narrow(0, P, K * L).view({K, L, D}).copy_(suffix.narrow(1, 0, L) + tw->pos.narrow(0, P, L));
  auto masks = text_masks(P, L, o);
  std::vector<int64_t> rows(K);
  for (int64_t k = 0; k < K; k++) rows[k] = P + k * L + (eot[k] - P);
  at::Tensor rows_t = at::tensor(rows, at::TensorOptions().dtype(at::kLong));
  if (run != nullptr) {
    run->tw = tw;
    run->P = P, run->K = K, run->L = L, run->S = suffix.size(1);
    run->rows = rows_t;
  }
  const auto *wt = run != nullptr ? tw->transposed() : nullptr;
  for (size_t l = 0; l < tw->blocks.size(); l++) {
    const Block &b = tw->blocks[l];
    auto lin = [&](const at::Tensor &in, int j, const at::Tensor &W, const at::Tensor &bias) {
      return wt != nullptr ? text_linear_t(in, (*wt)[l][j], bias) : text_linear(in, W, bias);
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
  at::Tensor xf = x.index_select(0, rows_t);
  auto lnf = at::native_layer_norm(xf, {D}, tw->lnf_w, tw->lnf_b, 1e-5);
  if (run != nullptr) {
    run->xf = xf;
    run->mf = std::get<1>(lnf);
    run->rf = std::get<2>(lnf);
  }
  return at::matmul(std::get<0>(lnf), tw->tproj);
}

at::Tensor ln_grad(const at::Tensor &dy, const at::Tensor &x, const at::Tensor &mean, const at::Tensor &rstd,
                   const at::Tensor &w, const at::Tensor &b) {
  return std::get<0>(at::native_layer_norm_backward(dy, x, {x.size(-1)}, mean, rstd, w, b, {true, false, false}));
}

// Gradients of the features with respect to prefix [1, P, D] and suffix
// [K, S, D] (zero beyond the computed positions).
std::pair<at::Tensor, at::Tensor> text_backward(const TextRun &run, const at::Tensor &dfeat) {
  const TextWeights &tw = *run.tw;
  const int64_t D = tw.width, H = tw.heads, hd = D / H, P = run.P, K = run.K, L = run.L, R = P + K * L;
  const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
  auto o = run.xf.options();
  at::Tensor dy = at::matmul(dfeat.contiguous(), tw.tproj.t());
  at::Tensor dX = at::zeros({R, D}, o);
  dX.index_add_(0, run.rows, ln_grad(dy, run.xf, run.mf, run.rf, tw.lnf_w, tw.lnf_b));
  for (int64_t l = static_cast<int64_t>(tw.blocks.size()) - 1; l >= 0; l--) {
    const Block &b = tw.blocks[l];
    // MLP: x_out = x_mid + proj(QuickGELU(fc(LN2(x_mid)))).
    at::Tensor dg = text_linear_grad(dX, b.proj_w);
    const at::Tensor &a = run.a[l];
    at::Tensor sg = at::sigmoid(a * 1.702);
    at::Tensor da = dg * (sg + a * 1.702 * sg * (1 - sg));
    at::Tensor dxmid = dX + ln_grad(text_linear_grad(da, b.fc_w), run.xmid[l], run.m2[l], run.r2[l], b.ln2_w, b.ln2_b);
    // Attention: x_mid = x_in + out(attention(LN1(x_in))).
    at::Tensor datt = text_linear_grad(dxmid, b.out_w);
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
    at::Tensor dqkv = at::empty({R, 3 * D}, o);
    dqkv.narrow(0, 0, P).view({P, 3, H, hd}).copy_(at::stack({dq, dk, dv}).permute({2, 0, 1, 3}));
    dqkv.narrow(0, P, K * L).view({K, L, 3, H, hd})
        .copy_(at::stack({dqs, dkeys.narrow(2, P, L), dvals.narrow(2, P, L)}).permute({1, 3, 0, 2, 4}));
    dX = dxmid + ln_grad(text_linear_grad(dqkv, b.in_w), run.xin[l], run.m1[l], run.r1[l], b.ln1_w, b.ln1_b);
  }
  at::Tensor dprefix = dX.narrow(0, 0, P).unsqueeze(0).contiguous();
  at::Tensor dsuffix = at::zeros({K, run.S, D}, o);
  dsuffix.narrow(1, 0, L).copy_(dX.narrow(0, P, K * L).view({K, L, D}));
  return {dprefix, dsuffix};
}

// Keeps a C++ object alive for as long as a tensor (saved in an autograd
// context) is.
template <class T>
at::Tensor holder(std::shared_ptr<T> p) {
  void *raw = p.get();
  return at::from_blob(raw, {1}, [p](void *) mutable { p.reset(); }, at::TensorOptions().dtype(at::kByte));
}

struct TextFn : public torch::autograd::Function<TextFn> {
  static at::Tensor forward(torch::autograd::AutogradContext *ctx, const at::Tensor &prefix, const at::Tensor &suffix,
                            std::shared_ptr<const TextWeights> tw, std::vector<int64_t> eot) {
    auto run = std::make_shared<TextRun>();
    at::Tensor out;
    {
      SingleThreadedBlas single;
      out = text_forward(tw, prefix, suffix, eot, run.get());
    }
    ctx->saved_data["run"] = holder(run);
    return out;
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext *ctx,
                                                 torch::autograd::variable_list grads) {
    at::Tensor keep = ctx->saved_data["run"].toTensor();
    const TextRun &run = *static_cast<const TextRun *>(keep.data_ptr());
    std::pair<at::Tensor, at::Tensor> g;
    {
      SingleThreadedBlas single;
      g = text_backward(run, grads[0]);
    }
    return {g.first, g.second, at::Tensor(), at::Tensor()};
  }
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

int64_t ct_vit_weight_count(int64_t layers) { return 8 + 12 * layers; }

ct_error ct_vit_new(const ct_tensor *ws, int64_t n, int64_t layers, int64_t heads, ct_vit *out) {
  FUSED_TRY
  if (layers < 1 || n != ct_vit_weight_count(layers))
    throw std::invalid_argument("fused ViT: " + std::to_string(n) + " weights for " + std::to_string(layers) +
                                " layers, want " + std::to_string(ct_vit_weight_count(layers)));
  auto v = std::make_unique<ViT>();
  v->conv_w = weight(ws, 0, "conv1.weight");
  v->cls = weight(ws, 1, "class_embedding");
  v->pos = weight(ws, 2, "positional_embedding");
  v->ln_pre_w = weight(ws, 3, "ln_pre.weight");
  v->ln_pre_b = weight(ws, 4, "ln_pre.bias");
  v->ln_post_w = weight(ws, 5, "ln_post.weight");
  v->ln_post_b = weight(ws, 6, "ln_post.bias");
  v->proj = weight(ws, 7, "proj");
  if (v->conv_w.dim() != 4 || v->conv_w.size(1) != 3 || v->conv_w.size(2) != v->conv_w.size(3))
    throw std::invalid_argument("fused ViT: conv1.weight has shape " + c10::str(v->conv_w.sizes()));
  const int64_t w = v->conv_w.size(0);
  v->width = w;
  v->heads = heads;
  v->patch = v->conv_w.size(2);
  v->tokens = v->pos.size(0);
  v->grid = static_cast<int64_t>(std::llround(std::sqrt(static_cast<double>(v->tokens - 1))));
  v->res = v->grid * v->patch;
  if (heads < 1 || w % heads != 0) throw std::invalid_argument("fused ViT: width not divisible by heads");
  if (v->grid * v->grid + 1 != v->tokens) throw std::invalid_argument("fused ViT: positions are not a square grid plus one");
  v->conv_w = v->conv_w.reshape({w, -1});
  expect_shape(v->cls, {w}, "class_embedding");
  expect_shape(v->pos, {v->tokens, w}, "positional_embedding");
  for (const at::Tensor *t : {&v->ln_pre_w, &v->ln_pre_b, &v->ln_post_w, &v->ln_post_b}) expect_shape(*t, {w}, "ln_pre/ln_post");
  if (v->proj.dim() != 2 || v->proj.size(0) != w) throw std::invalid_argument("fused ViT: proj has shape " + c10::str(v->proj.sizes()));
  v->blocks = read_blocks(ws, 8, layers, w);
  *out = v.release();
  FUSED_CATCH
}

void ct_vit_free(ct_vit v) { delete static_cast<ViT *>(v); }

void ct_vit_trim(ct_vit v) {
  auto *p = static_cast<ViT *>(v);
  std::lock_guard<std::mutex> lock(p->mu);
  p->buf = Buffers();
}

int64_t ct_vit_buffer_bytes(ct_vit v) {
  auto *p = static_cast<ViT *>(v);
  std::lock_guard<std::mutex> lock(p->mu);
  return p->buf.bytes();
}

ct_error ct_vit_forward(ct_vit v, ct_tensor pixels, ct_tensor *out) {
  FUSED_TRY
  ct_apply_num_threads();
  auto *p = static_cast<ViT *>(v);
  if (pixels == nullptr) throw std::invalid_argument("fused ViT: nil pixels");
  const at::Tensor &px = *static_cast<at::Tensor *>(pixels);
  if (!is_cpu_f32(px)) throw std::invalid_argument("fused ViT: pixels must be a CPU float32 tensor");
  if (px.dim() != 4 || px.size(1) != 3 || px.size(2) != p->res || px.size(3) != p->res || px.size(0) < 1)
    throw std::invalid_argument("fused ViT: pixels have shape " + c10::str(px.sizes()) + ", want [N 3 " +
                                std::to_string(p->res) + " " + std::to_string(p->res) + "]");
  at::NoGradGuard no_grad;
  at::Tensor x = px.detach().contiguous();
  *out = new at::Tensor(p->forward(x));
  FUSED_CATCH
}

int64_t ct_text_weight_count(int64_t layers) { return 4 + 12 * layers; }

namespace {
struct TextHandle {
  std::shared_ptr<const TextWeights> tw;
  int64_t context = 0;
};
}  // namespace

ct_error ct_text_new(const ct_tensor *ws, int64_t n, int64_t layers, int64_t heads, ct_text *out) {
  FUSED_TRY
  if (layers < 1 || n != ct_text_weight_count(layers))
    throw std::invalid_argument("fused text: " + std::to_string(n) + " weights for " + std::to_string(layers) +
                                " layers, want " + std::to_string(ct_text_weight_count(layers)));
  auto tw = std::make_shared<TextWeights>();
  tw->pos = weight(ws, 0, "positional_embedding");
  tw->lnf_w = weight(ws, 1, "ln_final.weight");
  tw->lnf_b = weight(ws, 2, "ln_final.bias");
  tw->tproj = weight(ws, 3, "text_projection");
  if (tw->pos.dim() != 2) throw std::invalid_argument("fused text: positional_embedding has shape " + c10::str(tw->pos.sizes()));
  const int64_t w = tw->pos.size(1);
  tw->width = w;
  tw->heads = heads;
  if (heads < 1 || w % heads != 0) throw std::invalid_argument("fused text: width not divisible by heads");
  expect_shape(tw->lnf_w, {w}, "ln_final.weight");
  expect_shape(tw->lnf_b, {w}, "ln_final.bias");
  if (tw->tproj.dim() != 2 || tw->tproj.size(0) != w)
    throw std::invalid_argument("fused text: text_projection has shape " + c10::str(tw->tproj.sizes()));
  tw->blocks = read_blocks(ws, 4, layers, w);
  auto *h = new TextHandle();
  h->context = tw->pos.size(0);
  h->tw = std::move(tw);
  *out = h;
  FUSED_CATCH
}

void ct_text_free(ct_text t) { delete static_cast<TextHandle *>(t); }

ct_error ct_text_forward(ct_text t, int32_t grad, ct_tensor prefix, ct_tensor suffix, const int64_t *eot, int64_t k,
                         ct_tensor *out) {
  FUSED_TRY
  ct_apply_num_threads();
  auto *h = static_cast<TextHandle *>(t);
  if (prefix == nullptr || suffix == nullptr) throw std::invalid_argument("fused text: nil input");
  const at::Tensor &pre = *static_cast<at::Tensor *>(prefix);
  const at::Tensor &suf = *static_cast<at::Tensor *>(suffix);
  const int64_t D = h->tw->width;
  if (!is_cpu_f32(pre) || !is_cpu_f32(suf)) throw std::invalid_argument("fused text: inputs must be CPU float32 tensors");
  if (pre.dim() != 3 || pre.size(0) != 1 || pre.size(2) != D || suf.dim() != 3 || suf.size(2) != D || suf.size(0) != k ||
      pre.size(1) < 1 || suf.size(1) < 1)
    throw std::invalid_argument("fused text: prefix " + c10::str(pre.sizes()) + " and suffix " + c10::str(suf.sizes()) +
                                ", want [1 P " + std::to_string(D) + "] and [" + std::to_string(k) + " S " +
                                std::to_string(D) + "]");
  const int64_t P = pre.size(1), S = suf.size(1);
  std::vector<int64_t> e(eot, eot + k);
  for (int64_t x : e)
    if (x < P || x >= P + S) throw std::invalid_argument("fused text: EOT " + std::to_string(x) + " outside the suffix");
  const int64_t last = *std::max_element(e.begin(), e.end());
  if (last + 1 > h->context) throw std::invalid_argument("fused text: positions exceed the context length");
  if (grad == CT_GRAD_ENABLED && (pre.requires_grad() || suf.requires_grad())) {
    at::AutoGradMode on(true);
    *out = new at::Tensor(TextFn::apply(pre, suf, h->tw, e));
  } else {
    std::optional<c10::InferenceMode> inference;
    std::optional<at::NoGradGuard> no_grad;
    if (grad == CT_INFERENCE) {
      inference.emplace(true);
    } else {
      no_grad.emplace();
    }
    SingleThreadedBlas single;
    *out = new at::Tensor(text_forward(h->tw, pre, suf, e, nullptr));
  }
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
