# Feature tests for the libtorch API the shim uses differently across versions.
# Each compiles a tiny source against the found libtorch headers (no link), so the
# choice follows what the headers offer, not a version number.
include(CheckCXXSourceCompiles)

set(CMAKE_REQUIRED_INCLUDES ${TORCH_INCLUDE_DIRS})
set(CMAKE_REQUIRED_FLAGS "${TORCH_CXX_FLAGS}")
set(CMAKE_REQUIRED_QUIET ON)
set(_ct_saved_try_type "${CMAKE_TRY_COMPILE_TARGET_TYPE}")
set(CMAKE_TRY_COMPILE_TARGET_TYPE STATIC_LIBRARY)

# Fused scaled-dot-product attention (at::scaled_dot_product_attention).
check_cxx_source_compiles([[
#include <ATen/ATen.h>
at::Tensor f(const at::Tensor &q) { return at::scaled_dot_product_attention(q, q, q); }
]] CT_HAS_SDPA)

# Per-device autocast API: at::autocast::set_autocast_enabled(device_type, bool).
check_cxx_source_compiles([[
#include <ATen/autocast_mode.h>
void f() {
  at::autocast::set_autocast_enabled(at::kCUDA, at::autocast::is_autocast_enabled(at::kCUDA));
  at::autocast::set_autocast_dtype(at::kCUDA, at::autocast::get_autocast_dtype(at::kCUDA));
}
]] CT_AUTOCAST_PER_DEVICE)

# TCPStoreOptions::useLibUV (libtorch 2.2+; 2.4+ defaults it to true, and a
# libtorch built without libuv, Debian's, then refuses every store).
check_cxx_source_compiles([[
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
void f() { c10d::TCPStoreOptions o; o.useLibUV = false; }
]] CT_TCPSTORE_HAS_USE_LIBUV)

# The TorchScript TensorExpr (NNC) fuser's switch. Where libtorch is built with
# LLVM (Debian's 2.6 is; 1.13 and PyTorch's wheels are not) the profiling
# executor fuses CPU graphs on a method's second call, and compiling the traced
# ResNet CLIP graph with LLVM never finishes; the shim turns the fuser off.
check_cxx_source_compiles([[
#include <torch/csrc/jit/passes/tensorexpr_fuser.h>
void f() { torch::jit::setTensorExprFuserEnabled(!torch::jit::tensorExprFuserEnabled()); }
]] CT_HAS_TEXPR_FUSER_SWITCH)

# c10::Allocator::allocate is const up to libtorch 2.2 and not from 2.3, which
# also adds the pure virtual copy_data (cpp/host_cache.cc implements both).
check_cxx_source_compiles([[
#include <c10/core/Allocator.h>
struct A : c10::Allocator {
  c10::DataPtr allocate(size_t) const override { return {}; }
};
]] CT_ALLOCATOR_ALLOCATE_CONST)
check_cxx_source_compiles([[
#include <c10/core/Allocator.h>
struct A : c10::Allocator {
  void copy_data(void *d, const void *s, std::size_t n) const override { default_copy_data(d, s, n); }
};
]] CT_ALLOCATOR_HAS_COPY_DATA)

set(CMAKE_TRY_COMPILE_TARGET_TYPE "${_ct_saved_try_type}")
unset(CMAKE_REQUIRED_INCLUDES)
unset(CMAKE_REQUIRED_FLAGS)
unset(CMAKE_REQUIRED_QUIET)

foreach(_ct_feature CT_HAS_SDPA CT_AUTOCAST_PER_DEVICE CT_TCPSTORE_HAS_USE_LIBUV CT_HAS_TEXPR_FUSER_SWITCH
    CT_ALLOCATOR_ALLOCATE_CONST CT_ALLOCATOR_HAS_COPY_DATA)
  if(${_ct_feature})
    set(${_ct_feature}_VALUE 1)
  else()
    set(${_ct_feature}_VALUE 0)
  endif()
  message(STATUS "libtorch feature ${_ct_feature}: ${${_ct_feature}_VALUE}")
endforeach()
set(CT_TORCH_FEATURE_DEFS
  CT_HAS_SDPA=${CT_HAS_SDPA_VALUE}
  CT_AUTOCAST_PER_DEVICE=${CT_AUTOCAST_PER_DEVICE_VALUE}
  CT_TCPSTORE_HAS_USE_LIBUV=${CT_TCPSTORE_HAS_USE_LIBUV_VALUE}
  CT_HAS_TEXPR_FUSER_SWITCH=${CT_HAS_TEXPR_FUSER_SWITCH_VALUE}
  CT_ALLOCATOR_ALLOCATE_CONST=${CT_ALLOCATOR_ALLOCATE_CONST_VALUE}
  CT_ALLOCATOR_HAS_COPY_DATA=${CT_ALLOCATOR_HAS_COPY_DATA_VALUE})
