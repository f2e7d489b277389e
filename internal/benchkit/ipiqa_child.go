package benchkit

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/clipagiqa/clipagiqa/clipagiqa/clip"
	"github.com/clipagiqa/clipagiqa/clipagiqa/ipiqa"
	"github.com/clipagiqa/clipagiqa/clipagiqa/train/ipiqatrain"
	"github.com/clipagiqa/clipagiqa/internal/npy"
	"github.com/clipagiqa/clipagiqa/torch"
	"github.com/clipagiqa/clipagiqa/torch/optim"
)

// ResNetCLIPGeometry sizes a random CLIP ResNet state dict.
type ResNetCLIPGeometry struct {
	Width      int64 // stem width (RN50: 64); the attnpool width is 32×Width
	Blocks     []int // Bottlenecks per stage (RN50: 3, 4, 6, 3)
	Embed      int64 // joint embedding (RN50: 1024)
	TextWidth  int64 // text transformer width (RN50: 512)
	TextLayers int   // text transformer blocks (RN50: 12)
	LogitScale bool  // also write logit_scale (OpenAI's files have it)
}

// RN50Geometry is OpenAI RN50's.
var RN50Geometry = ResNetCLIPGeometry{Width: 64, Blocks: []int{3, 4, 6, 3}, Embed: 1024, TextWidth: 512, TextLayers: 12}

// RN50StateDict is a CLIP state dict with OpenAI RN50.pt's tensor names and
// shapes and random weights (RandomResNetCLIP), for benchmarks at full
// size without the 244 MB download.
func RN50StateDict() (*torch.StateDict, error) {
	return RandomResNetCLIP(RN50Geometry)
}

// RandomResNetCLIP is a CLIP ResNet state dict of geometry g under
// OpenAI's tensor names, with weights N(0, 0.02²) from the global
// generator and BatchNorm and LayerNorm at identity.
func RandomResNetCLIP(g ResNetCLIPGeometry) (*torch.StateDict, error) {
	s := torch.NewScope().WithGrad(torch.NoGrad)
	defer s.Close()
	sd := torch.NewStateDict()
	add := func(name string, t *torch.Tensor) { sd.Set(name, s.Keep(t)) }
	w := func(name string, shape ...int64) { add(name, s.MulScalar(s.Randn(torch.Float32, shape...), 0.02)) }
	norm := func(name string, c int64, stats bool) {
		add(name+".weight", s.Full(1, torch.Float32, c))
		add(name+".bias", s.Zeros(torch.Float32, c))
		if stats {
			add(name+".running_mean", s.Zeros(torch.Float32, c))
			add(name+".running_var", s.Full(1, torch.Float32, c))
		}
	}
	width, embed, d, txt := g.Width, g.Embed, 32*g.Width, g.TextWidth
	w("visual.conv1.weight", width/2, 3, 3, 3)
	norm("visual.bn1", width/2, true)
	w("visual.conv2.weight", width/2, width/2, 3, 3)
	norm("visual.bn2", width/2, true)
	w("visual.conv3.weight", width, width/2, 3, 3)
	norm("visual.bn3", width, true)
	in := width
	for st, n := range g.Blocks {
		p := width << st
		for i := range n {
			pre := fmt.Sprintf("visual.layer%d.%d.", st+1, i)
			w(pre+"conv1.weight", p, in, 1, 1)
			norm(pre+"bn1", p, true)
			w(pre+"conv2.weight", p, p, 3, 3)
			norm(pre+"bn2", p, true)
			w(pre+"conv3.weight", 4*p, p, 1, 1)
			norm(pre+"bn3", 4*p, true)
			if i == 0 {
				w(pre+"downsample.0.weight", 4*p, in, 1, 1)
				norm(pre+"downsample.1", 4*p, true)
			}
			in = 4 * p
		}
	}
	w("visual.attnpool.positional_embedding", 50, d)
	for _, n := range []string{"q", "k", "v"} {
		w("visual.attnpool."+n+"_proj.weight", d, d)
		w("visual.attnpool."+n+"_proj.bias", d)
	}
	w("visual.attnpool.c_proj.weight", embed, d)
	w("visual.attnpool.c_proj.bias", embed)
	w("token_embedding.weight", 49408, txt)
	w("positional_embedding", 77, txt)
	for i := range g.TextLayers {
		pre := fmt.Sprintf("transformer.resblocks.%d.", i)
		w(pre+"attn.in_proj_weight", 3*txt, txt)
		w(pre+"attn.in_proj_bias", 3*txt)
		w(pre+"attn.out_proj.weight", txt, txt)
		w(pre+"attn.out_proj.bias", txt)
		norm(pre+"ln_1", txt, false)
		w(pre+"mlp.c_fc.weight", 4*txt, txt)
		w(pre+"mlp.c_fc.bias", 4*txt)
		w(pre+"mlp.c_proj.weight", txt, 4*txt)
		w(pre+"mlp.c_proj.bias", txt)
		norm(pre+"ln_2", txt, false)
	}
	norm("ln_final", txt, false)
	w("text_projection", txt, embed)
	if g.LogitScale {
		add("logit_scale", s.Full(math.Log(1/0.07), torch.Float32))
	}
	if err := s.Err(); err != nil {
		sd.Close()
		return nil, fmt.Errorf("random ResNet CLIP state dict: %w", err)
	}
	return sd, nil
}

// NewRN50IPIQA is IP-IQA at the official settings (512×512, two outputs,
// head dropout 0.5) on a random RN50 (RN50StateDict).
func NewRN50IPIQA() (*ipiqa.Model, error) {
	sd, err := RN50StateDict()
	if err != nil {
		return nil, err
	}
	defer sd.Close()
	c, err := clip.FromStateDict(sd, clip.Options{})
	if err != nil {
		return nil, err
	}
	m, err := ipiqa.New(c, ipiqa.Options{InputResolution: IPIQAResolution, Outputs: 2, Dropout: 0.5})
	if err != nil {
		c.Close()
		return nil, err
	}
	return m, nil
}

// IPIQAStep is one official training step on images [B, 3, S, S] and targets
// [B, 2], as the generic trainer runs it: forward in training mode, MSE,
// backward, AdamW step, zero_grad.
func IPIQAStep(m *ipiqa.Model, opt optim.Optimizer, images, targets *torch.Tensor, prompts []string) error {
	s := torch.NewScope()
	defer s.Close()
	loss := s.MSELoss(m.Forward(s, images, prompts, true), targets)
	if err := s.Err(); err != nil {
		return err
	}
	if err := loss.Backward(); err != nil {
		return fmt.Errorf("backward: %w", err)
	}
	if err := opt.Step(); err != nil {
		return err
	}
	return opt.ZeroGrad()
}

// ipiqaServer is the Go side of the IP-IQA benchmark in its child process.
type ipiqaServer struct {
	m       *ipiqa.Model
	opt     *optim.Adam
	prompts []string
}

type ipiqaRequest struct {
	Op      string   `json:"op"`
	Threads int      `json:"threads"`
	Prompts []string `json:"prompts"`
	State   string   `json:"state"`
	Pixels  string   `json:"pixels"`
	Batch   int      `json:"batch"`
	Iters   int      `json:"iters"`
	Warmup  int      `json:"warmup"`
	// HostCacheMiB sets up torch's host cache for the Go side (load only;
	// absent or negative: libtorch's own allocator; 0: no idle cap beyond
	// the cache's peak rule).
	HostCacheMiB *int64 `json:"host_cache_mib"`
}

// ServeIPIQA answers bench/ipiqa_reference.py's line protocol (load,
// features, score, train_step, reset_hwm, status, quit; and empty_cache,
// Go's alone) on in/out with the Go model, so that the driver treats both
// sides alike. A failed request is an ok=false reply, not the end of the
// process.
func ServeIPIQA(ctx context.Context, in io.Reader, out io.Writer) error {
	srv := &ipiqaServer{}
	defer srv.close()
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	enc := json.NewEncoder(out)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		var req ipiqaRequest
		rep := map[string]any{"ok": true}
		err := json.Unmarshal([]byte(line), &req)
		if err == nil {
			err = ctx.Err()
		}
		if err == nil {
			if req.Op == "quit" {
				return enc.Encode(rep)
			}
			err = srv.handle(req, rep)
		}
		if err == nil {
			rep["hwm_kb"], err = PeakRSSKB()
		}
		if err == nil {
			rep["rss_kb"], err = RSSKB()
		}
		if err == nil {
			rep["host_cache"], err = torch.ReadHostCacheStats()
		}
		if err != nil {
			rep = map[string]any{"ok": false, "error": err.Error()}
		}
		if err := enc.Encode(rep); err != nil {
			return fmt.Errorf("ipiqa child: %w", err)
		}
	}
	return sc.Err()
}

func (v *ipiqaServer) close() {
	if v.opt != nil {
		v.opt.Close()
	}
	v.m.Close()
}

func (v *ipiqaServer) handle(req ipiqaRequest, rep map[string]any) error {
	if req.Op != "load" && req.Op != "reset_hwm" && req.Op != "status" && req.Op != "empty_cache" && v.m == nil {
		return fmt.Errorf("%s: no model loaded (send a load request first)", req.Op)
	}
	switch req.Op {
	case "load":
		return v.load(req, rep)
	case "reset_hwm":
		rep["hwm_reset"] = ResetPeakRSS()
	case "empty_cache":
		// A new measurement starts without the idle blocks of the last one
		// (and the cache's peak rule restarts from what is in use).
		return torch.EmptyHostCache()
	case "status":
	case "features":
		f, err := v.features(req.Pixels)
		rep["features"] = f
		return err
	case "profile":
		if req.Batch <= 0 || req.Batch > len(v.prompts) {
			return fmt.Errorf("profile: batch %d, want 1..%d", req.Batch, len(v.prompts))
		}
		ph, err := v.profile(req.Batch)
		rep["phases"] = ph
		return err
	case "score", "train_step":
		if req.Batch <= 0 || req.Batch > len(v.prompts) {
			return fmt.Errorf("%s: batch %d, want 1..%d (the prompts sent at load)", req.Op, req.Batch, len(v.prompts))
		}
		// Random pixels and targets, made before the clock starts.
		in := torch.NewScope().WithGrad(torch.NoGrad)
		defer in.Close()
		px, y := inputs(in, req.Batch)
		if err := in.Err(); err != nil {
			return err
		}
		f := func() error { return v.score(px, req.Batch) }
		if req.Op == "train_step" {
			f = func() error { return IPIQAStep(v.m, v.opt, px, y, v.prompts[:req.Batch]) }
		}
		var times, cpu []float64
		for i := range req.Warmup + req.Iters {
			t, c := time.Now(), cpuSeconds()
			if err := f(); err != nil {
				return fmt.Errorf("%s: %w", req.Op, err)
			}
			if i >= req.Warmup {
				times = append(times, time.Since(t).Seconds())
				cpu = append(cpu, cpuSeconds()-c)
			}
		}
		rep["times"], rep["cpu"] = times, cpu
	default:
		return fmt.Errorf("unknown op %q", req.Op)
	}
	return nil
}

func (v *ipiqaServer) load(req ipiqaRequest, rep map[string]any) error {
	if v.m != nil {
		return errors.New("load: a model is already loaded")
	}
	if req.Threads > 0 {
		if err := torch.SetNumThreads(req.Threads); err != nil {
			return err
		}
		torch.SetBLASThreads(req.Threads)
	}
	if c := req.HostCacheMiB; c != nil && *c >= 0 {
		if err := torch.EnableHostCache(torch.HostCache{IdleLimitBytes: *c << 20}); err != nil {
			return err
		}
	}
	t := time.Now()
	m, err := NewRN50IPIQA()
	if err != nil {
		return err
	}
	if req.State != "" {
		// Strict: every tensor comes from the reference's weights.
		if _, err := m.Store().Load(req.State, true); err != nil {
			m.Close()
			return fmt.Errorf("load %s: %w", req.State, err)
		}
	}
	opt, err := ipiqatrain.NewOptimizer(m, ipiqatrain.OfficialSchedule())
	if err != nil {
		m.Close()
		return err
	}
	v.m, v.opt, v.prompts = m, opt, req.Prompts
	// The file's bytes were read into the Go heap; a long training process
	// would hold them until a collection that may never come (the Go heap
	// stays small), so give them back now, as a trainer should after load.
	debug.FreeOSMemory()
	ids, err := m.Tokenize(req.Prompts)
	if err != nil {
		return err
	}
	var params, trainable int64
	for _, p := range m.Store().Parameters() {
		params += p.T.Numel()
	}
	for _, p := range m.Store().Trainable() {
		trainable += p.T.Numel()
	}
	rep["load_s"] = time.Since(t).Seconds()
	rep["torch"] = torch.TorchVersion()
	rep["config"] = map[string]any{"Params": params, "Trainable": trainable, "EOTs": clip.EOTIndices(ids)}
	return nil
}

func (v *ipiqaServer) features(path string) ([]float64, error) {
	a, err := npy.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if len(a.Shape) != 4 || a.F32 == nil || int(a.Shape[0]) > len(v.prompts) {
		return nil, fmt.Errorf("features: pixels %s have shape %v, want float32 [N≤%d 3 S S]", path, a.Shape, len(v.prompts))
	}
	s := torch.NewScope().WithGrad(torch.NoGrad)
	defer s.Close()
	scores := v.m.Forward(s, s.FromFloat32(a.F32, a.Shape...), v.prompts[:a.Shape[0]], false)
	if err := s.Err(); err != nil {
		return nil, err
	}
	f, err := scores.Float32s()
	if err != nil {
		return nil, err
	}
	out := make([]float64, len(f))
	for i, x := range f {
		out[i] = float64(x)
	}
	return out, nil
}

// inputs are random pixels [B, 3, S, S] and MOS-like targets in [1, 5).
func inputs(s *torch.Scope, batch int) (px, targets *torch.Tensor) {
	n := int64(batch)
	px = s.Randn(torch.Float32, n, 3, IPIQAResolution, IPIQAResolution)
	targets = s.AddScalar(s.MulScalar(s.Rand(torch.Float32, n, 2), 4), 1)
	return px, targets
}

// cpuSeconds is this process's user + system CPU time, all threads.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return math.NaN()
	}
	return float64(ru.Utime.Sec+ru.Stime.Sec) + float64(ru.Utime.Usec+ru.Stime.Usec)/1e6
}

// score is one eval-mode forward of pixels px [batch, 3, S, S].
func (v *ipiqaServer) score(px *torch.Tensor, batch int) error {
	s := torch.NewScope().WithGrad(torch.InferenceMode)
	defer s.Close()
	v.m.Forward(s, px, v.prompts[:batch], false)
	return s.Err()
}

// profile times the parts of a scoring call (text tower on the distinct
// prompts, ResNet, the whole call) and of a training step (forward,
// backward, AdamW step + zero_grad), as bench/ipiqa_reference.py's profile.
func (v *ipiqaServer) profile(batch int) (map[string]float64, error) {
	out := map[string]float64{}
	in := torch.NewScope().WithGrad(torch.NoGrad)
	defer in.Close()
	px, y := inputs(in, batch)
	prompts := v.prompts[:batch]
	ids, err := v.m.Tokenize(prompts)
	if err != nil {
		return nil, err
	}
	rn, ok := v.m.CLIP().Visual.(*clip.ModifiedResNet)
	if !ok {
		return nil, errors.New("profile: not a ResNet CLIP")
	}
	timed := func(name string, f func(s *torch.Scope)) error {
		s := torch.NewScope().WithGrad(torch.InferenceMode)
		defer s.Close()
		t := time.Now()
		f(s)
		out[name] = time.Since(t).Seconds()
		return s.Err()
	}
	for _, p := range []struct {
		name string
		f    func(s *torch.Scope)
	}{
		{"text", func(s *torch.Scope) { v.m.CLIP().EncodeText(s, uniqueRows(ids)) }},
		{"resnet", func(s *torch.Scope) { rn.FeatureMap(s, px) }},
		{"score", func(s *torch.Scope) { v.m.Forward(s, px, prompts, false) }},
	} {
		if err := timed(p.name, p.f); err != nil {
			return nil, err
		}
	}
	s := torch.NewScope()
	defer s.Close()
	t := time.Now()
	loss := s.MSELoss(v.m.Forward(s, px, prompts, true), y)
	if err := s.Err(); err != nil {
		return nil, err
	}
	out["forward"] = time.Since(t).Seconds()
	t = time.Now()
	if err := loss.Backward(); err != nil {
		return nil, err
	}
	out["backward"] = time.Since(t).Seconds()
	t = time.Now()
	if err := v.opt.Step(); err != nil {
		return nil, err
	}
	if err := v.opt.ZeroGrad(); err != nil {
		return nil, err
	}
	out["optimizer"] = time.Since(t).Seconds()
	return out, nil
}

// uniqueRows are the distinct rows of ids, in first-seen order (what
// ipiqa.Model encodes once per batch).
func uniqueRows(ids [][]int64) [][]int64 {
	seen := map[string]bool{}
	var out [][]int64
	for _, r := range ids {
		if k := fmt.Sprint(r); !seen[k] {
			seen[k] = true
			out = append(out, r)
		}
	}
	return out
}
