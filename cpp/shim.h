/* C interface of the clipagiqa libtorch shim.
 *
 * Every function that can fail returns NULL on success or a malloc'd error
 * message that the caller frees with ct_free_string. Results come back through
 * out-parameters. No C++ exception ever leaves this library: each entry point
 * catches everything. Tensors are at::Tensor* handles, the same handles that
 * gotorch uses, so they can travel between the two libraries.
 *
 * Grad mode, inference mode and autocast are per OS thread in libtorch, while
 * goroutines move between threads between cgo calls; so each op takes a
 * ct_mode and sets the state for the duration of that call only.
 */
#ifndef CLIPAGIQA_SHIM_H
#define CLIPAGIQA_SHIM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef void *ct_tensor;
typedef void *ct_module;
typedef char *ct_error;

/* Grad modes of ct_mode.grad. */
enum { CT_GRAD_ENABLED = 0, CT_NO_GRAD = 1, CT_INFERENCE = 2 };

/* Per-call execution state. autocast_dtype < 0 disables autocast. */
typedef struct {
  int32_t grad;
  int32_t autocast_dtype;
} ct_mode;

/* Version of this shim's C interface; Go refuses a library that differs. */
const char *ct_shim_version(void);
/* Version of the libtorch the shim was compiled against ("1.13.1"). */
const char *ct_torch_version(void);
void ct_free_string(char *s);

/* Runtime. */
int32_t ct_cuda_is_available(void);
int32_t ct_cuda_device_count(void);
ct_error ct_cuda_synchronize(int32_t device);
ct_error ct_set_num_threads(int32_t n);
int32_t ct_get_num_threads(void);
/* Re-applies the ct_set_num_threads count on the calling OS thread (libtorch
 * keeps it per thread); every op of this library does so itself. */
void ct_apply_num_threads(void);
ct_error ct_manual_seed(uint64_t seed);
int32_t ct_has_fused_attention(void);

/* Lifetime and inspection. */
void ct_tensor_free(ct_tensor t);
ct_error ct_tensor_shallow_copy(ct_tensor t, ct_tensor *out);
ct_error ct_tensor_dim(ct_tensor t, int64_t *out);
ct_error ct_tensor_shape(ct_tensor t, int64_t *dims, int64_t cap);
ct_error ct_tensor_dtype(ct_tensor t, int32_t *out);
ct_error ct_tensor_device(ct_tensor t, int32_t *type, int32_t *index);
ct_error ct_tensor_requires_grad(ct_tensor t, int32_t *out);
/* The in-place modification counter (Tensor._version); -1 for an inference
 * tensor, which has none. */
ct_error ct_tensor_version(ct_tensor t, int64_t *out);
ct_error ct_tensor_is_contiguous(ct_tensor t, int32_t *out);
ct_error ct_tensor_to_string(ct_tensor t, char **out);

/* Creation: copies of host memory, and filled tensors. dtype is a
 * c10::ScalarType code; device type 0 = CPU, 1 = CUDA. */
ct_error ct_from_blob(const void *data, int32_t dtype, const int64_t *shape,
                      int64_t ndim, int32_t device_type, int32_t device_index,
                      ct_tensor *out);
ct_error ct_copy_to_host(ct_tensor t, int32_t dtype, void *dst, int64_t nbytes);
ct_error ct_full(const int64_t *shape, int64_t ndim, double value, int32_t dtype,
                 int32_t device_type, int32_t device_index, ct_tensor *out);
ct_error ct_randn(const int64_t *shape, int64_t ndim, int32_t dtype,
                  int32_t device_type, int32_t device_index, ct_tensor *out);
ct_error ct_rand(const int64_t *shape, int64_t ndim, int32_t dtype,
                 int32_t device_type, int32_t device_index, ct_tensor *out);
ct_error ct_arange(int64_t end, int32_t dtype, int32_t device_type,
                   int32_t device_index, ct_tensor *out);
ct_error ct_item(ct_tensor t, double *out);

/* Conversions. */
ct_error ct_to(ct_mode m, ct_tensor t, int32_t dtype, int32_t device_type,
               int32_t device_index, int32_t non_blocking, ct_tensor *out);
ct_error ct_pin_memory(ct_tensor t, ct_tensor *out);
ct_error ct_clone(ct_mode m, ct_tensor t, ct_tensor *out);
ct_error ct_detach(ct_tensor t, ct_tensor *out);
ct_error ct_set_requires_grad(ct_tensor t, int32_t on);
ct_error ct_contiguous(ct_mode m, ct_tensor t, ct_tensor *out);

/* Elementwise. op codes: see ct_binary_op / ct_unary_op in shim.cc. */
ct_error ct_binary(ct_mode m, int32_t op, ct_tensor a, ct_tensor b, ct_tensor *out);
ct_error ct_binary_scalar(ct_mode m, int32_t op, ct_tensor a, double s, ct_tensor *out);
ct_error ct_unary(ct_mode m, int32_t op, ct_tensor a, ct_tensor *out);

/* Reductions. dims == NULL reduces over everything. op: 0 sum, 1 mean. */
ct_error ct_reduce(ct_mode m, int32_t op, ct_tensor a, const int64_t *dims,
                   int64_t ndims, int32_t keepdim, ct_tensor *out);
ct_error ct_argmax(ct_mode m, ct_tensor a, int64_t dim, int32_t keepdim, ct_tensor *out);

/* Neural-network ops. Optional tensors may be NULL. */
ct_error ct_layer_norm(ct_mode m, ct_tensor x, ct_tensor w, ct_tensor b, double eps,
                       ct_tensor *out);
ct_error ct_softmax(ct_mode m, ct_tensor x, int64_t dim, ct_tensor *out);
ct_error ct_log_softmax(ct_mode m, ct_tensor x, int64_t dim, ct_tensor *out);
ct_error ct_matmul(ct_mode m, ct_tensor a, ct_tensor b, ct_tensor *out);
ct_error ct_bmm(ct_mode m, ct_tensor a, ct_tensor b, ct_tensor *out);
ct_error ct_baddbmm(ct_mode m, ct_tensor self, ct_tensor a, ct_tensor b, double beta,
                    double alpha, ct_tensor *out);
ct_error ct_linear(ct_mode m, ct_tensor x, ct_tensor w, ct_tensor b, ct_tensor *out);
ct_error ct_conv2d(ct_mode m, ct_tensor x, ct_tensor w, ct_tensor b, int64_t stride,
                   int64_t padding, ct_tensor *out);
ct_error ct_embedding(ct_mode m, ct_tensor weight, ct_tensor ids, ct_tensor *out);
ct_error ct_normalize(ct_mode m, ct_tensor x, double p, int64_t dim, double eps,
                      ct_tensor *out);
ct_error ct_dropout(ct_mode m, ct_tensor x, double p, int32_t train, ct_tensor *out);
ct_error ct_mse_loss(ct_mode m, ct_tensor a, ct_tensor b, ct_tensor *out);
/* Scaled dot-product attention over [..., L, E] tensors; mask is additive
 * (or NULL). Uses the fused kernel where the libtorch version has one. */
ct_error ct_attention(ct_mode m, ct_tensor q, ct_tensor k, ct_tensor v, ct_tensor mask,
                      ct_tensor *out);

/* Shape ops. */
ct_error ct_reshape(ct_mode m, ct_tensor x, const int64_t *shape, int64_t ndim,
                    ct_tensor *out);
ct_error ct_permute(ct_mode m, ct_tensor x, const int64_t *dims, int64_t ndim,
                    ct_tensor *out);
ct_error ct_transpose(ct_mode m, ct_tensor x, int64_t d0, int64_t d1, ct_tensor *out);
ct_error ct_expand(ct_mode m, ct_tensor x, const int64_t *shape, int64_t ndim,
                   ct_tensor *out);
ct_error ct_cat(ct_mode m, const ct_tensor *xs, int64_t n, int64_t dim, ct_tensor *out);
ct_error ct_stack(ct_mode m, const ct_tensor *xs, int64_t n, int64_t dim, ct_tensor *out);
ct_error ct_narrow(ct_mode m, ct_tensor x, int64_t dim, int64_t start, int64_t length,
                   ct_tensor *out);
ct_error ct_select(ct_mode m, ct_tensor x, int64_t dim, int64_t index, ct_tensor *out);
ct_error ct_index_select(ct_mode m, ct_tensor x, int64_t dim, ct_tensor index,
                         ct_tensor *out);
ct_error ct_gather(ct_mode m, ct_tensor x, int64_t dim, ct_tensor index, ct_tensor *out);
ct_error ct_squeeze(ct_mode m, ct_tensor x, int64_t dim, ct_tensor *out);
ct_error ct_unsqueeze(ct_mode m, ct_tensor x, int64_t dim, ct_tensor *out);
ct_error ct_triu(ct_mode m, ct_tensor x, int64_t diagonal, ct_tensor *out);

/* Autograd. */
ct_error ct_backward(ct_tensor loss);
ct_error ct_grad(ct_tensor t, ct_tensor *out); /* *out NULL when no grad */
ct_error ct_zero_grad(ct_tensor t);
/* One SGD step over n parameters with PyTorch's semantics (weight decay,
 * momentum with dampening, optional Nesterov). bufs[i] may be NULL on the
 * first step; it is replaced by the new momentum buffer. */
ct_error ct_sgd_step(ct_tensor *params, ct_tensor *bufs, int64_t n, double lr,
                     double momentum, double dampening, double weight_decay,
                     int32_t nesterov);
/* In place: dst.copy_(src) without recording autograd history. */
ct_error ct_copy_(ct_tensor dst, ct_tensor src);

/* TorchScript archives. */
ct_error ct_jit_load(const char *path, ct_module *out);
void ct_module_free(ct_module m);
/* Parameters and buffers, recursively, with dotted names. Caller frees
 * names[i] with ct_free_string, names and tensors arrays with free(). */
ct_error ct_module_named_tensors(ct_module m, char ***names, ct_tensor **tensors,
                                 int64_t *n);
/* Runs a method on tensor inputs under no-grad; returns one tensor. */
ct_error ct_module_run_method(ct_module m, const char *method, const ct_tensor *inputs,
                              int64_t n, ct_tensor *out);

#ifdef __cplusplus
}
#endif
#endif
