package ipiqa

import (
	"fmt"
	"math"
	"strings"

	"github.com/clipagiqa/clipagiqa/clipagiqa/clip"
	"github.com/clipagiqa/clipagiqa/torch"
	"github.com/clipagiqa/clipagiqa/torch/nn"
	"github.com/clipagiqa/clipagiqa/torch/ptfile"
)

// OptimizerState is what a checkpoint needs of an optimizer: PyTorch's
// state_dict layout both ways (torch/optim's Adam, SGD).
type OptimizerState interface {
	StateDict() (*ptfile.Dict, error)
	LoadStateDict(sd *ptfile.Dict) error
}

// Checkpoint is the non-tensor part of an official checkpoint.
type Checkpoint struct {
	Config any   // OmegaConf.to_container(config): *ptfile.Dict tree, or nil
	Epoch  int64 // the epoch it was saved after
	// Scaler is the "scaler" entry: a GradScaler state dict (*ptfile.Dict)
	// for fp16 mixed-precision runs, nil (None) otherwise.
	Scaler any
}

// SaveOfficial writes path as the official Trainer._save_checkpoint does:
// torch.save({"model": state_dict without the frozen parameters (buffers
// kept), "optimizer": opt's state_dict (nil: None), "config": config,
// "scaler": None, "epoch": epoch}). config may be nil or a tree of
// ptfile values (*ptfile.Dict, strings, numbers, …). The write is atomic.
func (m *Model) SaveOfficial(path string, opt OptimizerState, config any, epoch int64) error {
	return m.SaveOfficialScaler(path, opt, config, nil, epoch)
}

// SaveOfficialScaler is SaveOfficial with "scaler" set to scaler (a
// GradScaler state dict, as fp16 mixed-precision training saves; nil: None).
func (m *Model) SaveOfficialScaler(path string, opt OptimizerState, config any, scaler *ptfile.Dict, epoch int64) error {
	trainable := map[string]bool{}
	for _, p := range m.store.Trainable() {
		trainable[p.Name] = true
	}
	model := ptfile.NewDict(ptfile.KindOrderedDict)
	for _, name := range m.store.Names() {
		if k, _ := m.store.KindOf(name); k == nn.Parameter && !trainable[name] { // frozen: left out
			continue
		}
		raw, err := torch.ToRaw(m.store.Get(name))
		if err != nil {
			return fmt.Errorf("ipiqa: save %s: tensor %s: %w", path, name, err)
		}
		model.Set(name, raw)
	}
	root := ptfile.NewDict(ptfile.KindDict)
	root.Set("model", model)
	var optSD any
	if opt != nil {
		sd, err := opt.StateDict()
		if err != nil {
			return fmt.Errorf("ipiqa: save %s: optimizer: %w", path, err)
		}
		optSD = sd
	}
	root.Set("optimizer", optSD)
	root.Set("config", config)
	if scaler != nil {
		root.Set("scaler", scaler)
	} else {
		root.Set("scaler", nil)
	}
	root.Set("epoch", epoch)
	if err := ptfile.SaveValue(path, root); err != nil {
		return fmt.Errorf("ipiqa: %w", err)
	}
	return nil
}

// LoadOfficial reads an official IP-IQA checkpoint (checkpoint_best.pth
// and the like, or SaveOfficial's) into the model, as the official
// _reload_best_model does: the "model" tensors by name, where only frozen
// parameters may be absent (they keep the CLIP archive's values); an
// unexpected name or a shape that does not fit the CLIP is an error naming
// the tensor. With opt, the "optimizer" state is loaded too (resume).
func (m *Model) LoadOfficial(path string, opt OptimizerState) (Checkpoint, error) {
	var ck Checkpoint
	f, err := ptfile.Load(path)
	if err != nil {
		return ck, fmt.Errorf("ipiqa: %w", err)
	}
	root, ok := f.Root.(*ptfile.Dict)
	if !ok {
		return ck, fmt.Errorf("ipiqa: %s is not an IP-IQA checkpoint (root is not a dict)", path)
	}
	mv, ok := root.Get("model")
	if !ok {
		return ck, fmt.Errorf("ipiqa: %s is not an IP-IQA checkpoint (no \"model\" entry)", path)
	}
	raw, names, err := ptfile.StateDict(mv)
	if err != nil {
		return ck, fmt.Errorf("ipiqa: %s: model: %w", path, err)
	}
	sd, err := torch.StateDictFromRaw(raw, names)
	if err != nil {
		return ck, fmt.Errorf("ipiqa: %s: model: %w", path, err)
	}
	defer sd.Close()
	trainable := map[string]bool{}
	for _, p := range m.store.Trainable() {
		trainable[p.Name] = true
	}
	var missing []string
	for _, name := range m.store.Names() {
		k, _ := m.store.KindOf(name)
		if _, ok := sd.Tensors[name]; !ok && (k != nn.Parameter || trainable[name]) && !strings.HasSuffix(name, ".num_batches_tracked") {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		return ck, fmt.Errorf("ipiqa: %s: model lacks trained tensors %s", path, strings.Join(missing, ", "))
	}
	if err := m.LoadStateDict(sd); err != nil {
		return ck, fmt.Errorf("%s: %w", path, err)
	}
	if opt != nil {
		ov, _ := root.Get("optimizer")
		od, ok := ov.(*ptfile.Dict)
		if !ok {
			return ck, fmt.Errorf("ipiqa: %s: no optimizer state to resume from", path)
		}
		if err := opt.LoadStateDict(od); err != nil {
			return ck, fmt.Errorf("ipiqa: %s: optimizer: %w", path, err)
		}
	}
	ck.Config, _ = root.Get("config")
	ck.Scaler, _ = root.Get("scaler")
	if e, ok := root.Get("epoch"); ok {
		if v, ok := e.(int64); ok {
			ck.Epoch = v
		}
	}
	return ck, nil
}

// OptionsFromOfficial reads the model settings an official checkpoint was
// trained with: the input resolution from the attnpool positional
// embedding's rows ((S/32)²+1), the outputs from head.out_proj.weight, and
// the head dropout and qa_token from its config when present.
func OptionsFromOfficial(path string) (Options, error) {
	var o Options
	f, err := ptfile.Load(path)
	if err != nil {
		return o, fmt.Errorf("ipiqa: %w", err)
	}
	mv, err := ptfile.Get(f.Root, "model")
	if err != nil {
		return o, fmt.Errorf("ipiqa: %s is not an IP-IQA checkpoint: %w", path, err)
	}
	raw, _, err := ptfile.StateDict(mv)
	if err != nil {
		return o, fmt.Errorf("ipiqa: %s: model: %w", path, err)
	}
	pos, head := raw["attnpool.positional_embedding"], raw["head.out_proj.weight"]
	if pos == nil || head == nil || len(pos.Shape) != 2 || len(head.Shape) != 2 {
		return o, fmt.Errorf("ipiqa: %s: model lacks attnpool.positional_embedding or head.out_proj.weight", path)
	}
	g := int64(math.Round(math.Sqrt(float64(pos.Shape[0] - 1))))
	if g*g+1 != pos.Shape[0] {
		return o, fmt.Errorf("ipiqa: %s: attnpool.positional_embedding has %d rows, not a square grid + 1", path, pos.Shape[0])
	}
	o.InputResolution, o.Outputs = int(32*g), int(head.Shape[0])
	if v, err := ptfile.GetFloat(f.Root, "config", "model", "dropout_rate"); err == nil {
		o.Dropout = v
	}
	if v, err := ptfile.Get(f.Root, "config", "model", "qa_token"); err == nil {
		if b, ok := v.(bool); ok {
			o.FreezeTokenEmbedding = !b
		}
	}
	// What was trained is what was saved (frozen parameters are left out),
	// so the keys say the freezing; otherwise a checkpoint of another
	// freezing would not load, or its trained text tensors would be taken
	// for frozen ones and dropped again by SaveOfficial.
	o.Freezing = freezingOf(raw)
	if _, ok := raw["wte.weight"]; !ok {
		o.FreezeTokenEmbedding = true
	}
	return o.withDefaults()
}

// freezingOf infers the text-side freezing from a checkpoint's model keys.
func freezingOf(model map[string]*ptfile.Tensor) Freezing {
	for name := range model {
		if strings.HasPrefix(name, "txt_model.") || strings.HasPrefix(name, "ln_final.") {
			return FreezeNone
		}
	}
	_, pos := model["txt_pos"]
	_, proj := model["text_projection"]
	if !pos && !proj {
		return FreezePaper
	}
	return FreezeOfficial
}

// Load builds the model an official checkpoint describes on the CLIP at
// clipPath (its frozen text tensors come from there) and loads the
// checkpoint's weights: what a scorer needs. Options come from
// OptionsFromOfficial; opts, when not nil, may adjust them first.
func Load(clipPath, checkpoint string, device torch.Device, opts func(*Options)) (*Model, error) {
	o, err := OptionsFromOfficial(checkpoint)
	if err != nil {
		return nil, err
	}
	if opts != nil {
		opts(&o)
	}
	c, err := clip.Load(clipPath, clip.Options{Device: device})
	if err != nil {
		return nil, fmt.Errorf("ipiqa: %w", err)
	}
	m, err := New(c, o)
	if err != nil {
		c.Close()
		return nil, err
	}
	if _, err := m.LoadOfficial(checkpoint, nil); err != nil {
		m.Close()
		return nil, err
	}
	return m, nil
}
