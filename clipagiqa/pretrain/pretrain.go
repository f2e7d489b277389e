// Package pretrain is Image2Prompt incremental pre-training of a CLIP image
// tower (IP-IQA, ICME 2024): the image tower learns to map each image close,
// in cosine, to the frozen text tower's embedding of the image's own prompt.
// Prompt embeddings are computed once (the text tower never changes); an
// optional filter first drops pairs whose frozen-CLIP cosine is below a
// threshold (the paper kept DiffusionDB pairs above 0.35). The result is a
// whole CLIP written as a torch.save state dict that clip.Load (and so
// `clipagiqa train --clip`) reads.
package pretrain

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"

	"github.com/clipagiqa/clipagiqa/clipagiqa/clip"
	"github.com/clipagiqa/clipagiqa/clipagiqa/imageprep"
	"github.com/clipagiqa/clipagiqa/clipagiqa/tokenizer"
	"github.com/clipagiqa/clipagiqa/torch"
	"github.com/clipagiqa/clipagiqa/torch/optim"
)

// Pair is one image and the prompt that describes it.
type Pair struct {
	Image  string // path as given in the table (relative to the root)
	Path   string // resolved file path
	Prompt string
}

// ReadPairs reads a CSV table with columns image and prompt (a header row
// names them; other columns are ignored). Image names are relative to root
// and may not leave it.
func ReadPairs(table, root string) ([]Pair, error) {
	f, err := os.Open(table)
	if err != nil {
		return nil, fmt.Errorf("pretrain: %w", err)
	}
	defer f.Close()
	r := csv.NewReader(f)
	r.FieldsPerRecord = -1
	head, err := r.Read()
	if err != nil {
		return nil, fmt.Errorf("pretrain: %s: header: %w", table, err)
	}
	col := map[string]int{}
	for i, h := range head {
		col[strings.TrimSpace(strings.ToLower(h))] = i
	}
	ic, ok1 := col["image"]
	pc, ok2 := col["prompt"]
	if !ok1 || !ok2 {
		return nil, fmt.Errorf("pretrain: %s: header %q lacks the columns image and prompt", table, strings.Join(head, ","))
	}
	var out []Pair
	for line := 2; ; line++ {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("pretrain: %s: %w", table, err)
		}
		if len(rec) <= max(ic, pc) {
			return nil, fmt.Errorf("pretrain: %s line %d: %d fields, want at least %d", table, line, len(rec), max(ic, pc)+1)
		}
		name, prompt := strings.TrimSpace(rec[ic]), rec[pc]
		if name == "" || !filepath.IsLocal(filepath.FromSlash(name)) {
			return nil, fmt.Errorf("pretrain: %s line %d: image %q is not a path inside the root", table, line, name)
		}
		if strings.TrimSpace(prompt) == "" {
			return nil, fmt.Errorf("pretrain: %s line %d: image %s has an empty prompt", table, line, name)
		}
		out = append(out, Pair{Image: name, Path: filepath.Join(root, filepath.FromSlash(name)), Prompt: prompt})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("pretrain: %s: no pairs", table)
	}
	return out, nil
}

// Options configure Run. Zero values take the defaults of DefaultOptions.
type Options struct {
	Epochs      int
	BatchSize   int
	LR          float64 // AdamW learning rate, constant
	WeightDecay float64 // AdamW weight decay (biases and norms included, as the official loss's optimizer over visual.parameters())
	// MinCosine drops, before training, pairs whose cosine between the
	// frozen CLIP's image and prompt features is below it (0: keep all).
	MinCosine float64
	Seed      uint64
	// Progress, when set, is called after every step.
	Progress func(Progress)
}

// DefaultOptions are the pre-training defaults: AdamW lr 1e-4, no weight
// decay, batch 32, 10 epochs.
func DefaultOptions() Options {
	return Options{Epochs: 10, BatchSize: 32, LR: 1e-4}
}

// Progress is the state after one step.
type Progress struct {
	Epoch, Epochs int // 1-based epoch
	Step, Steps   int // 1-based step within the epoch
	Loss          float64
}

// EpochStats is one epoch's mean loss (1 − mean cosine).
type EpochStats struct {
	Epoch int     `json:"epoch"`
	Loss  float64 `json:"loss"`
}

// Result says what Run did.
type Result struct {
	Pairs, Kept  int          // pairs read, pairs kept by the cosine filter
	MeanCosine0  float64      // mean frozen-CLIP cosine of the kept pairs before training
	MeanCosine   float64      // the same after training (eval mode)
	Epochs       []EpochStats // per epoch
	Dropped      []Pair       // below MinCosine
	DroppedCos   []float64
	ParamTensors int // image-tower tensors trained
}

func (o *Options) normalise() error {
	d := DefaultOptions()
	if o.Epochs == 0 {
		o.Epochs = d.Epochs
	}
	if o.BatchSize == 0 {
		o.BatchSize = d.BatchSize
	}
	if o.LR == 0 {
		o.LR = d.LR
	}
	switch {
	case o.Epochs < 0:
		return fmt.Errorf("pretrain: %d epochs", o.Epochs)
	case o.BatchSize < 1:
		return fmt.Errorf("pretrain: batch size %d", o.BatchSize)
	case !(o.LR > 0) || math.IsInf(o.LR, 0):
		return fmt.Errorf("pretrain: learning rate %v", o.LR)
	case o.WeightDecay < 0:
		return fmt.Errorf("pretrain: weight decay %v", o.WeightDecay)
	case o.MinCosine < -1 || o.MinCosine > 1:
		return fmt.Errorf("pretrain: min cosine %v outside [-1, 1]", o.MinCosine)
	}
	return nil
}

// imageTower is the part of an image encoder pre-training needs beyond
// Encode: BatchNorm train/eval switching (ModifiedResNet has it).
type imageTower interface {
	SetTraining(bool)
}

// Run pre-trains c's image tower on pairs in place. The text tower stays
// frozen. Images go through CLIP's own preprocessing at its resolution.
// Lock the calling goroutine to its OS thread for bit-repeatable runs (see
// train.Run).
func Run(ctx context.Context, c *clip.Model, tok *tokenizer.Tokenizer, pairs []Pair, opts Options) (Result, error) {
	var res Result
	if err := opts.normalise(); err != nil {
		return res, err
	}
	res.Pairs = len(pairs)
	if _, ok := c.Visual.(*clip.FusedEncoder); ok {
		// The fused ViT encoder has no backward; a ResNet's fused eval
		// trunk steps aside for training-mode and autograd forwards itself.
		c.DisableFused()
	}
	tower, _ := c.Visual.(imageTower)
	if tower != nil {
		tower.SetTraining(false)
	}
	prep := imageprep.DefaultOptions(c.Config.ImageResolution)
	prompts := make([]string, len(pairs))
	for i, p := range pairs {
		prompts[i] = p.Prompt
	}
	emb, err := promptEmbeddings(c, tok, prompts)
	if err != nil {
		return res, err
	}
	e := int(c.Config.EmbedDim)

	// Frozen-CLIP cosines: the filter, and the starting point.
	cos0, err := Cosines(ctx, c, pairs, emb, prep, opts.BatchSize)
	if err != nil {
		return res, err
	}
	var kept []int
	var sum float64
	for i, v := range cos0 {
		if v < opts.MinCosine && opts.MinCosine != 0 {
			res.Dropped, res.DroppedCos = append(res.Dropped, pairs[i]), append(res.DroppedCos, v)
			continue
		}
		kept = append(kept, i)
		sum += v
	}
	res.Kept = len(kept)
	if len(kept) == 0 {
		return res, fmt.Errorf("pretrain: no pair has a frozen-CLIP cosine ≥ %g (%d pairs)", opts.MinCosine, len(pairs))
	}
	res.MeanCosine0 = sum / float64(len(kept))

	var params []optim.Param
	err = torch.WalkTagged(c.Visual, "visual", func(f torch.TaggedField) error {
		if f.Buffer || *f.Ptr == nil || !(*f.Ptr).DType().IsFloat() {
			return nil
		}
		params = append(params, optim.Param{Name: f.Name, T: *f.Ptr})
		return (*f.Ptr).SetRequiresGrad(true)
	})
	if err != nil {
		return res, fmt.Errorf("pretrain: image tower parameters: %w", err)
	}
	defer func() {
		for _, p := range params {
			_ = p.T.SetRequiresGrad(false)
		}
	}()
	res.ParamTensors = len(params)
	ao := optim.AdamWDefaults()
	ao.LR, ao.WeightDecay = opts.LR, opts.WeightDecay
	opt, err := optim.NewAdamW(optim.Single(params), ao)
	if err != nil {
		return res, fmt.Errorf("pretrain: %w", err)
	}
	defer opt.Close()

	rng := opts.Seed*0x9e3779b97f4a7c15 + 1
	steps := (len(kept) + opts.BatchSize - 1) / opts.BatchSize
	live := int64(-1) // set after the first step, which creates gradients and AdamW state
	for ep := 1; ep <= opts.Epochs; ep++ {
		order := append([]int(nil), kept...)
		for i := len(order) - 1; i > 0; i-- { // seeded Fisher–Yates (splitmix64)
			rng += 0x9e3779b97f4a7c15
			z := rng
			z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
			z = (z ^ (z >> 27)) * 0x94d049bb133111eb
			j := int((z ^ (z >> 31)) % uint64(i+1))
			order[i], order[j] = order[j], order[i]
		}
		var lossSum float64
		for st := 0; st < steps; st++ {
			if err := ctx.Err(); err != nil {
				return res, err
			}
			idx := order[st*opts.BatchSize : min((st+1)*opts.BatchSize, len(order))]
			l, err := step(c, tower, opt, pairs, emb, e, idx, prep)
			if err != nil {
				return res, fmt.Errorf("pretrain: epoch %d step %d: %w", ep, st+1, err)
			}
			lossSum += l * float64(len(idx))
			if opts.Progress != nil {
				opts.Progress(Progress{Epoch: ep, Epochs: opts.Epochs, Step: st + 1, Steps: steps, Loss: l})
			}
			if live < 0 {
				live = torch.LiveTensors()
			} else if n := torch.LiveTensors(); n != live {
				return res, fmt.Errorf("pretrain: %d live tensors after a step, %d before: a leak", n, live)
			}
		}
		res.Epochs = append(res.Epochs, EpochStats{Epoch: ep, Loss: lossSum / float64(len(kept))})
	}
	if tower != nil {
		tower.SetTraining(false)
	}
	keptPairs := make([]Pair, len(kept))
	keptEmb := make([]float32, 0, len(kept)*e)
	for i, k := range kept {
		keptPairs[i] = pairs[k]
		keptEmb = append(keptEmb, emb[k*e:(k+1)*e]...)
	}
	cos1, err := Cosines(ctx, c, keptPairs, keptEmb, prep, opts.BatchSize)
	if err != nil {
		return res, err
	}
	sum = 0
	for _, v := range cos1 {
		sum += v
	}
	res.MeanCosine = sum / float64(len(cos1))
	return res, nil
}

func step(c *clip.Model, tower imageTower, opt *optim.Adam, pairs []Pair, emb []float32, e int, idx []int, prep imageprep.Options) (float64, error) {
	paths := make([]string, len(idx))
	target := make([]float32, 0, len(idx)*e)
	for i, k := range idx {
		paths[i] = pairs[k].Path
		target = append(target, emb[k*e:(k+1)*e]...)
	}
	px, err := imageprep.LoadBatch(paths, prep)
	if err != nil {
		return 0, err
	}
	n, r := int64(len(idx)), int64(prep.Size)
	s := torch.NewScope()
	defer s.Close()
	if tower != nil {
		tower.SetTraining(true)
		defer tower.SetTraining(false)
	}
	dev := c.Device()
	pixels := s.To(s.FromFloat32(px, n, 3, r, r), torch.Float32, dev)
	tgt := s.To(s.FromFloat32(target, n, int64(e)), torch.Float32, dev)
	out := c.EncodeImage(s, pixels)
	ones := s.To(s.Full(1, torch.Float32, n), torch.Float32, dev)
	loss := s.CosineEmbeddingLoss(out, tgt, ones, 0)
	if err := s.Err(); err != nil {
		return 0, err
	}
	l, err := loss.Item()
	if err != nil {
		return 0, err
	}
	if math.IsNaN(l) || math.IsInf(l, 0) {
		return 0, fmt.Errorf("loss is %v", l)
	}
	if err := loss.Backward(); err != nil {
		return 0, err
	}
	if err := opt.Step(); err != nil {
		return 0, err
	}
	return l, opt.ZeroGrad()
}

// promptEmbeddings encodes every prompt once with the frozen text tower
// (tokenized with truncation at the context length): [N·E] row-major.
func promptEmbeddings(c *clip.Model, tok *tokenizer.Tokenizer, prompts []string) ([]float32, error) {
	const chunk = 256
	var out []float32
	for i := 0; i < len(prompts); i += chunk {
		ids, err := tok.Tokenize(prompts[i:min(i+chunk, len(prompts))], int(c.Config.ContextLength), true)
		if err != nil {
			return nil, fmt.Errorf("pretrain: tokenize: %w", err)
		}
		s := torch.NewScope().WithGrad(torch.InferenceMode)
		v, err := s.To(c.EncodeText(s, ids), torch.Float32, torch.CPU).Float32s()
		if err == nil {
			err = s.Err()
		}
		s.Close()
		if err != nil {
			return nil, fmt.Errorf("pretrain: prompt embeddings: %w", err)
		}
		out = append(out, v...)
	}
	return out, nil
}

// Cosines are the cosines between c's image features (eval mode) and the
// prompt embeddings emb ([N·E], one row per pair).
func Cosines(ctx context.Context, c *clip.Model, pairs []Pair, emb []float32, prep imageprep.Options, batch int) ([]float64, error) {
	e := int(c.Config.EmbedDim)
	out := make([]float64, 0, len(pairs))
	for i := 0; i < len(pairs); i += batch {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		j := min(i+batch, len(pairs))
		paths := make([]string, j-i)
		for k := range paths {
			paths[k] = pairs[i+k].Path
		}
		px, err := imageprep.LoadBatch(paths, prep)
		if err != nil {
			return nil, fmt.Errorf("pretrain: %w", err)
		}
		s := torch.NewScope().WithGrad(torch.InferenceMode)
		n, r := int64(j-i), int64(prep.Size)
		img := s.Normalize(c.EncodeImage(s, s.To(s.FromFloat32(px, n, 3, r, r), torch.Float32, c.Device())), -1)
		txt := s.Normalize(s.To(s.FromFloat32(emb[i*e:j*e], n, int64(e)), torch.Float32, c.Device()), -1)
		v, err := s.To(s.Sum(s.Mul(img, txt), false, -1), torch.Float32, torch.CPU).Float32s()
		if err == nil {
			err = s.Err()
		}
		s.Close()
		if err != nil {
			return nil, fmt.Errorf("pretrain: cosines: %w", err)
		}
		for _, x := range v {
			out = append(out, float64(x))
		}
	}
	return out, nil
}

// Save writes c as a torch.save state dict under OpenAI's names (visual.*,
// token_embedding.weight, …), atomically. With half, floating-point
// tensors other than norms are stored as float16 (half the bytes; clip.Load
// converts back to its compute precision).
func Save(path string, c *clip.Model, half bool) error {
	names := []string{}
	tensors := map[string]*torch.Tensor{}
	s := torch.NewScope()
	defer s.Close()
	add := func(f torch.TaggedField) error {
		t := *f.Ptr
		if t == nil {
			return nil
		}
		dt := t.DType()
		if half && dt.IsFloat() && !keepFloat32(f.Name) {
			dt = torch.Float16
		}
		names = append(names, f.Name)
		tensors[f.Name] = s.To(t, dt, torch.CPU)
		return nil
	}
	if err := torch.WalkTagged(c.Visual, "visual", add); err != nil {
		return fmt.Errorf("save CLIP %s: %w", path, err)
	}
	if err := torch.WalkTagged(c, "", add); err != nil {
		return fmt.Errorf("save CLIP %s: %w", path, err)
	}
	if err := s.Err(); err != nil {
		return fmt.Errorf("save CLIP %s: %w", path, err)
	}
	return torch.SaveStateDict(path, names, tensors)
}

// keepFloat32 names the tensors kept in float32 by Save with half: norms
// (LayerNorm, BatchNorm and its running statistics), whose small ranges
// fp16 would coarsen, and logit_scale.
func keepFloat32(name string) bool {
	return strings.Contains(name, "ln_") || strings.Contains(name, ".bn") || strings.HasPrefix(name, "bn") ||
		strings.Contains(name, "downsample.1.") || strings.HasSuffix(name, "logit_scale")
}
