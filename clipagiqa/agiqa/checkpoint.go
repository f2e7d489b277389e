package agiqa

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/clipagiqa/clipagiqa/clipagiqa/clip"
	"github.com/clipagiqa/clipagiqa/torch"
	"github.com/clipagiqa/clipagiqa/torch/ptfile"
)

// Checkpoint formats.
const (
	// FormatVersion tags our own checkpoints.
	FormatVersion = "clipagiqa/1"
	// ModelFile is our checkpoint's file name inside a checkpoint directory.
	ModelFile = "model.pt"
)

// Names of the trainable tensors, as the official CustomCLIP names them.
var paramNames = []string{"prompt_learner.ctx", "regression.1.weight", "regression.1.bias", "regression.4.weight", "regression.4.bias"}

// Checkpoint is the trained state of a CLIP-AGIQA model, independent of
// libtorch: what our files and the official ones hold.
type Checkpoint struct {
	Config   Config
	CLIP     clip.Config
	Epoch    int
	Params   map[string]*ptfile.Tensor // by paramNames
	Momentum map[string]*ptfile.Tensor // SGD momentum buffers, by paramNames (may be empty)
	// Optimizer holds the SGD state dicts (torch.optim layout, keyed
	// "prompt_learner" and "regression") of the run that wrote the
	// checkpoint; nil in official files and in ours from before it existed.
	// ExportOfficial takes the hyper-parameters from here.
	Optimizer map[string]*ptfile.Dict
	// Extra is training state for --resume (JSON), empty for official files.
	Extra string
}

// optimizerModules are the keys of Checkpoint.Optimizer, one SGD each.
var optimizerModules = []string{"prompt_learner", "regression"}

// IsOfficialDir reports whether dir has the official CLIP-AGIQA layout
// (prompt_learner/ and regression/ with model.pth.tar-N files).
func IsOfficialDir(dir string) bool {
	for _, sub := range []string{"prompt_learner", "regression"} {
		st, err := os.Stat(filepath.Join(dir, sub))
		if err != nil || !st.IsDir() {
			return false
		}
	}
	return true
}

var officialFileRe = regexp.MustCompile(`^model\.pth\.tar-(\d+)$`)

// OfficialEpochs lists the epochs saved in an official output directory.
func OfficialEpochs(dir string) ([]int, error) {
	entries, err := os.ReadDir(filepath.Join(dir, "prompt_learner"))
	if err != nil {
		return nil, err
	}
	var out []int
	for _, e := range entries {
		if m := officialFileRe.FindStringSubmatch(e.Name()); m != nil {
			n, _ := strconv.Atoi(m[1])
			if _, err := os.Stat(filepath.Join(dir, "regression", e.Name())); err == nil {
				out = append(out, n)
			}
		}
	}
	sort.Ints(out)
	return out, nil
}

// ReadCheckpoint reads our checkpoint (a directory holding model.pt, or the
// file itself) or an official CLIP-AGIQA output directory (auto-detected;
// epoch 0 picks the highest saved). A directory holding both layouts is
// refused: pass DIR/model.pt to mean ours.
func ReadCheckpoint(path string, epoch int) (*Checkpoint, error) {
	if epoch < 0 {
		return nil, fmt.Errorf("checkpoint %s: epoch %d is negative (0 picks the highest saved)", path, epoch)
	}
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("checkpoint: %w", err)
	}
	if st.IsDir() {
		if err := checkLayout(path); err != nil {
			return nil, err
		}
		if IsOfficialDir(path) {
			return ReadOfficial(path, epoch)
		}
		path = filepath.Join(path, ModelFile)
	}
	ck, err := readOwn(path)
	if err == nil && epoch > 0 && ck.Epoch != epoch {
		return nil, fmt.Errorf("checkpoint %s holds epoch %d, not %d (our checkpoints hold one epoch; pick another directory)", path, ck.Epoch, epoch)
	}
	return ck, err
}

// checkLayout makes sure dir holds exactly one of the two checkpoint
// layouts, and otherwise says what it looked for and what is missing.
func checkLayout(dir string) error {
	exists := func(name string, wantDir bool) bool {
		st, err := os.Stat(filepath.Join(dir, name))
		return err == nil && st.IsDir() == wantDir
	}
	ours := exists(ModelFile, false)
	pl, reg := exists("prompt_learner", true), exists("regression", true)
	const layouts = "ours (%s) or the official CLIP-AGIQA output (%s and %s, with model.pth.tar-N files)"
	both := fmt.Sprintf(layouts, filepath.Join(dir, ModelFile), filepath.Join(dir, "prompt_learner")+"/", filepath.Join(dir, "regression")+"/")
	switch {
	case ours && (pl || reg):
		return fmt.Errorf("checkpoint %s holds both layouts, %s: refusing to guess; pass %s for ours, or move it away for the official one",
			dir, both, filepath.Join(dir, ModelFile))
	case ours || (pl && reg):
		return nil
	case pl || reg:
		missing := "regression/"
		if reg {
			missing = "prompt_learner/"
		}
		return fmt.Errorf("checkpoint %s: looks like the official layout but %s is missing; a checkpoint directory is %s", dir, missing, both)
	default:
		return fmt.Errorf("checkpoint %s is neither checkpoint layout: looked for %s", dir, both)
	}
}

// ReadOfficial reads the official layout OUT/prompt_learner/model.pth.tar-N
// and OUT/regression/model.pth.tar-N (Dassl checkpoints whose optimizer and
// scheduler entries pickle live Python objects; fp16 tensors are upcast).
func ReadOfficial(dir string, epoch int) (*Checkpoint, error) {
	if epoch <= 0 {
		eps, err := OfficialEpochs(dir)
		if err != nil {
			return nil, fmt.Errorf("official checkpoint %s: %w", dir, err)
		}
		if len(eps) == 0 {
			return nil, fmt.Errorf("official checkpoint %s: no model.pth.tar-N present in both prompt_learner/ and regression/", dir)
		}
		epoch = eps[len(eps)-1]
	}
	ck := &Checkpoint{Config: DefaultConfig(), Epoch: epoch, Params: map[string]*ptfile.Tensor{}, Momentum: map[string]*ptfile.Tensor{}}
	name := fmt.Sprintf("model.pth.tar-%d", epoch)
	pl, err := ptfile.Load(filepath.Join(dir, "prompt_learner", name))
	if err != nil {
		return nil, fmt.Errorf("official checkpoint: %w", err)
	}
	reg, err := ptfile.Load(filepath.Join(dir, "regression", name))
	if err != nil {
		return nil, fmt.Errorf("official checkpoint: %w", err)
	}
	plSD, _, err := ptfile.StateDict(pl.Root)
	if err != nil {
		return nil, fmt.Errorf("official checkpoint %s/prompt_learner: %w", dir, err)
	}
	regSD, _, err := ptfile.StateDict(reg.Root)
	if err != nil {
		return nil, fmt.Errorf("official checkpoint %s/regression: %w", dir, err)
	}
	ctx, ok := plSD["ctx"]
	if !ok {
		return nil, fmt.Errorf("official checkpoint %s: prompt learner has no ctx (not a CLIP-AGIQA checkpoint)", dir)
	}
	ck.Params["prompt_learner.ctx"] = ctx
	for _, n := range []string{"1.weight", "1.bias", "4.weight", "4.bias"} {
		t, ok := regSD[n]
		if !ok {
			return nil, fmt.Errorf("official checkpoint %s: regression has no %s (not a CLIP-AGIQA checkpoint)", dir, n)
		}
		ck.Params["regression."+n] = t
	}
	// Momentum buffers sit in optimizer.state[i].momentum_buffer, in parameter order.
	if t, err := ptfile.GetTensor(pl.Root, "optimizer", "state", 0, "momentum_buffer"); err == nil {
		ck.Momentum["prompt_learner.ctx"] = t
	}
	for i, n := range []string{"1.weight", "1.bias", "4.weight", "4.bias"} {
		if t, err := ptfile.GetTensor(reg.Root, "optimizer", "state", i, "momentum_buffer"); err == nil {
			ck.Momentum["regression."+n] = t
		}
	}
	if shape := ctx.Shape; len(shape) == 3 {
		ck.Config.CSC = true
		ck.Config.NCtx = int(shape[1])
	} else if len(shape) == 2 {
		ck.Config.NCtx = int(shape[0])
	}
	if w := ck.Params["regression.1.weight"]; len(w.Shape) == 2 {
		ck.Config.Hidden = int(w.Shape[0])
	}
	return ck, nil
}

func readOwn(path string) (*Checkpoint, error) {
	f, err := ptfile.Load(path)
	if err != nil {
		return nil, fmt.Errorf("checkpoint: %w", err)
	}
	format, err := ptfile.GetString(f.Root, "format")
	if err != nil || format != FormatVersion {
		return nil, fmt.Errorf("checkpoint %s: not a clipagiqa checkpoint (format %q, want %q)", path, format, FormatVersion)
	}
	sd, _, err := ptfile.StateDict(f.Root)
	if err != nil {
		return nil, fmt.Errorf("checkpoint %s: %w", path, err)
	}
	ck := &Checkpoint{Params: map[string]*ptfile.Tensor{}, Momentum: map[string]*ptfile.Tensor{}}
	for _, n := range paramNames {
		t, ok := sd[n]
		if !ok {
			return nil, fmt.Errorf("checkpoint %s: missing tensor %s", path, n)
		}
		ck.Params[n] = t
		if m, ok := sd["momentum."+n]; ok {
			ck.Momentum[n] = m
		}
	}
	cfgJSON, err := ptfile.GetString(f.Root, "config")
	if err != nil {
		return nil, fmt.Errorf("checkpoint %s: %w", path, err)
	}
	if err := json.Unmarshal([]byte(cfgJSON), &ck.Config); err != nil {
		return nil, fmt.Errorf("checkpoint %s: config: %w", path, err)
	}
	// "clip" is optional (older checkpoints lack it) but must parse if there.
	if clipJSON, err := ptfile.GetString(f.Root, "clip"); err == nil {
		if err := json.Unmarshal([]byte(clipJSON), &ck.CLIP); err != nil {
			return nil, fmt.Errorf("checkpoint %s: clip config: %w", path, err)
		}
	}
	if ep, err := ptfile.GetInt(f.Root, "epoch"); err == nil {
		ck.Epoch = int(ep)
	}
	if ck.Optimizer, err = readOptimizer(f.Root); err != nil {
		return nil, fmt.Errorf("checkpoint %s: %w", path, err)
	}
	if ex, err := ptfile.GetString(f.Root, "extra"); err == nil {
		ck.Extra = ex
	}
	return ck, nil
}

// readOptimizer reads the optional "optimizer" entry: a dict of one SGD
// state dict per module.
func readOptimizer(root any) (map[string]*ptfile.Dict, error) {
	v, err := ptfile.Get(root, "optimizer")
	if err != nil || v == nil {
		return nil, nil // absent: older checkpoints
	}
	d, ok := v.(*ptfile.Dict)
	if !ok {
		return nil, fmt.Errorf("optimizer: not a dict")
	}
	out := map[string]*ptfile.Dict{}
	for _, mod := range optimizerModules {
		sd, ok := d.Get(mod)
		if !ok {
			return nil, fmt.Errorf("optimizer: no state dict for %s", mod)
		}
		if out[mod], ok = sd.(*ptfile.Dict); !ok {
			return nil, fmt.Errorf("optimizer.%s: not a dict", mod)
		}
	}
	return out, nil
}

// Checkpoint captures the model's trainable state (and opt's momentum
// buffers and state dicts, if opt is not nil).
func (m *Model) Checkpoint(opt *Optimizer, epoch int, extra string) (*Checkpoint, error) {
	ck := &Checkpoint{Config: m.Config, CLIP: m.CLIP.Config, Epoch: epoch, Extra: extra,
		Params: map[string]*ptfile.Tensor{}, Momentum: map[string]*ptfile.Tensor{}}
	ck.Config.NCtx = m.nCtx
	if opt != nil {
		sds, err := opt.StateDicts()
		if err != nil {
			return nil, fmt.Errorf("checkpoint: optimizer state: %w", err)
		}
		ck.Optimizer = sds
	}
	for i, p := range m.Params() {
		r, err := torch.ToRaw(p)
		if err != nil {
			return nil, fmt.Errorf("checkpoint %s: %w", paramNames[i], err)
		}
		ck.Params[paramNames[i]] = r
		if opt != nil {
			buf, err := opt.momentum(i)
			if err != nil {
				return nil, err
			}
			if buf != nil {
				r, err := torch.ToRaw(buf)
				buf.Close()
				if err != nil {
					return nil, err
				}
				ck.Momentum[paramNames[i]] = r
			}
		}
	}
	return ck, nil
}

// Save writes our format: dir/model.pt, a torch.save dict that Python's
// torch.load reads ({"state_dict": {prompt_learner.ctx, regression.1.weight,
// …, momentum.<name>}, "format", "config" (JSON), "clip" (JSON), "epoch",
// "categories", "extra"}). The write is atomic.
func (ck *Checkpoint) Save(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var entries []ptfile.NamedTensor
	for _, n := range paramNames {
		entries = append(entries, ptfile.NamedTensor{Name: n, Tensor: ck.Params[n]})
	}
	for _, n := range paramNames {
		if t := ck.Momentum[n]; t != nil {
			entries = append(entries, ptfile.NamedTensor{Name: "momentum." + n, Tensor: t})
		}
	}
	cfg, _ := json.Marshal(ck.Config)
	clipCfg, _ := json.Marshal(ck.CLIP)
	cats := make([]any, len(ck.Config.Categories))
	for i, c := range ck.Config.Categories {
		cats[i] = c
	}
	meta := map[string]any{"format": FormatVersion, "config": string(cfg), "clip": string(clipCfg),
		"epoch": int64(ck.Epoch), "categories": cats, "extra": ck.Extra}
	if ck.Optimizer != nil {
		od := ptfile.NewDict(ptfile.KindDict)
		for _, mod := range optimizerModules {
			od.Set(mod, ck.Optimizer[mod])
		}
		meta["optimizer"] = od
	}
	return ptfile.SaveCheckpoint(filepath.Join(dir, ModelFile), entries, meta)
}

// Apply loads the checkpoint's parameters into m, checking shapes, so that a
// checkpoint of another model gives a clear error.
func (m *Model) Apply(ck *Checkpoint) error {
	for i, p := range m.Params() {
		name := paramNames[i]
		r, ok := ck.Params[name]
		if !ok {
			return fmt.Errorf("checkpoint lacks %s", name)
		}
		if fmt.Sprint(r.Shape) != fmt.Sprint(p.Shape()) {
			return fmt.Errorf("checkpoint tensor %s has shape %v, this model needs %v (checkpoint of another model or CLIP?)", name, r.Shape, p.Shape())
		}
		t, err := rawToDevice(r, m.CLIP.Device())
		if err != nil {
			return fmt.Errorf("checkpoint %s: %w", name, err)
		}
		err = p.CopyFrom(t)
		t.Close()
		if err != nil {
			return fmt.Errorf("checkpoint %s: %w", name, err)
		}
	}
	return nil
}

func rawToDevice(r *ptfile.Tensor, d torch.Device) (*torch.Tensor, error) {
	t, err := torch.FromRaw(r)
	if err != nil {
		return nil, err
	}
	if t.DType() == torch.Float32 && d == torch.CPU {
		return t, nil
	}
	s := torch.NewScope().WithGrad(torch.NoGrad)
	defer s.Close()
	out := s.Keep(s.To(t, torch.Float32, d))
	t.Close()
	return out, s.Err()
}

// FromCheckpoint builds a model on clip from a checkpoint's configuration and
// loads its parameters.
func FromCheckpoint(c *clip.Model, tok Tokenizer, ck *Checkpoint) (*Model, error) {
	if ck.CLIP.EmbedDim != 0 && (ck.CLIP.EmbedDim != c.Config.EmbedDim || ck.CLIP.TransformerWidth != c.Config.TransformerWidth) {
		return nil, fmt.Errorf("checkpoint was trained on a CLIP with embed dim %d and text width %d; this CLIP has %d and %d",
			ck.CLIP.EmbedDim, ck.CLIP.TransformerWidth, c.Config.EmbedDim, c.Config.TransformerWidth)
	}
	cfg := ck.Config
	cfg.CtxInit = "" // ctx comes from the checkpoint
	m, err := New(c, tok, cfg)
	if err != nil {
		return nil, err
	}
	if err := m.Apply(ck); err != nil {
		m.Close()
		return nil, err
	}
	return m, nil
}

// ExportOfficial writes the official CLIP-AGIQA layout under dir so the
// Python code's load_model can read what Go trained:
// dir/{prompt_learner,regression}/model.pth.tar-N plus checkpoint files.
// The optimizer's param_groups hold lr and the run's own hyper-parameters
// (from ck.Optimizer, else the schedule in ck.Extra, else the defaults).
func (ck *Checkpoint) ExportOfficial(dir string, prefix, suffix *ptfile.Tensor, lr float64) error {
	epoch := max(ck.Epoch, 1)
	name := fmt.Sprintf("model.pth.tar-%d", epoch)
	write := func(sub string, entries []ptfile.NamedTensor, params []string) error {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			return err
		}
		state := ptfile.NewDict(ptfile.KindDict)
		idx := make([]any, len(params))
		for i, n := range params {
			idx[i] = int64(i)
			if b := ck.Momentum[n]; b != nil {
				e := ptfile.NewDict(ptfile.KindDict)
				e.Set("momentum_buffer", b)
				state.Set(int64(i), e)
			}
		}
		group, err := ck.exportGroup(sub, lr, idx)
		if err != nil {
			return err
		}
		optim := ptfile.NewDict(ptfile.KindDict)
		optim.Set("state", state)
		optim.Set("param_groups", []any{group})
		meta := map[string]any{"epoch": int64(epoch), "optimizer": optim, "scheduler": nil, "val_result": nil}
		if err := ptfile.SaveCheckpoint(filepath.Join(dir, sub, name), entries, meta); err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dir, sub, "checkpoint"), []byte(name+"\n"), 0o644)
	}
	pl := []ptfile.NamedTensor{{Name: "ctx", Tensor: ck.Params["prompt_learner.ctx"]}}
	if prefix != nil && suffix != nil {
		pl = append(pl, ptfile.NamedTensor{Name: "token_prefix", Tensor: prefix}, ptfile.NamedTensor{Name: "token_suffix", Tensor: suffix})
	}
	if err := write("prompt_learner", pl, []string{"prompt_learner.ctx"}); err != nil {
		return fmt.Errorf("export official: %w", err)
	}
	var reg []ptfile.NamedTensor
	var regNames []string
	for _, n := range paramNames[1:] {
		reg = append(reg, ptfile.NamedTensor{Name: strings.TrimPrefix(n, "regression."), Tensor: ck.Params[n]})
		regNames = append(regNames, n)
	}
	if err := write("regression", reg, regNames); err != nil {
		return fmt.Errorf("export official: %w", err)
	}
	return nil
}

// exportGroup builds module sub's single SGD param_groups entry with lr.
func (ck *Checkpoint) exportGroup(sub string, lr float64, idx []any) (*ptfile.Dict, error) {
	def := DefaultTrainConfig()
	momentum, decay, initial := def.Momentum, def.WeightDecay, def.LR
	var st trainState
	if ck.Extra != "" && json.Unmarshal([]byte(ck.Extra), &st) == nil && st.HasSchedule {
		momentum, decay, initial = st.Momentum, st.WeightDecay, st.LR
	}
	if sd := ck.Optimizer[sub]; sd != nil {
		g, err := singleGroup(sd)
		if err != nil {
			return nil, fmt.Errorf("optimizer.%s: %w", sub, err)
		}
		num := func(k string, into *float64) error {
			if v, ok := g.Get(k); ok {
				f, ok := v.(float64)
				if !ok {
					return fmt.Errorf("optimizer.%s: %s is a %T, not a float", sub, k, v)
				}
				*into = f
			}
			return nil
		}
		for k, p := range map[string]*float64{"momentum": &momentum, "weight_decay": &decay, "initial_lr": &initial} {
			if err := num(k, p); err != nil {
				return nil, err
			}
		}
	}
	group := ptfile.NewDict(ptfile.KindDict)
	for _, kv := range []struct {
		k string
		v any
	}{{"lr", lr}, {"momentum", momentum}, {"dampening", 0.0}, {"weight_decay", decay}, {"nesterov", false},
		{"maximize", false}, {"foreach", nil}, {"differentiable", false}, {"initial_lr", initial}, {"params", idx}} {
		group.Set(kv.k, kv.v)
	}
	return group, nil
}

// singleGroup returns the one entry of a state dict's param_groups.
func singleGroup(sd *ptfile.Dict) (*ptfile.Dict, error) {
	v, ok := sd.Get("param_groups")
	if !ok {
		return nil, fmt.Errorf("no param_groups")
	}
	var items []any
	switch l := v.(type) {
	case []any:
		items = l
	case *ptfile.List:
		items = l.Items
	default:
		return nil, fmt.Errorf("param_groups is a %T, not a list", v)
	}
	if len(items) != 1 {
		return nil, fmt.Errorf("%d param_groups, want 1", len(items))
	}
	g, ok := items[0].(*ptfile.Dict)
	if !ok {
		return nil, fmt.Errorf("param_groups[0] is a %T, not a dict", items[0])
	}
	return g, nil
}
