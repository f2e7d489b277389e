// c10d bindings: process group init, collectives with timeouts, and a
// store-based heartbeat that lets a failed collective name the lost rank.
#include "dist.h"

#include <torch/torch.h>
#include <torch/version.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

// Gloo is compiled in where CMake found its headers (libgloo-dev); libtorch
// itself carries the implementation.
#if defined(CT_WITH_GLOO)
#define USE_C10D_GLOO 1
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif

// NCCL is compiled in only where CMake found a CUDA libtorch and nccl.h.
#if defined(CT_WITH_NCCL)
#define USE_C10D_NCCL 1
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace {

// libtorch 2.x implements backends as c10d::Backend, 1.13 as ProcessGroup.
#if TORCH_VERSION_MAJOR >= 2
using BackendBase = c10d::Backend;
#else
using BackendBase = c10d::ProcessGroup;
#endif

char *dup_msg(const std::string &s) {
  char *p = static_cast<char *>(std::malloc(s.size() + 1));
  if (p) std::memcpy(p, s.c_str(), s.size() + 1);
  return p;
}

at::Tensor &T(ct_tensor h) { return *static_cast<at::Tensor *>(h); }

// libtorch 2.4+ defaults stores to the libuv backend, and one built without
// libuv (Debian's) then refuses every store; the classic backend serves our
// few ranks. Whether the option exists is CMake's feature test.
#if !defined(CT_TCPSTORE_HAS_USE_LIBUV)
#error "CT_TCPSTORE_HAS_USE_LIBUV is set by cmake/torch_features.cmake; build through CMake"
#endif
c10d::TCPStoreOptions store_options() {
  c10d::TCPStoreOptions o;
#if CT_TCPSTORE_HAS_USE_LIBUV
  o.useLibUV = false;
#endif
  return o;
}


struct Group {
  int rank = 0;
  int world = 1;
  std::string addr;
  int port = 0;
  std::chrono::milliseconds timeout{0};
  std::chrono::milliseconds heartbeat{0};
  std::string hb_prefix = "clipagiqa/heartbeat/";
  c10::intrusive_ptr<c10d::TCPStore> store;
  c10::intrusive_ptr<BackendBase> pg;

  // The heartbeat runs on its own store connection: TCPStore clients are not
  // meant to be shared between threads.
  c10::intrusive_ptr<c10d::TCPStore> hb_store;
  std::mutex hb_mu;  // guards hb_store
  std::thread hb_thread;
  std::mutex stop_mu;
  std::condition_variable stop_cv;
  bool stop = false;

  void start_heartbeat() {
    c10d::TCPStoreOptions o = store_options();
    o.port = static_cast<uint16_t>(port);
    o.isServer = false;
    o.waitWorkers = false;
    o.timeout = std::chrono::milliseconds(std::max<int64_t>(heartbeat.count() * 4, 1000));
    hb_store = c10::make_intrusive<c10d::TCPStore>(addr, o);
    hb_thread = std::thread([this] {
      const std::string key = hb_prefix + std::to_string(rank);
      std::unique_lock<std::mutex> lk(stop_mu);
      while (!stop) {
        lk.unlock();
        try {
          std::lock_guard<std::mutex> g(hb_mu);
          hb_store->add(key, 1);
        } catch (...) {
          // The store host is gone; the probe reports it.
        }
        lk.lock();
        stop_cv.wait_for(lk, heartbeat, [this] { return stop; });
      }
    });
  }

  void stop_heartbeat() {
    {
      std::lock_guard<std::mutex> lk(stop_mu);
      stop = true;
    }
    stop_cv.notify_all();
    if (hb_thread.joinable()) hb_thread.join();
  }

  // Reads every rank's heartbeat counter twice, about three beats apart.
  void probe(uint64_t *lost, bool *store_lost) {
    *lost = 0;
    *store_lost = false;
    if (!hb_store) return;
    auto read_all = [&](std::vector<int64_t> &v) {
      std::lock_guard<std::mutex> g(hb_mu);
      v.resize(world);
      for (int r = 0; r < world; r++) v[r] = hb_store->add(hb_prefix + std::to_string(r), 0);
    };
    std::vector<int64_t> a, b;
    try {
      read_all(a);
      std::this_thread::sleep_for(heartbeat * 3);
      read_all(b);
    } catch (...) {
      *store_lost = true;
      return;
    }
    for (int r = 0; r < world && r < 64; r++)
      if (r != rank && b[r] == a[r]) *lost |= uint64_t(1) << r;
  }

  std::string describe_failure(const char *what, const std::string &cause) {
    std::ostringstream m;
    m << "dist: " << what << " failed on rank " << rank << " of " << world;
    uint64_t lost = 0;
    bool store_lost = false;
    try {
      probe(&lost, &store_lost);
    } catch (...) {
    }
    if (store_lost) {
      m << ": lost rank 0 (the store host at " << addr << ":" << port << " is unreachable)";
    } else if (lost) {
      m << ": lost rank";
      bool first = true;
      for (int r = 0; r < 64; r++)
        if (lost >> r & 1) {
          m << (first ? " " : ", ") << r;
          first = false;
        }
      m << " (heartbeat stopped)";
    }
    m << ": " << cause;
    return m.str();
  }

  // Waits for a collective; any error becomes a message naming lost peers.
  void run(const char *what, const std::function<c10::intrusive_ptr<c10d::Work>()> &start) {
    std::string cause;
    try {
      auto work = start();
      if (!work->wait(timeout)) cause = "timed out";
      else return;
    } catch (const c10::Error &e) {
      cause = e.what_without_backtrace();
    } catch (const std::exception &e) {
      cause = e.what();
    }
    throw std::runtime_error(describe_failure(what, cause));
  }
};

Group *G(ct_dist_group g) {
  if (!g) throw std::invalid_argument("dist: process group is closed");
  return static_cast<Group *>(g);
}

bool is_loopback(const std::string &a) {
  return a == "localhost" || a.rfind("127.", 0) == 0 || a == "::1";
}

#if defined(CT_WITH_GLOO)
std::shared_ptr<gloo::transport::Device> gloo_device(const std::string &master_addr) {
  if (const char *ifname = std::getenv("GLOO_SOCKET_IFNAME"); ifname && *ifname)
    return c10d::ProcessGroupGloo::createDeviceForInterface(ifname);
  if (is_loopback(master_addr)) return c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1");
  return c10d::ProcessGroupGloo::createDefaultDevice();
}
#endif

std::vector<at::Tensor> tensors(const ct_tensor *ts, int64_t n) {
  std::vector<at::Tensor> v;
  v.reserve(n);
  for (int64_t i = 0; i < n; i++) {
    if (!ts[i]) throw std::invalid_argument("dist: nil tensor");
    v.push_back(T(ts[i]));
  }
  return v;
}

// written marks t modified in place, as PyTorch's in-place ops do: the
// process group writes through the data pointer, which leaves the version
// counter (what autograd's checks and memoised derivations, like the fused
// ResNet's folds, watch) alone. Inference tensors have no counter.
void written(at::Tensor &t) {
  if (t.defined() && !t.is_inference()) t.unsafeGetTensorImpl()->bump_version();
}

}  // namespace

#define CT_DIST_TRY try {
#define CT_DIST_CATCH                               \
  }                                                 \
  catch (const c10::Error &e) {                     \
    return dup_msg(e.what_without_backtrace());     \
  }                                                 \
  catch (const std::exception &e) {                 \
    return dup_msg(e.what());                       \
  }                                                 \
  catch (...) {                                     \
    return dup_msg("dist: unknown C++ exception");  \
  }                                                 \
  return nullptr;

extern "C" {

int32_t ct_dist_has_gloo(void) {
#if defined(CT_WITH_GLOO)
  return 1;
#else
  return 0;
#endif
}

int32_t ct_dist_has_nccl(void) {
#if defined(CT_WITH_NCCL)
  return 1;
#else
  return 0;
#endif
}

ct_error ct_dist_init(const char *master_addr, int32_t master_port, int32_t rank,
                      int32_t world_size, int32_t backend, int64_t timeout_ms,
                      int64_t heartbeat_ms, int32_t agent_store, const char *store_prefix,
                      ct_dist_group *out) {
  CT_DIST_TRY
  *out = nullptr;
  if (world_size < 1) throw std::invalid_argument("dist: WORLD_SIZE must be at least 1");
  if (rank < 0 || rank >= world_size)
    throw std::invalid_argument("dist: RANK " + std::to_string(rank) + " is outside [0, WORLD_SIZE=" +
                                std::to_string(world_size) + ")");
  if (master_port < 1 || master_port > 65535)
    throw std::invalid_argument("dist: MASTER_PORT " + std::to_string(master_port) + " is not a TCP port");
  if (timeout_ms <= 0) throw std::invalid_argument("dist: timeout must be positive");
  auto g = std::make_unique<Group>();
  g->rank = rank;
  g->world = world_size;
  g->addr = master_addr ? master_addr : "";
  if (g->addr.empty()) throw std::invalid_argument("dist: MASTER_ADDR is empty");
  g->port = master_port;
  g->timeout = std::chrono::milliseconds(timeout_ms);
  g->heartbeat = std::chrono::milliseconds(heartbeat_ms);
  const std::string prefix = store_prefix ? store_prefix : "";
  g->hb_prefix = prefix + "/clipagiqa/heartbeat/";

  c10d::TCPStoreOptions so = store_options();
  so.port = static_cast<uint16_t>(master_port);
  so.isServer = rank == 0 && !agent_store;
  so.numWorkers = world_size;
  so.waitWorkers = true;
  so.timeout = g->timeout;
  const std::string where = g->addr + ":" + std::to_string(master_port);
  try {
    g->store = c10::make_intrusive<c10d::TCPStore>(g->addr, so);
  } catch (const std::exception &e) {
    std::string msg = so.isServer ? "dist: rank 0 could not host the store on port " +
                                      std::to_string(master_port) + " (MASTER_PORT; in use?)"
                                : "dist: rank " + std::to_string(rank) + " could not reach the store at " +
                                      where + " (MASTER_ADDR:MASTER_PORT) within " +
                                      std::to_string(timeout_ms) + " ms";
    const char *cause = e.what();
    if (auto *ce = dynamic_cast<const c10::Error *>(&e)) cause = ce->what_without_backtrace();
    throw std::runtime_error(msg + ": " + cause);
  }
  c10::intrusive_ptr<c10d::Store> base = g->store;
  if (!prefix.empty()) base = c10::make_intrusive<c10d::PrefixStore>(prefix, base);
  auto prefixed = c10::make_intrusive<c10d::PrefixStore>("default_pg", base);
  try {
    if (backend == CT_DIST_GLOO) {
#if defined(CT_WITH_GLOO)
      auto opts = c10d::ProcessGroupGloo::Options::create(g->timeout);
      opts->devices.push_back(gloo_device(g->addr));
      opts->threads = 2;
      g->pg = c10::make_intrusive<c10d::ProcessGroupGloo>(prefixed, rank, world_size, opts);
#else
      throw std::invalid_argument("dist: this build has no Gloo backend (rebuild with libgloo-dev installed)");
#endif
    } else if (backend == CT_DIST_NCCL) {
#if defined(CT_WITH_NCCL)
      auto opts = c10d::ProcessGroupNCCL::Options::create();
      opts->timeout = g->timeout;
      g->pg = c10::make_intrusive<c10d::ProcessGroupNCCL>(prefixed, rank, world_size, opts);
#else
      throw std::invalid_argument("dist: this build has no NCCL backend (CPU libtorch); use gloo");
#endif
    } else {
      throw std::invalid_argument("dist: unknown backend " + std::to_string(backend));
    }
  } catch (const std::exception &e) {
    const char *cause = e.what();
    if (auto *ce = dynamic_cast<const c10::Error *>(&e)) cause = ce->what_without_backtrace();
    throw std::runtime_error("dist: rank " + std::to_string(rank) + " could not connect to all " +
                             std::to_string(world_size) + " ranks through " + where + ": " + cause);
  }
  if (heartbeat_ms > 0) g->start_heartbeat();
  *out = g.release();
  CT_DIST_CATCH
}

void ct_dist_free(ct_dist_group gp) {
  if (!gp) return;
  auto *g = static_cast<Group *>(gp);
  try {
    g->stop_heartbeat();
  } catch (...) {
  }
  try {
    delete g;
  } catch (...) {
  }
}

ct_error ct_dist_all_reduce(ct_dist_group gp, const ct_tensor *ts, int64_t n, int32_t op) {
  CT_DIST_TRY
  Group *g = G(gp);
  auto v = tensors(ts, n);
  if (v.empty()) return nullptr;
  c10d::AllreduceOptions o;
  o.timeout = g->timeout;
  switch (op) {
    case CT_DIST_SUM:
    case CT_DIST_AVG: o.reduceOp = c10d::ReduceOp::SUM; break;
    case CT_DIST_MAX: o.reduceOp = c10d::ReduceOp::MAX; break;
    case CT_DIST_MIN: o.reduceOp = c10d::ReduceOp::MIN; break;
    default: throw std::invalid_argument("dist: unknown reduce op " + std::to_string(op));
  }
  // Gloo reduces one tensor per call (a list means one tensor per local device).
  for (auto &t : v) {
    std::vector<at::Tensor> one{t};
    g->run("all_reduce", [&] { return g->pg->allreduce(one, o); });
    written(t);
    if (op == CT_DIST_AVG) {
      at::NoGradGuard ng;
      if (at::isIntegralType(t.scalar_type(), true)) t.div_(g->world, "floor");
      else t.div_(g->world);
    }
  }
  CT_DIST_CATCH
}

ct_error ct_dist_broadcast(ct_dist_group gp, const ct_tensor *ts, int64_t n, int32_t root) {
  CT_DIST_TRY
  Group *g = G(gp);
  if (root < 0 || root >= g->world) throw std::invalid_argument("dist: broadcast root out of range");
  auto v = tensors(ts, n);
  c10d::BroadcastOptions o;
  o.rootRank = root;
  o.timeout = g->timeout;
  for (auto &t : v) {
    std::vector<at::Tensor> one{t};
    g->run("broadcast", [&] { return g->pg->broadcast(one, o); });
    written(t);
  }
  CT_DIST_CATCH
}

ct_error ct_dist_all_gather(ct_dist_group gp, ct_tensor input, ct_tensor output) {
  CT_DIST_TRY
  Group *g = G(gp);
  if (!input || !output) throw std::invalid_argument("dist: nil tensor");
  at::Tensor &in = T(input);
  at::Tensor &outT = T(output);
  if (in.dim() == 0) throw std::invalid_argument("dist: all_gather needs at least one dimension");
  auto want = in.sizes().vec();
  want[0] *= g->world;
  if (outT.sizes().vec() != want)
    throw std::invalid_argument("dist: all_gather output must have shape " + c10::str(c10::IntArrayRef(want)) +
                                ", got " + c10::str(outT.sizes()));
  if (!outT.is_contiguous()) throw std::invalid_argument("dist: all_gather output must be contiguous");
  std::vector<std::vector<at::Tensor>> outs(1);
  for (auto &c : outT.chunk(g->world, 0)) outs[0].push_back(c);
  std::vector<at::Tensor> ins{in.contiguous()};
  c10d::AllgatherOptions o;
  o.timeout = g->timeout;
  g->run("all_gather", [&] { return g->pg->allgather(outs, ins, o); });
  written(outT);
  CT_DIST_CATCH
}

ct_error ct_dist_barrier(ct_dist_group gp) {
  CT_DIST_TRY
  Group *g = G(gp);
  c10d::BarrierOptions o;
  o.timeout = g->timeout;
  g->run("barrier", [&] { return g->pg->barrier(o); });
  CT_DIST_CATCH
}

ct_error ct_dist_probe_peers(ct_dist_group gp, uint64_t *lost, int32_t *store_lost) {
  CT_DIST_TRY
  bool sl = false;
  G(gp)->probe(lost, &sl);
  *store_lost = sl ? 1 : 0;
  CT_DIST_CATCH
}

}  // extern "C"
