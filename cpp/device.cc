// Device settings for parity checks: see device.h.
#include "device.h"

#include <ATen/Context.h>
#include <c10/util/Exception.h>

#include <cstdlib>
#include <cstring>
#include <exception>

namespace {
char *device_error(const char *msg) {
  size_t n = std::strlen(msg);
  char *r = static_cast<char *>(std::malloc(n + 1));
  if (r != nullptr) std::memcpy(r, msg, n + 1);
  return r;
}
}  // namespace

extern "C" char *ct_set_allow_tf32(int32_t cublas, int32_t cudnn) {
  try {
    at::globalContext().setAllowTF32CuBLAS(cublas != 0);
    at::globalContext().setAllowTF32CuDNN(cudnn != 0);
    return nullptr;
  } catch (const c10::Error &e) {
    return device_error(e.what_without_backtrace());
  } catch (const std::exception &e) {
    return device_error(e.what());
  } catch (...) {
    return device_error("unknown C++ exception");
  }
}

extern "C" int32_t ct_allow_tf32(void) {
  try {
    return (at::globalContext().allowTF32CuBLAS() ? 1 : 0) | (at::globalContext().allowTF32CuDNN() ? 2 : 0);
  } catch (...) {
    return -1;
  }
}
