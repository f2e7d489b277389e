/* Fused CPU paths for CLIP (see fused.cc): the Vision Transformer's
 * inference, and the text transformer over prompts that share a prefix.
 *
 * One call runs the whole image encoder: the patch embedding, every residual
 * block and the projection, with buffers reused across calls, no autograd,
 * and all parallel work on libtorch's intra-op threads (BLAS called
 * single-threaded from them, so two thread pools never fight over the cores).
 * Same conventions as shim.h: errors are malloc'd strings, NULL on success.
 */
#ifndef CLIPAGIQA_FUSED_H
#define CLIPAGIQA_FUSED_H

#include "shim.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef void *ct_vit;

/* Number of weight tensors ct_vit_new expects for a ViT with `layers` blocks:
 * conv1.weight, class_embedding, positional_embedding, ln_pre.{weight,bias},
 * ln_post.{weight,bias}, proj, then per block in_proj_{weight,bias},
 * out_proj.{weight,bias}, ln_1.{weight,bias}, c_fc.{weight,bias},
 * c_proj.{weight,bias}, ln_2.{weight,bias}. */
int64_t ct_vit_weight_count(int64_t layers);

/* Builds the fused encoder over the given weights (CPU float32; the handle
 * keeps references, no copies). heads: attention heads per block. */
ct_error ct_vit_new(const ct_tensor *weights, int64_t n, int64_t layers, int64_t heads,
                    ct_vit *out);
void ct_vit_free(ct_vit v);
/* pixels [N, 3, R, R] float32 CPU → raw image features [N, E] (a tensor
 * without autograd history). Calls on one handle are serialised. */
ct_error ct_vit_forward(ct_vit v, ct_tensor pixels, ct_tensor *out);
/* Releases the cached activation buffers (they are rebuilt on demand). */
void ct_vit_trim(ct_vit v);
/* Bytes of activation buffers the handle holds now. */
int64_t ct_vit_buffer_bytes(ct_vit v);

typedef void *ct_text;

/* The text transformer for prompts sharing a prefix (CLIP-AGIQA's SOT +
 * context): 4 + 12·layers weights: positional_embedding, ln_final.weight,
 * ln_final.bias, text_projection, then per block as for ct_vit_new. */
int64_t ct_text_weight_count(int64_t layers);
ct_error ct_text_new(const ct_tensor *weights, int64_t n, int64_t layers, int64_t heads,
                     ct_text *out);
void ct_text_free(ct_text t);
/* prefix [1, P, D] and suffix [K, S, D] embeddings (CPU float32), eot[k] the
 * absolute EOT position of prompt k (P ≤ eot < P+S) → raw text features
 * [K, E]. With grad = CT_GRAD_ENABLED and an input that requires grad, the
 * result is differentiable (a hand-written backward, one call). */
ct_error ct_text_forward(ct_text t, int32_t grad, ct_tensor prefix, ct_tensor suffix,
                         const int64_t *eot, int64_t k, ct_tensor *out);

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
