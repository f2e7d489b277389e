package torch

// #include "optim_ops.h"
import "C"

import "fmt"

// SGDUpdate applies PyTorch 1.13's single-tensor SGD update to parameter p
// from its current gradient (see cpp/optim_ops.h). buf is p's momentum
// buffer, updated in place; when it is nil and momentum is not zero, a new
// buffer is created and returned (the caller owns it), otherwise buf itself
// is returned. stepped is false when p has no gradient; nothing changes then.
func SGDUpdate(p, buf *Tensor, lr, momentum, dampening, weightDecay float64, nesterov, maximize bool) (newBuf *Tensor, stepped bool, err error) {
	ph, err := p.handle()
	if err != nil {
		return buf, false, fmt.Errorf("sgd update: parameter: %w", err)
	}
	var bh C.ct_tensor
	if buf != nil {
		if bh, err = buf.handle(); err != nil {
			return buf, false, fmt.Errorf("sgd update: momentum buffer: %w", err)
		}
	}
	var did C.int32_t
	created := bh == nil
	err = cErr(C.ct_optim_sgd(ph, &bh, C.double(lr), C.double(momentum), C.double(dampening),
		C.double(weightDecay), cBool(nesterov), cBool(maximize), &did))
	if created && bh != nil {
		buf = wrap(bh)
	}
	if err != nil {
		return buf, false, fmt.Errorf("sgd update: %w", err)
	}
	return buf, did != 0, nil
}

// AdamState is one parameter's Adam/AdamW state, as PyTorch 1.13 keeps it:
// Step is a float32 scalar tensor, ExpAvg and ExpAvgSq are shaped like the
// parameter. All three are nil before the first step.
type AdamState struct {
	Step, ExpAvg, ExpAvgSq *Tensor
}

// Close frees the state's tensors.
func (s *AdamState) Close() {
	s.Step.Close()
	s.ExpAvg.Close()
	s.ExpAvgSq.Close()
	s.Step, s.ExpAvg, s.ExpAvgSq = nil, nil, nil
}

// AdamUpdate applies PyTorch 1.13's single-tensor Adam (decoupled false: L2
// weight decay) or AdamW (decoupled true) update to p from its current
// gradient, updating st in place and creating it on the first step (see
// cpp/optim_ops.h). stepped is false when p has no gradient.
func AdamUpdate(p *Tensor, st *AdamState, lr, beta1, beta2, eps, weightDecay float64, decoupled, maximize bool) (stepped bool, err error) {
	ph, err := p.handle()
	if err != nil {
		return false, fmt.Errorf("adam update: parameter: %w", err)
	}
	var hs [3]C.ct_tensor
	for i, t := range []*Tensor{st.Step, st.ExpAvg, st.ExpAvgSq} {
		if t == nil {
			continue
		}
		if hs[i], err = t.handle(); err != nil {
			return false, fmt.Errorf("adam update: state: %w", err)
		}
	}
	fresh := hs[0] == nil
	var did C.int32_t
	err = cErr(C.ct_optim_adam(ph, &hs[0], &hs[1], &hs[2], C.double(lr), C.double(beta1), C.double(beta2),
		C.double(eps), C.double(weightDecay), cBool(decoupled), cBool(maximize), &did))
	if fresh && hs[0] != nil {
		st.Step, st.ExpAvg, st.ExpAvgSq = wrap(hs[0]), wrap(hs[1]), wrap(hs[2])
	}
	if err != nil {
		return false, fmt.Errorf("adam update: %w", err)
	}
	return did != 0, nil
}

func cBool(b bool) C.int32_t {
	if b {
		return 1
	}
	return 0
}
