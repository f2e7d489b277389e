/* Optimizer updates for torch/optim: PyTorch 1.13's single-tensor
 * (foreach=False) SGD, Adam and AdamW steps on one parameter, written with
 * the same ATen ops in the same order as torch/optim/{sgd,adam,adamw}.py so
 * the results agree bit for bit. Error convention as in shim.h. Each call runs
 * under no-grad and reads the parameter's current .grad; *stepped is 0 when the
 * parameter has no gradient (PyTorch skips such parameters). */
#ifndef CLIPAGIQA_OPTIM_OPS_H
#define CLIPAGIQA_OPTIM_OPS_H

#include "shim.h"

#ifdef __cplusplus
extern "C" {
#endif

/* SGD. *buf may be NULL: with momentum != 0 it is then created as
 * clone(d_p) (PyTorch's first-step rule) and returned through *buf. */
ct_error ct_optim_sgd(ct_tensor param, ct_tensor *buf, double lr, double momentum,
                      double dampening, double weight_decay, int32_t nesterov,
                      int32_t maximize, int32_t *stepped);

/* Adam (decoupled = 0: L2 weight decay added to the gradient) or AdamW
 * (decoupled = 1: param *= 1 - lr*weight_decay). *step, *exp_avg and
 * *exp_avg_sq may all be NULL: they are then created as PyTorch's lazy state
 * (step = tensor(0.), float32 scalar; moments zeros_like(param)). */
ct_error ct_optim_adam(ct_tensor param, ct_tensor *step, ct_tensor *exp_avg,
                       ct_tensor *exp_avg_sq, double lr, double beta1, double beta2,
                       double eps, double weight_decay, int32_t decoupled, int32_t maximize,
                       int32_t *stepped);

#ifdef __cplusplus
}
#endif
#endif
