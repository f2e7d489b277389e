// Package optim holds optimizers whose updates equal PyTorch 1.13's
// torch.optim (the default single-tensor implementation, foreach=False) to
// the bit: SGD (momentum, dampening, weight decay, Nesterov), Adam (L2 weight
// decay) and AdamW (decoupled weight decay), with parameter groups built from
// parameter names, and learning-rate schedules that are pure functions of the
// step count.
//
// Parameters are named (their PyTorch dotted path). Their order, group by
// group, is the index order of PyTorch's optimizer state dict; StateDict and
// LoadStateDict read and write that layout ({"state": {index: {...}},
// "param_groups": [{..., "params": [indices]}]}) as ptfile values, so a
// Python optimizer.load_state_dict(...) continues a run started here and the
// other way round.
//
// ZeroGrad sets gradients to None (PyTorch's zero_grad(set_to_none=True)): a
// parameter that backward did not reach is skipped by Step, as PyTorch skips
// parameters whose .grad is None.
package optim
