package serve

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/clipagiqa/clipagiqa/clipagiqa"
	"github.com/clipagiqa/clipagiqa/clipagiqa/clip"
	"github.com/clipagiqa/clipagiqa/clipagiqa/imageprep"
	"github.com/clipagiqa/clipagiqa/clipagiqa/tokenizer"
	"github.com/clipagiqa/clipagiqa/torch"
)

// LoadResult is what one load level measured.
type LoadResult struct {
	Concurrency int
	Requests    int           // answered 200
	Errors      int           // other answers or transport errors
	Codes       map[int]int   // status code counts (0: transport error)
	Elapsed     time.Duration // wall time of the level
	// Throughput is successful requests per second from the start to the
	// last 200 answer: requests cut off by the end of the level (with large
	// batches, up to a whole batch) count neither their work nor their time.
	Throughput float64
	P50, P99   time.Duration // latency of successful requests
	MeanBatch  float64       // images per device batch during the level
	BatchFill  float64       // MeanBatch / max batch
	BatchTime  time.Duration // mean device batch compute time during the level

	// Offline references measured in the same run (zero when not measured):
	// the fused image encoder alone at batch round(MeanBatch) on
	// preprocessed pixels, and one image's decode + preprocess.
	OfflineBatch int
	OfflineRate  float64       // images per second
	OfflineTime  time.Duration // one encoder call at OfflineBatch
	DecodeTime   time.Duration // decode + resize + normalise of one request image
	RateRatio    float64       // Throughput / OfflineRate (target ≥ 0.9)
	// CPURatio compares process CPU time per image, offline encoder over
	// serving (load generator included): the efficiency part of RateRatio,
	// which other work on a shared machine disturbs less.
	CPURatio      float64
	cpuPerImage   time.Duration // serving: process CPU time / answered request
	P99OverBatch  float64       // P99 / BatchTime (target ≤ 2.5)
	P50OverSingle float64       // P50 / (batch-1 encoder + decode), at concurrency 1 (target ≤ 1.15)
}

// LoadGen posts images (raw JPEG bodies, round robin) to url from
// concurrency goroutines, each sending its next request when the previous
// answer arrives, for d. Latencies are those of 200 answers.
func LoadGen(ctx context.Context, url string, images [][]byte, concurrency int, d time.Duration) LoadResult {
	tr := &http.Transport{MaxIdleConnsPerHost: concurrency, MaxConnsPerHost: concurrency, DisableCompression: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var mu sync.Mutex
	res := LoadResult{Concurrency: concurrency, Codes: map[int]int{}}
	var lat []time.Duration
	var lastOK time.Time
	start := time.Now()
	var wg sync.WaitGroup
	for w := range concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			var last time.Time
			codes := map[int]int{}
			for i := w; ctx.Err() == nil; i++ {
				body := images[i%len(images)]
				req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
				if err != nil {
					codes[0]++
					continue
				}
				req.Header.Set("Content-Type", "image/jpeg")
				t0 := time.Now()
				resp, err := client.Do(req)
				if err != nil {
					if ctx.Err() == nil {
						codes[0]++
					}
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if ctx.Err() != nil && resp.StatusCode != http.StatusOK {
					continue // cut off by the end of the level
				}
				codes[resp.StatusCode]++
				if resp.StatusCode == http.StatusOK {
					last = time.Now()
					mine = append(mine, last.Sub(t0))
				}
			}
			mu.Lock()
			if last.After(lastOK) {
				lastOK = last
			}
			lat = append(lat, mine...)
			for c, n := range codes {
				res.Codes[c] += n
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	res.Elapsed = time.Since(start)
	for c, n := range res.Codes {
		if c == http.StatusOK {
			res.Requests += n
		} else {
			res.Errors += n
		}
	}
	if res.Requests > 0 {
		res.Throughput = float64(res.Requests) / lastOK.Sub(start).Seconds()
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	res.P50, res.P99 = percentile(lat, 0.50), percentile(lat, 0.99)
	return res
}

// percentile is the nearest-rank percentile of sorted values (0 if none).
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	k := int(math.Ceil(p*float64(len(sorted)))) - 1
	return sorted[min(max(k, 0), len(sorted)-1)]
}

// SyntheticJPEGs returns n deterministic w×h JPEG photos-like images
// (gradients, a sine pattern and noise) for load tests.
func SyntheticJPEGs(n, w, h int) ([][]byte, error) {
	out := make([][]byte, n)
	for k := range n {
		rng := rand.New(rand.NewPCG(uint64(k), 42))
		img := image.NewRGBA(image.Rect(0, 0, w, h))
		for y := range h {
			for x := range w {
				v := func(c int) uint8 {
					base := 255 * (float64(x)/float64(w)*float64(c+1) + float64(y)/float64(h)*float64(3-c)) / 4
					wave := 40 * math.Sin(float64(x*(k+1))/23+float64(y*(c+1))/17)
					return uint8(min(max(base+wave+rng.NormFloat64()*8, 0), 255))
				}
				img.SetRGBA(x, y, color.RGBA{v(0), v(1), v(2), 255})
			}
		}
		var b bytes.Buffer
		if err := jpeg.Encode(&b, img, &jpeg.Options{Quality: 90}); err != nil {
			return nil, fmt.Errorf("synthetic image %d: %w", k, err)
		}
		out[k] = b.Bytes()
	}
	return out, nil
}

// RandomCheckpoint as BenchConfig.Checkpoint benchmarks a CLIP-AGIQA head
// with random weights (seed 0) on the given CLIP, for models without a
// trained checkpoint: the cost of scoring does not depend on the weights.
const RandomCheckpoint = "random"

// randomCheckpoint writes a randomly initialised CLIP-AGIQA checkpoint for
// clipPath into a new temporary directory, which the caller removes.
func randomCheckpoint(clipPath string) (string, error) {
	c, err := clip.Load(clipPath, clip.Options{})
	if err != nil {
		return "", err
	}
	defer c.Close()
	tok, err := tokenizer.Default()
	if err != nil {
		return "", err
	}
	if err := torch.ManualSeed(0); err != nil {
		return "", err
	}
	m, err := clipagiqa.New(c, tok, clipagiqa.DefaultConfig())
	if err != nil {
		return "", err
	}
	defer m.Close()
	ck, err := m.Checkpoint(nil, 0, "")
	if err != nil {
		return "", err
	}
	dir, err := os.MkdirTemp("", "clipagiqa-random-head-")
	if err != nil {
		return "", err
	}
	if err := ck.Save(dir); err != nil {
		os.RemoveAll(dir)
		return "", err
	}
	return dir, nil
}

// BenchConfig is what `clipagiqa bench-serve` needs.
type BenchConfig struct {
	CLIP, Checkpoint string
	Concurrency      []int         // default 1, 4, 16
	Duration         time.Duration // per level, default 10s
	Out              string        // directory for serve-<model>.md ("" writes nothing)
	Model            string        // name in the file name (default: CLIP file name without extension)
	Scorer           []clipagiqa.ScorerOption
	Server           Config
	Images           [][]byte // request bodies (default: 8 synthetic 640×480 JPEGs)
	// Progress, if set, receives each level's result as it finishes.
	Progress func(LoadResult)
	// NoOffline skips the offline encoder and decode measurements (and the ratios).
	NoOffline bool
}

// BenchReport is a finished benchmark.
type BenchReport struct {
	Model    string
	Results  []LoadResult
	Markdown string
	Path     string // file written ("" if none)
}

// Bench loads the scorer, starts the server in-process on 127.0.0.1:0 and
// drives it with LoadGen at each concurrency level.
func Bench(ctx context.Context, cfg BenchConfig) (*BenchReport, error) {
	if len(cfg.Concurrency) == 0 {
		cfg.Concurrency = []int{1, 4, 16}
	}
	if cfg.Duration <= 0 {
		cfg.Duration = 10 * time.Second
	}
	if cfg.Model == "" {
		cfg.Model = strings.TrimSuffix(filepath.Base(cfg.CLIP), filepath.Ext(cfg.CLIP))
	}
	for _, c := range cfg.Concurrency {
		if c <= 0 {
			return nil, fmt.Errorf("bench-serve: concurrency %d must be positive", c)
		}
	}
	if cfg.Images == nil {
		imgs, err := SyntheticJPEGs(8, 640, 480)
		if err != nil {
			return nil, err
		}
		cfg.Images = imgs
	}
	if cfg.Server.Logger == nil {
		cfg.Server.Logger = NewJSONLogger(os.Stderr, slog.LevelWarn) // no access log per request
	}
	ckpt := cfg.Checkpoint
	if ckpt == RandomCheckpoint {
		dir, err := randomCheckpoint(cfg.CLIP)
		if err != nil {
			return nil, fmt.Errorf("bench-serve: random head: %w", err)
		}
		defer os.RemoveAll(dir)
		ckpt = dir
	}
	loadStart := time.Now()
	sc, err := clipagiqa.LoadScorer(cfg.CLIP, ckpt, cfg.Scorer...)
	if err != nil {
		return nil, fmt.Errorf("bench-serve: %w", err)
	}
	defer sc.Close()
	if err := sc.Warmup(ctx); err != nil {
		return nil, fmt.Errorf("bench-serve: %w", err)
	}
	loadTime := time.Since(loadStart)
	srv := New(cfg.Server)
	srv.SetBackend(sc)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("bench-serve: %w", err)
	}
	sctx, stop := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(sctx, ln) }()
	defer func() { stop(); <-served }()
	url := "http://" + ln.Addr().String() + "/v1/score"

	// The offline references run on a second copy of the model right after
	// each level (the server idle), so that both see the same machine load.
	var off *offline
	if !cfg.NoOffline {
		if off, err = newOffline(cfg.CLIP, cfg.Images, sc.Resolution()); err != nil {
			return nil, fmt.Errorf("bench-serve: offline reference: %w", err)
		}
		defer off.close()
	}
	rep := &BenchReport{Model: cfg.Model}
	for _, c := range cfg.Concurrency {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		// Time the encoder at the batch the level should reach before and
		// after it, so that drifting machine load weighs on both sides alike.
		var pre *encoderSample
		if off != nil {
			if pre, err = off.encoder(ctx, min(c, sc.MaxBatch())); err != nil {
				return nil, fmt.Errorf("bench-serve: offline reference: %w", err)
			}
		}
		before := sc.Stats()
		cpu0 := processCPU()
		r := LoadGen(ctx, url, cfg.Images, c, cfg.Duration)
		if r.Requests > 0 {
			r.cpuPerImage = (processCPU() - cpu0) / time.Duration(r.Requests)
		}
		// Requests cut off at the end of the level may still be running;
		// let them finish so the next level's batch counts start clean.
		for wait := time.Now().Add(5 * time.Second); srv.inflight.Load() > 0 && time.Now().Before(wait); {
			time.Sleep(time.Millisecond)
		}
		after := sc.Stats()
		if nb := after.Batches - before.Batches; nb > 0 {
			r.MeanBatch = float64(after.Images-before.Images) / float64(nb)
			r.BatchFill = r.MeanBatch / float64(sc.MaxBatch())
			r.BatchTime = time.Duration((after.BatchSeconds - before.BatchSeconds) / float64(nb) * 1e9)
		}
		if off != nil {
			if err := off.fill(ctx, &r, pre); err != nil {
				return nil, fmt.Errorf("bench-serve: offline reference: %w", err)
			}
		}
		rep.Results = append(rep.Results, r)
		if cfg.Progress != nil {
			cfg.Progress(r)
		}
	}

	rep.Markdown = benchMarkdown(cfg, sc, rep.Results, loadTime)
	if cfg.Out != "" {
		if err := os.MkdirAll(cfg.Out, 0o755); err != nil {
			return nil, fmt.Errorf("bench-serve: %w", err)
		}
		rep.Path = filepath.Join(cfg.Out, "serve-"+cfg.Model+".md")
		if err := os.WriteFile(rep.Path, []byte(rep.Markdown), 0o644); err != nil {
			return nil, fmt.Errorf("bench-serve: %w", err)
		}
	}
	return rep, nil
}

// cpuModel is the first "model name" of /proc/cpuinfo, or GOARCH.
func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return runtime.GOARCH
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return runtime.GOARCH
}

// loadAvg describes /proc/loadavg (other work on the machine skews the numbers).
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return fmt.Sprintf("; load average %s %s %s at the end", f[0], f[1], f[2])
}

func benchMarkdown(cfg BenchConfig, sc *clipagiqa.Scorer, results []LoadResult, load time.Duration) string {
	var b strings.Builder
	c := sc.CLIPConfig()
	fmt.Fprintf(&b, "# Serving benchmark: %s\n\n", cfg.Model)
	fmt.Fprintf(&b, "`clipagiqa bench-serve`, %s. Machine: %s, %d CPUs (GOMAXPROCS %d), libtorch %s with %d threads%s.\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 MST"), cpuModel(), runtime.NumCPU(), runtime.GOMAXPROCS(0), torch.TorchVersion(), torch.NumThreads(), loadAvg())
	fmt.Fprintf(&b, "Model: CLIP %s %dpx, vision width %d × %d layers, patch %d, embed %d (%.2f GFLOPs/image); method %s. ",
		c.Backbone, c.ImageResolution, c.VisionWidth, c.VisionLayers, c.VisionPatchSize, c.EmbedDim, c.FLOPsPerImage()/1e9, sc.Method())
	if cfg.Checkpoint == RandomCheckpoint {
		b.WriteString("Head: random weights (no trained checkpoint). ")
	}
	fmt.Fprintf(&b, "Load + warm-up %.1f s. Max batch %d.\n\n", load.Seconds(), sc.MaxBatch())
	size := ""
	if len(cfg.Images) > 0 {
		if ic, _, err := image.DecodeConfig(bytes.NewReader(cfg.Images[0])); err == nil {
			size = fmt.Sprintf("%d×%d ", ic.Width, ic.Height)
		}
	}
	fmt.Fprintf(&b, "Load: closed loop, each client POSTs the next raw %sJPEG (%d distinct images) to /v1/score on loopback as soon as the previous answer arrives; %s per level. Latency is per request (upload, decode, resize, queue, batch, answer); throughput counts 200 answers up to the last one.\n\n",
		size, len(cfg.Images), cfg.Duration)
	b.WriteString("| concurrency | requests | errors | throughput (img/s) | p50 (ms) | p99 (ms) | mean batch | batch fill | batch time (ms) |\n")
	b.WriteString("|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range results {
		fmt.Fprintf(&b, "| %d | %d | %d | %.2f | %.1f | %.1f | %.2f | %.0f%% | %.1f |\n", r.Concurrency, r.Requests, r.Errors,
			r.Throughput, ms(r.P50), ms(r.P99), r.MeanBatch, 100*r.BatchFill, ms(r.BatchTime))
	}
	if len(results) == 0 || results[0].OfflineRate == 0 {
		return b.String()
	}
	b.WriteString("\nAgainst the engine, measured in the same run: the fused image encoder alone on preprocessed pixels at\n" +
		"the level's mean batch (rounded; median of three calls right after the level and three right before it when\n" +
		"that batch was foreseen), and one request image's decode + preprocess " +
		fmt.Sprintf("(%.1f ms).\n\n", ms(results[0].DecodeTime)))
	b.WriteString("| concurrency | offline batch | offline img/s | throughput / offline (≥ 0.90) | CPU time / image, offline / serving | p99 / batch time (≤ 2.5) | p50 / (batch-1 encoder + decode) (≤ 1.15) |\n")
	b.WriteString("|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range results {
		single := "–"
		if r.Concurrency == 1 {
			single = fmt.Sprintf("%.2f", r.P50OverSingle)
		}
		fmt.Fprintf(&b, "| %d | %d | %.2f | %.2f | %.2f | %.2f | %s |\n", r.Concurrency, r.OfflineBatch, r.OfflineRate,
			r.RateRatio, r.CPURatio, r.P99OverBatch, single)
	}
	return b.String()
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// offline times the engine without the server: the fused image encoder on
// ready pixels and the decode + preprocess of the request images.
type offline struct {
	model  *clip.Model
	images [][]byte
	prep   imageprep.Options
}

func newOffline(clipPath string, images [][]byte, resolution int) (*offline, error) {
	m, err := clip.Load(clipPath, clip.Options{})
	if err != nil {
		return nil, err
	}
	if _, err := m.EnableFused(); err != nil {
		m.Close()
		return nil, err
	}
	return &offline{model: m, images: images, prep: imageprep.DefaultOptions(resolution)}, nil
}

func (o *offline) close() { o.model.Close() }

// processCPU is the process's user + system CPU time so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// encoderSample is a few timed encoder calls at one batch size.
type encoderSample struct {
	batch int
	times []time.Duration
	cpu   time.Duration // process CPU time over the timed calls
}

// merge adds o's calls when they are at the same batch size.
func (e *encoderSample) merge(o *encoderSample) {
	if o != nil && o.batch == e.batch {
		e.times = append(e.times, o.times...)
		e.cpu += o.cpu
	}
}

// median call time, and process CPU time per image.
func (e *encoderSample) median() time.Duration {
	t := slices.Clone(e.times)
	slices.Sort(t)
	return t[len(t)/2]
}

func (e *encoderSample) cpuPerImage() time.Duration {
	return e.cpu / time.Duration(len(e.times)*e.batch)
}

// encoder times three encoder calls at batch n, after one warm-up.
func (o *offline) encoder(ctx context.Context, n int) (*encoderSample, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	res := int64(o.model.Config.ImageResolution)
	s := torch.NewScope().WithGrad(torch.InferenceMode)
	defer s.Close()
	px := s.Randn(torch.Float32, int64(n), 3, res, res)
	if err := s.Err(); err != nil {
		return nil, err
	}
	e := &encoderSample{batch: n}
	var cpu0 time.Duration
	for i := range 4 {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if i == 1 {
			cpu0 = processCPU()
		}
		sub := s.Sub()
		t := time.Now()
		o.model.EncodeImage(sub, px)
		d := time.Since(t)
		err := sub.Err()
		sub.Close()
		if err != nil {
			return nil, err
		}
		if i > 0 {
			e.times = append(e.times, d)
		}
	}
	e.cpu = processCPU() - cpu0
	return e, nil
}

// decodeTime is the mean decode + preprocess time of one request image.
func (o *offline) decodeTime() (time.Duration, error) {
	const reps = 3
	t := time.Now()
	for range reps {
		for _, b := range o.images {
			img, err := imageprep.Decode(b, imageprep.DefaultMaxPixels)
			if err != nil {
				return 0, err
			}
			if _, err := imageprep.CenterTransform(img, o.prep); err != nil {
				return 0, err
			}
		}
	}
	return time.Since(t) / time.Duration(reps*len(o.images)), nil
}

// fill adds the offline references and ratios to a level's result; pre,
// timed before the level, counts too when it is at the same batch size.
func (o *offline) fill(ctx context.Context, r *LoadResult, pre *encoderSample) error {
	if r.MeanBatch <= 0 {
		return nil
	}
	r.OfflineBatch = max(1, int(math.Round(r.MeanBatch)))
	e, err := o.encoder(ctx, r.OfflineBatch)
	if err != nil {
		return err
	}
	e.merge(pre)
	r.OfflineTime = e.median()
	r.OfflineRate = float64(r.OfflineBatch) / r.OfflineTime.Seconds()
	r.RateRatio = r.Throughput / r.OfflineRate
	if r.cpuPerImage > 0 {
		r.CPURatio = float64(e.cpuPerImage()) / float64(r.cpuPerImage)
	}
	if r.BatchTime > 0 {
		r.P99OverBatch = float64(r.P99) / float64(r.BatchTime)
	}
	if r.DecodeTime, err = o.decodeTime(); err != nil {
		return err
	}
	if r.Concurrency == 1 {
		one := r.OfflineTime
		if r.OfflineBatch != 1 {
			e1, err := o.encoder(ctx, 1)
			if err != nil {
				return err
			}
			one = e1.median()
		}
		r.P50OverSingle = float64(r.P50) / float64(one+r.DecodeTime)
	}
	return nil
}
