package ipiqa

import (
	"strings"

	"github.com/clipagiqa/clipagiqa/torch/optim"
)

// ParamGroups splits the trainable parameters as the official
// get_optimizer_params(weight_decay, lr_scale) does, in this order: non-head
// weights (ndim ≥ 2 without "bias", "ln" or "bn" in the name) with
// weightDecay; other non-head tensors without decay; head weights and head
// biases likewise, both at lr × headScale. The learning rate itself is the
// optimizer's (optim.AdamOptions.LR).
func (m *Model) ParamGroups(headScale, weightDecay float64) []optim.ParamGroup {
	groups := []optim.ParamGroup{
		{WeightDecay: optim.Decay(weightDecay)},
		{WeightDecay: optim.Decay(0)},
		{WeightDecay: optim.Decay(weightDecay), LRScale: headScale},
		{WeightDecay: optim.Decay(0), LRScale: headScale},
	}
	for _, p := range m.store.Trainable() {
		i := 0
		if len(p.T.Shape()) < 2 || strings.Contains(p.Name, "bias") || strings.Contains(p.Name, "ln") || strings.Contains(p.Name, "bn") {
			i = 1
		}
		if strings.Contains(p.Name, "head") {
			i += 2
		}
		groups[i].Params = append(groups[i].Params, optim.Param{Name: p.Name, T: p.T})
	}
	return groups
}
