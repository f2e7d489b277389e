/* Device settings that parity checks on CUDA need. Same conventions as
 * shim.h: every entry catches all C++ exceptions and returns an error string
 * (free with free()) or NULL. */
#ifndef CLIPAGIQA_DEVICE_H
#define CLIPAGIQA_DEVICE_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Allows (non-zero) or forbids (0) TF32 in cuBLAS matmuls and in cuDNN
 * convolutions. libtorch allows it for cuDNN by default, which costs fp32
 * parity on Ampere and later; without CUDA it only records the setting. */
char *ct_set_allow_tf32(int32_t cublas, int32_t cudnn);
/* Current settings: bit 0 cuBLAS, bit 1 cuDNN. */
int32_t ct_allow_tf32(void);

#ifdef __cplusplus
}
#endif

#endif
