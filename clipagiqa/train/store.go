package train

import (
	"fmt"
	"strings"

	"github.com/clipagiqa/clipagiqa/torch"
	"github.com/clipagiqa/clipagiqa/torch/nn"
	"github.com/clipagiqa/clipagiqa/torch/optim"
	"github.com/clipagiqa/clipagiqa/torch/ptfile"
)

// SaveStore is a Model.SaveCheckpoint for models kept in an nn.Store:
// torch.save({"model": the trainable parameters and every buffer, by name
// (frozen parameters are left out, as the official IP-IQA checkpoints do),
// "optimizer": opt's state dict, "config": config, "scaler": None, "epoch":
// epoch}), written atomically.
func SaveStore(path string, st *nn.Store, opt optim.Optimizer, config *ptfile.Dict, epoch int) error {
	trainable := map[string]bool{}
	for _, p := range st.Trainable() {
		trainable[p.Name] = true
	}
	model := ptfile.NewDict(ptfile.KindOrderedDict)
	for _, name := range st.Names() {
		if k, _ := st.KindOf(name); k == nn.Parameter && !trainable[name] {
			continue
		}
		raw, err := torch.ToRaw(st.Get(name))
		if err != nil {
			return fmt.Errorf("save %s: tensor %s: %w", path, name, err)
		}
		model.Set(name, raw)
	}
	root := ptfile.NewDict(ptfile.KindDict)
	root.Set("model", model)
	var osd any
	if opt != nil {
		sd, err := opt.StateDict()
		if err != nil {
			return fmt.Errorf("save %s: optimizer: %w", path, err)
		}
		osd = sd
	}
	root.Set("optimizer", osd)
	root.Set("config", config)
	root.Set("scaler", nil)
	root.Set("epoch", int64(epoch))
	return ptfile.SaveValue(path, root)
}

// LoadStore reads what SaveStore wrote into st (every trainable parameter
// and buffer must be present; frozen ones keep their values) and opt when
// not nil, and returns the config and epoch.
func LoadStore(path string, st *nn.Store, opt optim.Optimizer) (any, int, error) {
	f, err := ptfile.Load(path)
	if err != nil {
		return nil, 0, err
	}
	root, ok := f.Root.(*ptfile.Dict)
	if !ok {
		return nil, 0, fmt.Errorf("%s is not a training checkpoint (root is a %T)", path, f.Root)
	}
	mv, ok := root.Get("model")
	if !ok {
		return nil, 0, fmt.Errorf("%s is not a training checkpoint (no \"model\" entry)", path)
	}
	raw, names, err := ptfile.StateDict(mv)
	if err != nil {
		return nil, 0, fmt.Errorf("%s: model: %w", path, err)
	}
	sd, err := torch.StateDictFromRaw(raw, names)
	if err != nil {
		return nil, 0, fmt.Errorf("%s: model: %w", path, err)
	}
	defer sd.Close()
	trainable := map[string]bool{}
	for _, p := range st.Trainable() {
		trainable[p.Name] = true
	}
	var missing []string
	for _, name := range st.Names() {
		k, _ := st.KindOf(name)
		if _, ok := sd.Tensors[name]; !ok && (k != nn.Parameter || trainable[name]) {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		return nil, 0, fmt.Errorf("%s: model lacks %s", path, strings.Join(missing, ", "))
	}
	rep, err := st.LoadStateDict(sd, false)
	if err != nil {
		return nil, 0, fmt.Errorf("%s: %w", path, err)
	}
	if len(rep.Unexpected) > 0 {
		return nil, 0, fmt.Errorf("%s: unexpected tensors %s", path, strings.Join(rep.Unexpected, ", "))
	}
	if opt != nil {
		ov, _ := root.Get("optimizer")
		od, ok := ov.(*ptfile.Dict)
		if !ok {
			return nil, 0, fmt.Errorf("%s: no optimizer state to resume from", path)
		}
		if err := opt.LoadStateDict(od); err != nil {
			return nil, 0, fmt.Errorf("%s: optimizer: %w", path, err)
		}
	}
	config, _ := root.Get("config")
	var epoch int
	if e, ok := root.Get("epoch"); ok {
		if v, ok := e.(int64); ok {
			epoch = int(v)
		}
	}
	return config, epoch, nil
}
