// Fused CPU inference of CLIP's Vision Transformer: see fused.h.
//
// Why it is faster than running the same ops one by one (as the Go plain
// path and PyTorch eager do):
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
#include "fused.h"

#include <dlfcn.h>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
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

at::Tensor view2d(const float *p, int64_t rows, int64_t cols, int64_t ld) {
  return at::from_blob(const_cast<float *>(p), {rows, cols}, {ld, 1}, at::TensorOptions().dtype(at::kFloat));
}

// Row-major C[m,n] = op(A)[m,k] · op(B)[k,n] + beta·C; op(B) = Bᵀ when transB
// (B stored [n,k], as weights are). beta is 0 or 1.
void gemm(bool transA, bool transB, int64_t m, int64_t n, int64_t k, const float *A, int64_t lda,
          const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
  if (m <= 0 || n <= 0) return;
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

// Runs f(i, thread) for i in [0, n) on libtorch's intra-op threads. Tasks are
// handed out one at a time, so a thread the OS preempts delays only the task
// it holds, not a fixed share of the work.
template <class F>
void run_tasks(int64_t n, const F &f) {
  if (n <= 0) return;
  std::atomic<int64_t> next{0};
  const int64_t T = std::min<int64_t>(at::get_num_threads(), n);
  at::parallel_for(0, T, 1, [&](int64_t, int64_t) {
    const int tid = at::get_thread_num();
    for (int64_t i; (i = next.fetch_add(1)) < n;) f(i, tid);
  });
}

// Tiles of a product with m rows and n output columns: row chunks of about
// 1024 rows (activations stay in cache across a chunk's column tiles) and
// columns in multiples of 16, about four tiles per thread.
struct Tiling {
  int64_t rows, cols, rchunk, cwidth, nr, nc;
  Tiling(int64_t m, int64_t n, int64_t threads) : rows(m), cols(n) {
    nr = std::max<int64_t>(1, (m + 1023) / 1024);
    rchunk = (m + nr - 1) / nr;
    nc = std::max<int64_t>(1, (4 * threads + nr - 1) / nr);
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

  // C[m, n] = bias + A[m, k] · Wᵀ in tiles; post(thread, r0, r1, c0, c1)
  // runs on each tile right after its product.
  template <class Post>
  void linear(const float *A, int64_t m, int64_t k, const at::Tensor &W, const at::Tensor &bias, float *C,
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
    static bool prof = std::getenv("FUSED_PROF") != nullptr;
    double acc[8] = {0};
    auto now = [] { return std::chrono::steady_clock::now(); };
    auto tick = [&](int i, decltype(now()) &t0) { auto t1 = now(); acc[i] += std::chrono::duration<double>(t1 - t0).count(); t0 = t1; };
    for (const Block &b : blocks) {
      auto t0 = now();
      norm(x, h, m, b.ln1_w, b.ln1_b); tick(0, t0);
      linear(h, m, w, b.in_w, b.in_b, f, 3 * w, none);  tick(1, t0);
      attention(n); tick(2, t0);
      linear(o, m, w, b.out_w, b.out_b, h, w, [&](int, int64_t r0, int64_t r1, int64_t c0, int64_t c1) { add_tile(x, h, w, r0, r1, c0, c1); }); tick(3, t0);
      norm(x, h, m, b.ln2_w, b.ln2_b); tick(4, t0);
      linear(h, m, w, b.fc_w, b.fc_b, f, 4 * w,
             [&](int t, int64_t r0, int64_t r1, int64_t c0, int64_t c1) { quick_gelu_tile(f, 4 * w, r0, r1, c0, c1, buf.gelu[t]); }); tick(5, t0);
      linear(f, m, 4 * w, b.proj_w, b.proj_b, o, w, [&](int, int64_t r0, int64_t r1, int64_t c0, int64_t c1) { add_tile(x, o, w, r0, r1, c0, c1); }); tick(6, t0);
    }
    if (prof) fprintf(stderr, "ln1 %.3f qkv %.3f att %.3f out %.3f ln2 %.3f fc %.3f proj %.3f\n", acc[0], acc[1], acc[2], acc[3], acc[4], acc[5], acc[6]);
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
  static const char *names[12] = {"in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias",
                                  "ln_1.weight",    "ln_1.bias",    "c_fc.weight",     "c_fc.bias",
                                  "c_proj.weight",  "c_proj.bias",  "ln_2.weight",     "ln_2.bias"};
  const std::vector<std::vector<int64_t>> shapes = {{3 * w, w}, {3 * w}, {w, w},     {w}, {w}, {w},
                                                    {4 * w, w}, {4 * w}, {w, 4 * w}, {w}, {w}, {w}};
  for (int64_t l = 0; l < layers; l++) {
    at::Tensor t[12];
    for (int j = 0; j < 12; j++) {
      t[j] = weight(ws, 8 + 12 * l + j, names[j]);
      expect_shape(t[j], shapes[j], names[j]);
    }
    v->blocks.push_back(Block{t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7], t[8], t[9], t[10], t[11]});
  }
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

int32_t ct_fused_direct_blas(void) { return blas().sgemm != nullptr ? 1 : 0; }

int32_t ct_blas_get_threads(void) { return blas().get_threads != nullptr ? blas().get_threads() : -1; }

int32_t ct_blas_set_threads(int32_t n) {
  if (blas().set_threads == nullptr || n < 1) return 0;
  blas().set_threads(n);
  return 1;
}

}  // extern "C"
