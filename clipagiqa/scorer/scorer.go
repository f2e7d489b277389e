// Package scorer runs a registered scoring method (package method) on a
// CLIP for many concurrent callers: each caller decodes and preprocesses
// in its own goroutine, one batching goroutine groups their images into
// device batches, with a bounded queue, cancellation and statistics. It
// knows no model: the head comes from the registry by name.
package scorer

import (
	"context"
	"errors"
	"fmt"
	"image"
	"math"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/clipagiqa/clipagiqa/clipagiqa/clip"
	"github.com/clipagiqa/clipagiqa/clipagiqa/imageprep"
	"github.com/clipagiqa/clipagiqa/clipagiqa/method"
	"github.com/clipagiqa/clipagiqa/clipagiqa/tokenizer"
	"github.com/clipagiqa/clipagiqa/torch"
)

// Scorer errors; returned errors wrap them (test with errors.Is).
var (
	// ErrOverloaded: the bounded queue is full; retry later.
	ErrOverloaded = errors.New("clipagiqa: scorer overloaded (queue full)")
	// ErrClosed: the scorer was closed.
	ErrClosed = errors.New("clipagiqa: scorer closed")
	// ErrInvalidImage: the input could not be decoded or preprocessed. The error
	// also wraps imageprep's cause (imageprep.ErrTooManyPixels, ErrTruncated, ...).
	ErrInvalidImage = errors.New("clipagiqa: invalid image")
	// ErrNoPrompt: the method scores an image with its prompt (UsesPrompt)
	// and none, or an empty one, was given.
	ErrNoPrompt = errors.New("clipagiqa: the method needs the image's prompt")
)

// Batching defaults.
const (
	DefaultMaxBatch = 32
	DefaultMaxWait  = 5 * time.Millisecond
)

type scorerConfig struct {
	device     torch.Device
	precision  torch.DType
	maxBatch   int
	maxWait    time.Duration
	queueSize  int
	maxPixels  int64
	threads    int
	epoch      int
	method     string
	preprocess int
	fused      bool
	runHook    func(n int) // tests: called by the batcher before each batch
}

// Option configures Load.
type Option func(*scorerConfig)

// WithDevice picks the compute device (default CPU).
func WithDevice(d torch.Device) Option { return func(c *scorerConfig) { c.device = d } }

// WithPrecision sets CLIP's compute precision (default float32; fp16/bf16 on CUDA).
func WithPrecision(dt torch.DType) Option { return func(c *scorerConfig) { c.precision = dt } }

// WithMaxBatch caps the images per device batch (default 32).
func WithMaxBatch(n int) Option { return func(c *scorerConfig) { c.maxBatch = n } }

// WithMaxWait is how long the first request of a batch waits for company
// (default 5ms; 0 takes only what is already queued).
func WithMaxWait(d time.Duration) Option { return func(c *scorerConfig) { c.maxWait = d } }

// WithQueueSize bounds the requests waiting for the device (default 8×max
// batch); beyond it calls fail fast with ErrOverloaded.
func WithQueueSize(n int) Option { return func(c *scorerConfig) { c.queueSize = n } }

// WithMaxPixels refuses images whose header declares more pixels (default
// imageprep.DefaultMaxPixels), before any pixel memory is allocated.
func WithMaxPixels(n int64) Option { return func(c *scorerConfig) { c.maxPixels = n } }

// WithFused runs CLIP through its fused native CPU paths (clip.Model.EnableFused):
// same numbers to float32 rounding, faster, with activation buffers kept
// between batches. No effect on CUDA or in half precision.
func WithFused(on bool) Option { return func(c *scorerConfig) { c.fused = on } }

// WithThreads sets libtorch's intra-op threads (process-wide; 0 keeps the default).
func WithThreads(n int) Option { return func(c *scorerConfig) { c.threads = n } }

// WithEpoch picks the epoch of an official checkpoint directory (0: the last).
func WithEpoch(n int) Option { return func(c *scorerConfig) { c.epoch = n } }

// WithMethod picks a registered method by name (method.Names; the root
// package's LoadScorer defaults to CLIP-AGIQA).
func WithMethod(m string) Option { return func(c *scorerConfig) { c.method = m } }

// WithPreprocessWorkers bounds how many images are decoded and resized at once
// (default 2×GOMAXPROCS), which bounds the memory decoding can take.
func WithPreprocessWorkers(n int) Option { return func(c *scorerConfig) { c.preprocess = n } }

// Stats are cumulative counters of a Scorer.
type Stats struct {
	MaxBatch     int      // configured max batch
	Batches      uint64   // device batches run
	Images       uint64   // images run on the device
	BatchSizes   []uint64 // BatchSizes[n]: batches of n images (len MaxBatch+1)
	BatchSeconds float64  // time spent in device batches
	QueueDepth   int      // requests waiting for the device now
	Overloaded   uint64   // requests refused with ErrOverloaded
	Dropped      uint64   // requests dropped because their context ended first
}

// request is one caller's images waiting for the device.
type request struct {
	ctx     context.Context
	pixels  []float32 // n images, NCHW
	prompts []string  // per image; nil when none were given
	n       int
	decoded bool // came through preprocess, which counted it in Scorer.pending
	enq     time.Time
	state   atomic.Int32 // reqPending → reqTaken (batcher) or reqCancelled (caller)
	res     chan result  // buffered: the batcher never blocks on a gone caller
}

const (
	reqPending int32 = iota
	reqTaken
	reqCancelled
)

type result struct {
	scores []float64 // n × outputs, row-major
	err    error
}

// Scorer scores images with a registered method's head on a CLIP. It is safe for
// concurrent use: callers preprocess in their own goroutines and one batching
// goroutine groups their images into device batches.
type Scorer struct {
	cfg    scorerConfig
	clip   *clip.Model
	head   method.ScoringHead // the method's model, from its registered Method
	text   *torch.Tensor      // what the head prepared once (text features)
	prep   imageprep.Options
	squash bool          // resize to prep.Size² without crop (the head's input)
	outs   []string      // names of the per-image outputs
	per    int           // floats per image
	decode chan struct{} // preprocessing slots

	mu     sync.RWMutex // guards closed against sends on queue
	closed bool
	queue  chan *request
	done   chan struct{}
	once   sync.Once

	depth      atomic.Int64
	pending    atomic.Int64 // images being preprocessed: they will be queued soon
	batchEWMA  atomic.Int64 // recent device batch time (ns), for the join wait
	overloaded atomic.Uint64
	dropped    atomic.Uint64
	statsMu    sync.Mutex
	batches    uint64
	images     uint64
	sizes      []uint64
	batchSecs  float64
}

// Load loads a CLIP model and the checkpoint of the method chosen with
// WithMethod (required; its meaning is the method's), computes the prompts' text
// features once, and starts the batching goroutine. Close frees everything.
func Load(clipPath, checkpointDir string, opts ...Option) (*Scorer, error) {
	cfg := scorerConfig{device: torch.CPU, precision: torch.Float32, maxBatch: DefaultMaxBatch,
		maxWait: DefaultMaxWait, preprocess: 2 * runtime.GOMAXPROCS(0)}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.maxBatch <= 0 {
		return nil, fmt.Errorf("load scorer: max batch %d must be positive", cfg.maxBatch)
	}
	if cfg.maxWait < 0 {
		return nil, fmt.Errorf("load scorer: max wait %v is negative", cfg.maxWait)
	}
	if cfg.queueSize <= 0 {
		cfg.queueSize = 8 * cfg.maxBatch
	}
	if cfg.maxPixels <= 0 {
		cfg.maxPixels = imageprep.DefaultMaxPixels
	}
	if cfg.preprocess <= 0 {
		cfg.preprocess = 1
	}
	if cfg.method == "" {
		return nil, fmt.Errorf("load scorer: no method given (WithMethod; one of %v)", method.Names())
	}
	meth, err := method.Lookup(cfg.method)
	if err != nil {
		return nil, fmt.Errorf("load scorer: %w", err)
	}
	if err := torch.CheckDevice(cfg.device); err != nil {
		return nil, fmt.Errorf("load scorer: %w", err)
	}
	if cfg.threads > 0 {
		if err := torch.SetNumThreads(cfg.threads); err != nil {
			return nil, fmt.Errorf("load scorer: threads: %w", err)
		}
	}
	tok, err := tokenizer.Default()
	if err != nil {
		return nil, fmt.Errorf("load scorer: %w", err)
	}
	// Read the checkpoint first: it is cheap and its errors are the likelier ones.
	loadHead, err := meth.Open(checkpointDir, cfg.epoch)
	if err != nil {
		return nil, fmt.Errorf("load scorer: %w", err)
	}
	c, err := clip.Load(clipPath, clip.Options{Device: cfg.device, Precision: cfg.precision})
	if err != nil {
		return nil, fmt.Errorf("load scorer: %w", err)
	}
	if cfg.fused {
		if _, err := c.EnableFused(); err != nil {
			c.Close()
			return nil, fmt.Errorf("load scorer: %w", err)
		}
	} else {
		c.DisableFused() // a ResNet starts on its fused eval trunk
	}
	sc := &Scorer{cfg: cfg, clip: c}
	if sc.head, err = loadHead(c, tok); err != nil {
		c.Close()
		return nil, fmt.Errorf("load scorer: %w", err)
	}
	if err := sc.initText(); err != nil {
		sc.free()
		return nil, fmt.Errorf("load scorer: text features: %w", err)
	}
	sc.prep = imageprep.DefaultOptions(c.Config.ImageResolution)
	if in, ok := sc.head.(method.ImageInputHead); ok {
		sc.prep, sc.squash = in.ImageInput()
	}
	sc.outs = []string{"score"}
	if mo, ok := sc.head.(method.MultiOutputHead); ok && len(mo.Outputs()) > 0 {
		sc.outs = mo.Outputs()
	}
	sc.prep.MaxPixels = cfg.maxPixels
	sc.per = sc.prep.TensorLen()
	sc.decode = make(chan struct{}, cfg.preprocess)
	sc.queue = make(chan *request, cfg.queueSize)
	sc.done = make(chan struct{})
	sc.sizes = make([]uint64, cfg.maxBatch+1)
	go sc.loop()
	return sc, nil
}

// initText computes the [K, E] normalised text features that every batch reuses.
func (sc *Scorer) initText() error {
	s := torch.NewScope().WithGrad(torch.InferenceMode).WithDevice(sc.cfg.device)
	defer s.Close()
	txt := sc.head.Prepare(s)
	if err := s.Err(); err != nil {
		return err
	}
	sc.text = s.Keep(txt)
	return nil
}

// Method is the scoring method in use.
func (sc *Scorer) Method() string { return sc.cfg.method }

// Resolution is the model's input size (CLIP's n_px, or the method's own,
// e.g. IP-IQA's 512).
func (sc *Scorer) Resolution() int { return sc.prep.Size }

// Outputs names what the model predicts per image, in the order of
// ScoreBytesOutputs: ["score"] for CLIP-AGIQA and CLIP-IQA, ["quality",
// "alignment"] for a 2-output IP-IQA. The first is what Score returns.
func (sc *Scorer) Outputs() []string { return append([]string(nil), sc.outs...) }

// MaxBatch is the configured device batch cap.
func (sc *Scorer) MaxBatch() int { return sc.cfg.maxBatch }

// CLIPConfig describes the loaded CLIP.
func (sc *Scorer) CLIPConfig() clip.Config { return sc.clip.Config }

// Score scores a Go image (converted the way Pillow would open the same pixels).
func (sc *Scorer) Score(ctx context.Context, img image.Image) (float64, error) {
	if sc.head.UsesPrompt() {
		return 0, fmt.Errorf("%w (method %s): use ScorePrompt", ErrNoPrompt, sc.cfg.method)
	}
	px, err := sc.preprocess(ctx, func() (*imageprep.Image, error) {
		if img == nil {
			return nil, fmt.Errorf("nil image")
		}
		b := img.Bounds()
		if int64(b.Dx())*int64(b.Dy()) > sc.cfg.maxPixels {
			return nil, fmt.Errorf("%w: %dx%d, limit %d", imageprep.ErrTooManyPixels, b.Dx(), b.Dy(), sc.cfg.maxPixels)
		}
		return imageprep.FromImage(img)
	})
	if err != nil {
		return 0, err
	}
	out, err := sc.enqueue(ctx, &request{pixels: px, n: 1, decoded: true})
	if err != nil {
		return 0, err
	}
	return out[0], nil
}

// ScorePrompt is Score with the image's prompt (see ScoreBytesPrompt).
func (sc *Scorer) ScorePrompt(ctx context.Context, img image.Image, prompt string) (float64, error) {
	if err := sc.checkPrompt(prompt); err != nil {
		return 0, err
	}
	px, err := sc.preprocess(ctx, func() (*imageprep.Image, error) {
		if img == nil {
			return nil, fmt.Errorf("nil image")
		}
		b := img.Bounds()
		if int64(b.Dx())*int64(b.Dy()) > sc.cfg.maxPixels {
			return nil, fmt.Errorf("%w: %dx%d, limit %d", imageprep.ErrTooManyPixels, b.Dx(), b.Dy(), sc.cfg.maxPixels)
		}
		return imageprep.FromImage(img)
	})
	if err != nil {
		return 0, err
	}
	out, err := sc.enqueue(ctx, &request{pixels: px, prompts: []string{prompt}, n: 1, decoded: true})
	if err != nil {
		return 0, err
	}
	return out[0], nil
}

// ScoreBytes decodes an encoded image (JPEG, PNG, GIF, BMP, WebP) and scores
// it; the pixel limit is checked from the header before decoding. A method
// that needs prompts (UsesPrompt) answers ErrNoPrompt: use ScoreBytesPrompt.
func (sc *Scorer) ScoreBytes(ctx context.Context, data []byte) (float64, error) {
	out, err := sc.scoreBytes(ctx, data, nil)
	if err != nil {
		return 0, err
	}
	return out[0], nil
}

// Describe is what the method's head reports it loaded (checkpoint,
// epoch); zero when the head does not say.
func (sc *Scorer) Describe() method.Description {
	if d, ok := sc.head.(method.Describer); ok {
		return d.Describe()
	}
	return method.Description{}
}

// UsesPrompt reports whether the model reads the per-image prompts of
// ScoreBytesPrompt: false for CLIP-AGIQA and CLIP-IQA, which score the image
// alone; IP-IQA reports true and needs one for every image.
func (sc *Scorer) UsesPrompt() bool { return sc.head.UsesPrompt() }

// ScoreBytesPrompt is ScoreBytes with the text prompt the image was generated
// from, for prompt-aware models; a model that does not use prompts
// (UsesPrompt false) ignores it. It returns the first output (quality).
func (sc *Scorer) ScoreBytesPrompt(ctx context.Context, data []byte, prompt string) (float64, error) {
	out, err := sc.ScoreBytesOutputs(ctx, data, prompt)
	if err != nil {
		return 0, err
	}
	return out[0], nil
}

// ScoreBytesOutputs is ScoreBytesPrompt returning every output of the model,
// named by Outputs (IP-IQA: quality, alignment). prompt is ignored by models
// that do not use prompts.
func (sc *Scorer) ScoreBytesOutputs(ctx context.Context, data []byte, prompt string) ([]float64, error) {
	if err := sc.checkPrompt(prompt); err != nil {
		return nil, err
	}
	return sc.scoreBytes(ctx, data, []string{prompt})
}

// checkPrompt refuses a missing prompt before any work, for a method that
// needs one.
func (sc *Scorer) checkPrompt(prompt string) error {
	if sc.head.UsesPrompt() && prompt == "" {
		return fmt.Errorf("%w (method %s)", ErrNoPrompt, sc.cfg.method)
	}
	return nil
}

func (sc *Scorer) scoreBytes(ctx context.Context, data []byte, prompts []string) ([]float64, error) {
	if prompts == nil && sc.head.UsesPrompt() {
		return nil, fmt.Errorf("%w (method %s): use ScoreBytesPrompt", ErrNoPrompt, sc.cfg.method)
	}
	px, err := sc.preprocess(ctx, func() (*imageprep.Image, error) { return imageprep.Decode(data, sc.cfg.maxPixels) })
	if err != nil {
		return nil, err
	}
	return sc.enqueue(ctx, &request{pixels: px, prompts: prompts, n: 1, decoded: true})
}

// ScoreBatch scores encoded images, decoding them in parallel; errs[i] is
// the error of image i (nil when scores[i] is valid).
func (sc *Scorer) ScoreBatch(ctx context.Context, images [][]byte) (scores []float64, errs []error) {
	scores = make([]float64, len(images))
	errs = make([]error, len(images))
	var wg sync.WaitGroup
	for i, data := range images {
		wg.Add(1)
		go func() {
			defer wg.Done()
			scores[i], errs[i] = sc.ScoreBytes(ctx, data)
		}()
	}
	wg.Wait()
	return scores, errs
}

// ScoreBatchOutputs scores encoded images with their prompts (prompts[i]
// goes with images[i]; nil for a model that does not use prompts), decoding
// them in parallel: outputs[i] are image i's outputs (named by Outputs), or
// errs[i] says why it has none (ErrNoPrompt for a missing prompt).
func (sc *Scorer) ScoreBatchOutputs(ctx context.Context, images [][]byte, prompts []string) (outputs [][]float64, errs []error) {
	outputs = make([][]float64, len(images))
	errs = make([]error, len(images))
	if prompts != nil && len(prompts) != len(images) {
		for i := range errs {
			errs[i] = fmt.Errorf("score batch: %d prompts for %d images", len(prompts), len(images))
		}
		return outputs, errs
	}
	var wg sync.WaitGroup
	for i, data := range images {
		wg.Add(1)
		go func() {
			defer wg.Done()
			prompt := ""
			if prompts != nil {
				prompt = prompts[i]
			}
			outputs[i], errs[i] = sc.ScoreBytesOutputs(ctx, data, prompt)
		}()
	}
	wg.Wait()
	return outputs, errs
}

// preprocess decodes and transforms one image in the caller's goroutine,
// holding one of the bounded preprocessing slots. The image counts as pending
// (the batcher may wait for it to join a batch) until enqueue takes it, or
// until preprocess fails.
func (sc *Scorer) preprocess(ctx context.Context, decode func() (*imageprep.Image, error)) (px []float32, err error) {
	if sc.isClosed() {
		return nil, ErrClosed
	}
	sc.pending.Add(1)
	defer func() {
		if err != nil {
			sc.pending.Add(-1)
		}
	}()
	select {
	case sc.decode <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-sc.decode }()
	img, err := decode()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidImage, err)
	}
	if sc.squash {
		px = make([]float32, sc.per)
		err = imageprep.ResizedCropInto(px, img, 0, 0, img.W, img.H, false, sc.prep)
	} else {
		px, err = imageprep.CenterTransform(img, sc.prep)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: preprocess: %w", ErrInvalidImage, err)
	}
	return px, nil
}

func (sc *Scorer) isClosed() bool {
	sc.mu.RLock()
	defer sc.mu.RUnlock()
	return sc.closed
}

// submit queues n preprocessed images and waits for their scores. A method
// that needs prompts gets a placeholder one per image.
func (sc *Scorer) submit(ctx context.Context, px []float32, n int) ([]float64, error) {
	var prompts []string
	if sc.head.UsesPrompt() {
		prompts = make([]string, n)
		for i := range prompts {
			prompts[i] = "warm-up"
		}
	}
	return sc.enqueue(ctx, &request{pixels: px, prompts: prompts, n: n})
}

// enqueue queues req (its pixels, prompts, n and decoded set) and waits for
// its scores.
func (sc *Scorer) enqueue(ctx context.Context, req *request) ([]float64, error) {
	// A preprocessed image stops being pending once it is queued (so the
	// batcher sees it as one or the other), or when it is refused.
	pending := req.decoded
	defer func() {
		if pending {
			sc.pending.Add(-1)
		}
	}()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	req.ctx, req.enq, req.res = ctx, time.Now(), make(chan result, 1)
	sc.mu.RLock()
	if sc.closed {
		sc.mu.RUnlock()
		return nil, ErrClosed
	}
	select {
	case sc.queue <- req:
		sc.depth.Add(1)
	default:
		sc.mu.RUnlock()
		sc.overloaded.Add(1)
		return nil, ErrOverloaded
	}
	sc.mu.RUnlock()
	if pending {
		sc.pending.Add(-1)
		pending = false
	}
	select {
	case r := <-req.res:
		return r.scores, r.err
	case <-ctx.Done():
		// Not yet started: the batcher drops it. Started: its result is discarded.
		req.state.CompareAndSwap(reqPending, reqCancelled)
		return nil, ctx.Err()
	}
}

// claim moves a dequeued request into a batch unless its caller gave up.
func (sc *Scorer) claim(r *request) bool {
	sc.depth.Add(-1)
	if err := r.ctx.Err(); err != nil {
		r.state.CompareAndSwap(reqPending, reqCancelled)
		r.res <- result{err: err}
		sc.dropped.Add(1)
		return false
	}
	if !r.state.CompareAndSwap(reqPending, reqTaken) {
		sc.dropped.Add(1)
		return false
	}
	return true
}

// maxJoinWait caps how long a batch waits for images still being decoded.
const maxJoinWait = 250 * time.Millisecond

// loop is the batching goroutine: it takes the oldest request and adds
// whatever arrives until the batch is full or nothing has arrived, nor been
// in preprocessing (about to be queued: joining now saves it a whole batch),
// for max wait; in all at most max wait or, if longer, a quarter of the
// recent batch time (≤ maxJoinWait). Under load the batch grows to the
// requests in flight; alone, a request waits max wait. After Close it still
// runs what was queued (a closed channel yields its buffered requests
// first), then exits.
func (sc *Scorer) loop() {
	defer close(sc.done)
	// libtorch keeps its thread pool settings per OS thread: one thread runs
	// every batch.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	buf := make([]float32, sc.cfg.maxBatch*sc.per)
	var carry *request
	for {
		first := carry
		carry = nil
		if first == nil {
			r, ok := <-sc.queue
			if !ok {
				return
			}
			first = r
		}
		if !sc.claim(first) {
			continue
		}
		batch, n := []*request{first}, first.n
		start := time.Now()
		join := start
		if sc.cfg.maxWait > 0 {
			join = start.Add(max(sc.cfg.maxWait, min(maxJoinWait, time.Duration(sc.batchEWMA.Load())/4)))
		}
		lastActive := start // when a request last arrived or was being preprocessed
		open := true
	collect:
		for n < sc.cfg.maxBatch {
			var r *request
			var ok bool
			select {
			case r, ok = <-sc.queue: // already waiting: take it even past the deadline
			default:
				now := time.Now()
				if sc.pending.Load() > 0 {
					lastActive = now
				}
				quiet := sc.cfg.maxWait - now.Sub(lastActive)
				if quiet <= 0 || !now.Before(join) {
					break collect
				}
				timer := time.NewTimer(min(quiet, join.Sub(now), time.Millisecond)) // then look at pending again
				select {
				case r, ok = <-sc.queue:
					timer.Stop()
				case <-timer.C:
					continue collect
				}
			}
			if !ok {
				open = false
				break collect
			}
			lastActive = time.Now()
			if n+r.n > sc.cfg.maxBatch {
				carry = r
				break collect
			}
			if sc.claim(r) {
				batch = append(batch, r)
				n += r.n
			}
		}
		sc.run(batch, n, buf)
		if !open {
			return
		}
	}
}

// run scores one device batch and routes the results to the callers.
func (sc *Scorer) run(batch []*request, n int, buf []float32) {
	if sc.cfg.runHook != nil {
		sc.cfg.runHook(n)
	}
	start := time.Now()
	off := 0
	var prompts []string // per image of the batch, "" where none was given
	for _, r := range batch {
		copy(buf[off:], r.pixels)
		off += len(r.pixels)
		if r.prompts != nil && prompts == nil {
			prompts = make([]string, n)
		}
		if r.prompts != nil {
			copy(prompts[off/sc.per-r.n:], r.prompts)
		}
	}
	scores, err := sc.forward(buf[:off], n, prompts)
	elapsed := time.Since(start)
	// Count before answering, so a caller sees its batch in Stats.
	sc.statsMu.Lock()
	sc.batches++
	sc.images += uint64(n)
	if n < len(sc.sizes) {
		sc.sizes[n]++
	}
	sc.batchSecs += elapsed.Seconds()
	sc.statsMu.Unlock()
	if prev := sc.batchEWMA.Load(); prev == 0 {
		sc.batchEWMA.Store(int64(elapsed))
	} else {
		sc.batchEWMA.Store((3*prev + int64(elapsed)) / 4)
	}
	i, k := 0, len(sc.outs)
	for _, r := range batch {
		if err != nil {
			r.res <- result{err: err}
			continue
		}
		r.res <- result{scores: scores[i : i+r.n*k : i+r.n*k]}
		i += r.n * k
	}
}

// forward runs the model on n preprocessed images in one inference scope.
// prompts (nil, or one per image) are for prompt-aware models; CLIP-AGIQA and
// CLIP-IQA do not read them.
func (sc *Scorer) forward(px []float32, n int, prompts []string) (out []float64, err error) {
	defer func() {
		// cgo ops report errors, but a bug here must not kill the batcher.
		if r := recover(); r != nil {
			out, err = nil, fmt.Errorf("score batch: panic: %v", r)
		}
	}()
	res := int64(sc.prep.Size)
	s := torch.NewScope().WithGrad(torch.InferenceMode).WithDevice(sc.cfg.device)
	defer s.Close()
	pixels := s.FromFloat32On(sc.cfg.device, px, int64(n), 3, res, res)
	pred := sc.head.Score(s, pixels, sc.text, prompts)
	if err := s.Err(); err != nil {
		return nil, fmt.Errorf("score batch of %d: %w", n, err)
	}
	vals, err := pred.Float32s()
	if err != nil {
		return nil, fmt.Errorf("score batch of %d: %w", n, err)
	}
	if len(vals) != n*len(sc.outs) {
		return nil, fmt.Errorf("score batch of %d: the model gave %d values, want %d (%d per image)", n, len(vals), n*len(sc.outs), len(sc.outs))
	}
	out = make([]float64, len(vals))
	for i, v := range vals {
		out[i] = float64(v)
		if math.IsNaN(out[i]) || math.IsInf(out[i], 0) {
			return nil, fmt.Errorf("score batch of %d: score %v (the model or checkpoint produces non-finite values)", n, out[i])
		}
	}
	return out, nil
}

// Warmup runs one full batch of blank images through the model so the first
// real requests do not pay for libtorch's lazy initialisation.
func (sc *Scorer) Warmup(ctx context.Context) error {
	px := make([]float32, sc.cfg.maxBatch*sc.per)
	for {
		_, err := sc.submit(ctx, px, sc.cfg.maxBatch)
		if !errors.Is(err, ErrOverloaded) {
			if err != nil {
				return fmt.Errorf("warm-up: %w", err)
			}
			return nil
		}
		select {
		case <-time.After(10 * time.Millisecond):
		case <-ctx.Done():
			return fmt.Errorf("warm-up: %w", ctx.Err())
		}
	}
}

// Stats returns a snapshot of the counters.
func (sc *Scorer) Stats() Stats {
	sc.statsMu.Lock()
	defer sc.statsMu.Unlock()
	return Stats{
		MaxBatch: sc.cfg.maxBatch, Batches: sc.batches, Images: sc.images,
		BatchSizes: append([]uint64(nil), sc.sizes...), BatchSeconds: sc.batchSecs,
		QueueDepth: int(max(sc.depth.Load(), 0)), Overloaded: sc.overloaded.Load(), Dropped: sc.dropped.Load(),
	}
}

// QueueDepth is the number of requests waiting for the device.
func (sc *Scorer) QueueDepth() int { return int(max(sc.depth.Load(), 0)) }

// Close stops accepting requests, lets queued and running batches finish,
// and frees all libtorch memory. Calling it again is harmless.
func (sc *Scorer) Close() error {
	sc.once.Do(func() {
		sc.mu.Lock()
		sc.closed = true
		close(sc.queue)
		sc.mu.Unlock()
		<-sc.done
		sc.free()
	})
	return nil
}

func (sc *Scorer) free() {
	sc.text.Close()
	sc.text = nil
	if sc.head != nil {
		sc.head.Close()
	}
	sc.clip.Close()
}
