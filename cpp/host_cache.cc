// Caching host allocator: see host_cache.h for why and what.
#include "host_cache.h"
#include "op_guard.h"

#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <c10/util/Exception.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <iterator>
#include <list>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <unordered_map>

#if !defined(CT_ALLOCATOR_ALLOCATE_CONST) || !defined(CT_ALLOCATOR_HAS_COPY_DATA)
#error "CT_ALLOCATOR_ALLOCATE_CONST and CT_ALLOCATOR_HAS_COPY_DATA come from cmake/torch_features.cmake"
#endif

#if CT_ALLOCATOR_ALLOCATE_CONST
#define CT_ALLOCATE_CONST const
#else
#define CT_ALLOCATE_CONST
#endif

namespace {

constexpr size_t kHugePage = size_t{2} << 20;  // x86-64 transparent huge page

struct Block {
  void *ptr;
  size_t size;  // mapped bytes: the request rounded up to whole pages
};

class HostCache final : public c10::Allocator {
 public:
  // libtorch 1.13 declares allocate const; the one instance is mutable state.
  c10::DataPtr allocate(size_t n) CT_ALLOCATE_CONST override { return instance().serve(n); }

  // Context = data and a plain deleter, as raw_allocate (oneDNN) needs.
  c10::DeleterFnPtr raw_deleter() const override { return &HostCache::release; }

#if CT_ALLOCATOR_HAS_COPY_DATA
  void copy_data(void *dest, const void *src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }
#endif

  static HostCache &instance() {
    static HostCache *cache = new HostCache();  // immortal: deleters may run at exit
    return *cache;
  }

  void enable(size_t min_bytes, size_t limit_bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    if (!installed_) {
      c10::Allocator *current = c10::GetCPUAllocator();
      if (current != this) fallback_.store(current, std::memory_order_release);
      c10::SetCPUAllocator(this, kPriority);
      if (c10::GetCPUAllocator() != this)
        throw std::runtime_error("host cache: libtorch kept another CPU allocator of higher priority");
      installed_ = true;
      peak_ = in_use_;
    }
    min_bytes_.store(min_bytes, std::memory_order_relaxed);
    limit_ = limit_bytes;
    trim(limit_);
  }

  void disable() {
    std::lock_guard<std::mutex> lock(mu_);
    if (!installed_) return;
    c10::SetCPUAllocator(fallback_.load(), kPriority);
    installed_ = false;
    limit_ = 0;
    trim(0);
  }

  void empty() {
    std::lock_guard<std::mutex> lock(mu_);
    trim(0);
    peak_ = in_use_;
  }

  void stats(int64_t *out) {
    std::lock_guard<std::mutex> lock(mu_);
    out[CT_HOST_CACHE_ENABLED] = installed_ ? 1 : 0;
    out[CT_HOST_CACHE_IN_USE_BYTES] = static_cast<int64_t>(in_use_);
    out[CT_HOST_CACHE_IDLE_BYTES] = static_cast<int64_t>(idle_);
    out[CT_HOST_CACHE_PEAK_BYTES] = static_cast<int64_t>(peak_);
    out[CT_HOST_CACHE_HITS] = hits_;
    out[CT_HOST_CACHE_MISSES] = misses_;
    out[CT_HOST_CACHE_EVICTIONS] = evictions_;
  }

 private:
  // Above the default allocator's 0, so that ours wins while installed and
  // the fallback can be put back at the same priority.
  static constexpr uint8_t kPriority = 1;

  HostCache() : fallback_(c10::GetCPUAllocator()), page_(static_cast<size_t>(sysconf(_SC_PAGESIZE))) {}

  // Small blocks, most of libtorch's allocations, take no lock.
  c10::DataPtr serve(size_t n) {
    if (n < min_bytes_.load(std::memory_order_relaxed))
      return fallback_.load(std::memory_order_acquire)->allocate(n);
    std::lock_guard<std::mutex> lock(mu_);
    void *p = take((std::max<size_t>(n, 1) + page_ - 1) / page_ * page_);
    return {p, p, &HostCache::release, c10::Device(c10::DeviceType::CPU)};
  }

  // An idle block of exactly size, or a new mapping. Called with mu_ held.
  // Idle blocks only fill the gap between the bytes in use and their peak:
  // in use + idle never exceeds the most ever in use at once (since enable
  // or empty), so the cache adds nothing to the process's peak memory.
  void *take(size_t size) {
    Block *b = nullptr;
    // The most recently freed block of the size: its pages are the likeliest
    // to be in the CPU caches still.
    auto range = idle_by_size_.equal_range(size);
    if (range.first != range.second) {
      auto it = std::prev(range.second);
      auto pos = it->second;
      b = *pos;
      lru_.erase(pos);
      idle_by_size_.erase(it);
      idle_ -= size;
      hits_++;
    } else {
      size_t need = in_use_ + size;
      trim(peak_ > need ? peak_ - need : 0);
      void *p = map(size);
      if (p == nullptr) {
        trim(0);
        p = map(size);
      }
      if (p == nullptr) {
        throw c10::Error({__func__, __FILE__, static_cast<uint32_t>(__LINE__)},
                         "host cache: out of memory mapping " + std::to_string(size) + " bytes");
      }
      b = new Block{p, size};
      misses_++;
    }
    try {
      in_use_by_ptr_.emplace(b->ptr, b);
    } catch (...) {
      unmap(b);  // not handed out: nothing else knows it
      throw;
    }
    in_use_ += size;
    if (in_use_ > peak_) peak_ = in_use_;
    return b->ptr;
  }

  // Maps size bytes starting on a huge-page boundary, so that the kernel can
  // back the block's whole 2 MiB pieces with huge pages (the tail gets small
  // pages: nothing beyond the request is touched).
  static void *map(size_t size) {
    size_t span = size + kHugePage;
    void *raw = mmap(nullptr, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED) return nullptr;
    uintptr_t start = reinterpret_cast<uintptr_t>(raw);
    uintptr_t aligned = (start + kHugePage - 1) / kHugePage * kHugePage;
    if (aligned > start) munmap(raw, aligned - start);
    uintptr_t end = start + span, used = aligned + size;
    if (end > used) munmap(reinterpret_cast<void *>(used), end - used);
    void *p = reinterpret_cast<void *>(aligned);
#ifdef MADV_HUGEPAGE
    if (size >= kHugePage) madvise(p, size, MADV_HUGEPAGE);  // advisory: works without THP too
#endif
    return p;
  }

  // The deleter of every block this allocator hands out, and its raw
  // deleter: small blocks came from the fallback and go back to it.
  static void release(void *p) { instance().give_back(p); }

  void give_back(void *p) noexcept {
    c10::DeleterFnPtr fallback_delete;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = in_use_by_ptr_.find(p);
      if (it != in_use_by_ptr_.end()) {
        Block *b = it->second;
        in_use_by_ptr_.erase(it);
        in_use_ -= b->size;
        keep_or_unmap(b);
        return;
      }
    }
    fallback_delete = fallback_.load(std::memory_order_acquire)->raw_deleter();
    if (fallback_delete != nullptr) fallback_delete(p);
  }

  // Called with mu_ held, from a deleter: nothing may throw, so a block
  // the bookkeeping cannot take (out of memory) is unmapped instead.
  void keep_or_unmap(Block *b) noexcept {
    if (!installed_ || b->size > limit_) {
      unmap(b);
      return;
    }
    trim(limit_ - b->size);
    try {
      lru_.push_back(b);
    } catch (...) {
      unmap(b);
      return;
    }
    try {
      idle_by_size_.emplace(b->size, std::prev(lru_.end()));
    } catch (...) {
      lru_.pop_back();
      unmap(b);
      return;
    }
    idle_ += b->size;
  }

  // Unmaps the least recently idle blocks until at most keep bytes are idle.
  void trim(size_t keep) noexcept {
    while (idle_ > keep && !lru_.empty()) {
      Block *b = lru_.front();
      auto range = idle_by_size_.equal_range(b->size);
      for (auto it = range.first; it != range.second; ++it) {
        if (it->second == lru_.begin()) {
          idle_by_size_.erase(it);
          break;
        }
      }
      lru_.pop_front();
      idle_ -= b->size;
      evictions_++;
      unmap(b);
    }
  }

  static void unmap(Block *b) noexcept {
    munmap(b->ptr, b->size);
    delete b;
  }

  std::mutex mu_;
  std::atomic<c10::Allocator *> fallback_;
  const size_t page_;
  bool installed_ = false;
  std::atomic<size_t> min_bytes_{SIZE_MAX};
  size_t limit_ = 0;
  size_t in_use_ = 0, idle_ = 0, peak_ = 0;  // peak_: most bytes in use at once
  int64_t hits_ = 0, misses_ = 0, evictions_ = 0;
  std::unordered_map<void *, Block *> in_use_by_ptr_;  // the raw deleter gets only the pointer
  std::list<Block *> lru_;                              // idle blocks, least recently idle first
  // Idle blocks by size; equal sizes in the order they became idle.
  std::multimap<size_t, std::list<Block *>::iterator> idle_by_size_;
};

}  // namespace

extern "C" {

ct_error ct_host_cache_enable(int64_t min_bytes, int64_t limit_bytes) {
  CT_OP_TRY
  if (min_bytes < 1) throw std::invalid_argument("host cache: min_bytes must be at least 1");
  if (limit_bytes < 0) throw std::invalid_argument("host cache: limit_bytes must not be negative");
  HostCache::instance().enable(static_cast<size_t>(min_bytes), static_cast<size_t>(limit_bytes));
  CT_OP_CATCH
}

ct_error ct_host_cache_disable(void) {
  CT_OP_TRY
  HostCache::instance().disable();
  CT_OP_CATCH
}

ct_error ct_host_cache_empty(void) {
  CT_OP_TRY
  HostCache::instance().empty();
  CT_OP_CATCH
}

ct_error ct_host_cache_stats(int64_t *out, int64_t n) {
  CT_OP_TRY
  if (out == nullptr || n < CT_HOST_CACHE_NSTATS)
    throw std::invalid_argument("host cache stats: need room for " + std::to_string(CT_HOST_CACHE_NSTATS) + " counters");
  HostCache::instance().stats(out);
  CT_OP_CATCH
}

}  // extern "C"
