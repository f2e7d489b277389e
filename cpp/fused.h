/* Fused CPU ops for CLIP's transformer (see fused.cc): a stack of residual
 * attention blocks, run for inference over whole sequences, or forward and
 * backward over prompts that share a prefix.
 *
 * The model around the blocks (patch embedding, class token, positions,
 * final norms, projections) stays in Go; the handle holds only the blocks'
 * weights, given by their PyTorch names. The products are split over
 * libtorch's intra-op threads with BLAS called single-threaded from them, so
 * two thread pools never fight over the cores. Same conventions as shim.h:
 * errors are malloc'd strings, NULL on success.
 */
#ifndef CLIPAGIQA_FUSED_H
#define CLIPAGIQA_FUSED_H

#include "shim.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef void *ct_blocks;

/* Builds a block stack from n weights named resblocks.<l>.<param> (relative
 * to a CLIP Transformer: attn.in_proj_weight, attn.in_proj_bias,
 * attn.out_proj.{weight,bias}, ln_1.{weight,bias}, mlp.c_fc.{weight,bias},
 * mlp.c_proj.{weight,bias}, ln_2.{weight,bias}), in any order; blocks
 * 0..L-1 must all be complete, other names are refused. CPU float32; the
 * handle keeps references, no copies. heads: attention heads per block. */
ct_error ct_blocks_new(const char *const *names, const ct_tensor *weights, int64_t n, int64_t heads,
                       ct_blocks *out);
void ct_blocks_free(ct_blocks b);
/* Number of blocks. */
int64_t ct_blocks_layers(ct_blocks b);
/* x [N, L, W] CPU float32 → the blocks' output [N, L, W] with unmasked
 * attention (the ViT's), a new tensor without autograd history.
 * Activation buffers are kept between calls; calls are serialised. */
ct_error ct_blocks_forward(ct_blocks b, ct_tensor x, ct_tensor *out);
/* prefix [1, P, W] and suffix [K, L, W] (positions already added) → the
 * suffix rows' outputs [K, L, W] under causal attention where every prompt
 * k's rows see the prefix and its own earlier rows (the text tower's, the
 * prefix computed once). With grad = CT_GRAD_ENABLED and an input that
 * requires grad, the result is differentiable with respect to both inputs
 * (a hand-written backward, one call). */
ct_error ct_blocks_forward_shared_prefix(ct_blocks b, int32_t grad, ct_tensor prefix, ct_tensor suffix,
                                         ct_tensor *out);
/* Releases the cached activation buffers (they are rebuilt on demand). */
void ct_blocks_trim(ct_blocks b);
/* Bytes of activation buffers the handle holds now. */
int64_t ct_blocks_buffer_bytes(ct_blocks b);

/* pixels [N, C, R, R] → conv2d(pixels, weight [W, C, P, P], stride P, no
 * padding, no bias) as tokens [N, (R/P)², W] (CPU float32): one image per
 * task, its patches gathered into a per-thread scratch kept across calls,
 * one product each. No autograd history. */
ct_error ct_fused_patch_embed(ct_tensor pixels, ct_tensor weight, ct_tensor *out);

/* y = LayerNorm(x) over the last dimension (weight w, bias b, CPU float32):
 * the block ops' row kernel, 64 rows per task, without autograd history. */
ct_error ct_fused_layer_norm(ct_tensor x, ct_tensor w, ct_tensor b, double eps, ct_tensor *out);

/* Which matrix-multiply route the fused code uses: 1 = the process's BLAS
 * sgemm called directly, 0 = libtorch's mm on strided views. */
int32_t ct_fused_direct_blas(void);
/* 1 when oneDNN's sgemm is reachable and used for few-row products. */
int32_t ct_fused_dnnl(void);
/* Threads of an OpenBLAS pool, if the process has one (-1 otherwise). */
int32_t ct_blas_get_threads(void);
/* Sets the OpenBLAS pool size; a no-op returning 0 without OpenBLAS. */
int32_t ct_blas_set_threads(int32_t n);

#ifdef __cplusplus
}
#endif
#endif
