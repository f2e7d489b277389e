// Package serve is clipagiqa's HTTP scoring server: POST /v1/score with a raw
// image or a multipart form of images, GET /v1/info, a browser page at /, the
// OpenAPI document at /openapi.json, health and readiness probes, and
// Prometheus metrics, on top of a batching clipagiqa.Scorer. It also holds the
// load generator behind `clipagiqa bench-serve`. The wire types are in
// serve/api and a Go client in serve/client.
package serve

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"mime/multipart"
	"net"
	"net/http"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/clipagiqa/clipagiqa/clipagiqa"
	"github.com/clipagiqa/clipagiqa/clipagiqa/clip"
	"github.com/clipagiqa/clipagiqa/clipagiqa/imageprep"
	"github.com/clipagiqa/clipagiqa/serve/api"
)

// Backend scores encoded images; *clipagiqa.Scorer is one.
type Backend interface {
	ScoreBytes(ctx context.Context, data []byte) (float64, error)
	Stats() clipagiqa.ScorerStats
}

// PromptBackend is a Backend that takes a per-image prompt (the text the
// image was generated from); *clipagiqa.Scorer is one. UsesPrompt false means
// the prompt is accepted and ignored.
type PromptBackend interface {
	Backend
	ScoreBytesPrompt(ctx context.Context, data []byte, prompt string) (float64, error)
	UsesPrompt() bool
}

// OutputsBackend is a PromptBackend with more than one output per image
// (IP-IQA: quality, alignment); *clipagiqa.Scorer is one. The first output
// is the score; an output named "alignment" is reported as such.
type OutputsBackend interface {
	PromptBackend
	ScoreBytesOutputs(ctx context.Context, data []byte, prompt string) ([]float64, error)
	Outputs() []string
}

// describer is what /v1/info reads from a backend that has it.
type describer interface {
	Method() string
	MaxBatch() int
	Resolution() int
}

// HTTP defaults.
const (
	DefaultMaxBytes   = 32 << 20
	DefaultTimeout    = 30 * time.Second
	DefaultDrainBytes = 128 << 20
)

// Config tunes the HTTP layer; zero fields take the defaults.
type Config struct {
	// MaxBytes caps a request body (default 32 MiB); larger bodies get 413.
	MaxBytes int64
	// DrainBytes is how much of a refused (413) body is read and discarded
	// after the answer, so that a client still sending gets the 413 rather
	// than a connection reset (default 128 MiB; bounded by Timeout too).
	DrainBytes int64
	// MaxParts caps the files of a multipart request (default 64).
	MaxParts int
	// Timeout bounds reading the body and scoring it (default 30s): 408 for a
	// slow upload, 504 when scoring does not finish in time.
	Timeout time.Duration
	// MaxInFlight refuses score requests beyond this many at once with 503
	// (default 1024), before their bodies are read.
	MaxInFlight int
	// RetryAfter is the Retry-After hint of 503 answers (default 1s).
	RetryAfter time.Duration
	// ShutdownTimeout bounds the wait for in-flight requests on shutdown (default 30s).
	ShutdownTimeout time.Duration
	// Model names the CLIP weights in /v1/info and on the page.
	Model string
	// Logger receives JSON access and error logs (default slog.Default()).
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.MaxBytes <= 0 {
		c.MaxBytes = DefaultMaxBytes
	}
	if c.DrainBytes <= 0 {
		c.DrainBytes = DefaultDrainBytes
	}
	if c.MaxParts <= 0 {
		c.MaxParts = 64
	}
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeout
	}
	if c.MaxInFlight <= 0 {
		c.MaxInFlight = 1024
	}
	if c.RetryAfter <= 0 {
		c.RetryAfter = time.Second
	}
	if c.ShutdownTimeout <= 0 {
		c.ShutdownTimeout = DefaultTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// NewJSONLogger returns a slog JSON logger writing to w at level.
func NewJSONLogger(w io.Writer, level slog.Level) *slog.Logger {
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level}))
}

// Server is the HTTP front of a Backend. It answers /healthz at once and
// /readyz and /v1/score once SetBackend has been called.
type Server struct {
	cfg      Config
	log      *slog.Logger
	metrics  *Metrics
	backend  atomic.Pointer[backendBox]
	inflight atomic.Int64
	handler  http.Handler
}

type backendBox struct{ b Backend }

// Route is one endpoint of the API; Routes lists them for the OpenAPI
// document's drift test.
type Route struct {
	Path    string
	Methods []string // methods answered; others get 405
	name    string   // metrics label
	handler http.HandlerFunc
}

// Routes are the server's endpoints, as registered on its mux.
func (s *Server) Routes() []Route {
	get := []string{http.MethodGet}
	return []Route{
		{"/", get, "page", s.handlePage},
		{"/openapi.json", get, "openapi", s.handleOpenAPI},
		{"/v1/score", []string{http.MethodPost}, "score", s.handleScore},
		{"/v1/info", get, "info", s.handleInfo},
		{"/healthz", get, "healthz", s.handleHealth},
		{"/readyz", get, "readyz", s.handleReady},
		{"/metrics", get, "metrics", s.handleMetrics},
	}
}

// New returns a server that is live but not ready.
func New(cfg Config) *Server {
	cfg = cfg.withDefaults()
	s := &Server{cfg: cfg, log: cfg.Logger, metrics: NewMetrics()}
	mux := http.NewServeMux()
	for _, rt := range s.Routes() {
		pattern := rt.Path
		if pattern == "/" {
			pattern = "/{$}" // only the page itself; other paths are 404
		}
		mux.Handle(pattern, s.wrap(rt.name, allow(rt.Methods, rt.handler)))
	}
	mux.Handle("/", s.wrap("other", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, api.CodeNotFound, "no such endpoint: "+r.URL.Path)
	})))
	s.handler = mux
	return s
}

// allow answers 405 with an Allow header for methods h does not serve (HEAD
// is served where GET is).
func allow(methods []string, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		for _, m := range methods {
			if r.Method == m || (m == http.MethodGet && r.Method == http.MethodHead) {
				h(w, r)
				return
			}
		}
		w.Header().Set("Allow", strings.Join(methods, ", "))
		writeError(w, http.StatusMethodNotAllowed, api.CodeMethodNotAllowed, "use "+strings.Join(methods, " or "))
	}
}

// Handler is the server's HTTP handler.
func (s *Server) Handler() http.Handler { return s.handler }

// Metrics are the server's counters.
func (s *Server) Metrics() *Metrics { return s.metrics }

// SetBackend installs the (loaded, warmed-up) backend and makes the server
// ready; nil makes it unready again (used during shutdown).
func (s *Server) SetBackend(b Backend) {
	if b == nil {
		s.backend.Store(nil)
		return
	}
	s.backend.Store(&backendBox{b})
}

func (s *Server) current() Backend {
	if box := s.backend.Load(); box != nil {
		return box.b
	}
	return nil
}

// Ready reports whether score requests are accepted.
func (s *Server) Ready() bool { return s.current() != nil }

// Serve answers on ln until ctx ends, then stops accepting connections,
// marks itself unready and waits (up to ShutdownTimeout) for in-flight
// requests to finish.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	hs := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	s.log.Info("shutting down", "in_flight", s.inflight.Load())
	s.SetBackend(nil)
	sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	err := hs.Shutdown(sctx)
	<-errc
	if err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	s.log.Info("stopped")
	return nil
}

// recorder captures the status and size of a response.
type recorder struct {
	http.ResponseWriter
	code  int
	bytes int64
}

// WriteHeader records the first status.
func (r *recorder) WriteHeader(code int) {
	if r.code == 0 {
		r.code = code
	}
	r.ResponseWriter.WriteHeader(code)
}

// Write counts the bytes (an implicit 200 if no status was set).
func (r *recorder) Write(b []byte) (int, error) {
	if r.code == 0 {
		r.code = http.StatusOK
	}
	n, err := r.ResponseWriter.Write(b)
	r.bytes += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach the connection.
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// wrap adds panic recovery, metrics and the access log around h.
func (s *Server) wrap(name string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &recorder{ResponseWriter: w}
		s.metrics.addInflight(1)
		defer func() {
			v := recover()
			if v != nil {
				if v == http.ErrAbortHandler {
					s.metrics.addInflight(-1)
					panic(v)
				}
				s.log.Error("handler panic", "handler", name, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
				if rec.code == 0 {
					writeError(rec, http.StatusInternalServerError, api.CodeInternal, "internal error")
				}
			}
			s.metrics.addInflight(-1)
			code := rec.code
			if code == 0 {
				code = http.StatusOK
			}
			d := time.Since(start)
			s.metrics.ObserveRequest(name, code, d)
			if name == "score" || code >= 500 {
				s.log.Info("request", "method", r.Method, "path", r.URL.Path, "status", code,
					"duration_ms", float64(d.Microseconds())/1000, "bytes_in", r.ContentLength,
					"bytes_out", rec.bytes, "remote", r.RemoteAddr)
			}
		}()
		h.ServeHTTP(rec, r)
	})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, code api.ErrorCode, msg string) {
	writeJSON(w, status, api.ErrorBody{Error: msg, Code: code})
}

//go:embed openapi.json
var openAPIDoc []byte

// OpenAPI is the API's OpenAPI 3 document, as served at /openapi.json.
func OpenAPI() []byte { return append([]byte(nil), openAPIDoc...) }

func (s *Server) handleOpenAPI(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	_, _ = w.Write(openAPIDoc)
}

func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, api.Status{Status: "ok"})
}

func (s *Server) handleReady(w http.ResponseWriter, r *http.Request) {
	if !s.Ready() {
		w.Header().Set("Retry-After", s.retryAfter())
		writeJSON(w, http.StatusServiceUnavailable, api.Status{Status: "loading"})
		return
	}
	writeJSON(w, http.StatusOK, api.Status{Status: "ready"})
}

// info describes the current backend (Ready false while loading).
func (s *Server) info() api.Info {
	in := api.Info{Model: s.cfg.Model, MaxFiles: s.cfg.MaxParts, MaxBytes: s.cfg.MaxBytes}
	b := s.current()
	if b == nil {
		return in
	}
	in.Ready = true
	if d, ok := b.(describer); ok {
		in.Method, in.MaxBatch, in.Resolution = d.Method(), d.MaxBatch(), d.Resolution()
	}
	if c, ok := b.(interface{ CLIPConfig() clip.Config }); ok {
		in.Backbone = c.CLIPConfig().Backbone
	}
	if p, ok := b.(PromptBackend); ok {
		in.UsesPrompt = p.UsesPrompt()
	}
	if o, ok := b.(OutputsBackend); ok {
		in.Outputs = o.Outputs()
	}
	return in
}

func (s *Server) handleInfo(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.info())
}

func (s *Server) handleMetrics(w http.ResponseWriter, r *http.Request) {
	var stats *clipagiqa.ScorerStats
	b := s.current()
	if b != nil {
		st := b.Stats()
		stats = &st
	}
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	if err := s.metrics.WritePrometheus(w, b != nil, stats); err != nil {
		s.log.Warn("write metrics", "err", err)
	}
}

func (s *Server) retryAfter() string {
	return strconv.Itoa(int(max(1, (s.cfg.RetryAfter+time.Second-1)/time.Second)))
}

// Result is one image's outcome (the wire type api.Result).
type Result = api.Result

// Response is the body of a successful score request (api.Response).
type Response = api.Response

// errSlowBody reports a body not received within the timeout.
var errSlowBody = errors.New("request body not received in time")

// classify maps an error to its HTTP status and error code; bad input is always 4xx.
func classify(err error) (int, api.ErrorCode) {
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		return http.StatusRequestEntityTooLarge, api.CodeTooLarge
	case errors.Is(err, errSlowBody):
		return http.StatusRequestTimeout, api.CodeUploadTimeout
	case errors.Is(err, imageprep.ErrTooManyPixels):
		return http.StatusUnprocessableEntity, api.CodeTooManyPixels
	case errors.Is(err, clipagiqa.ErrInvalidImage):
		return http.StatusBadRequest, api.CodeInvalidImage
	case errors.Is(err, clipagiqa.ErrNoPrompt):
		return http.StatusBadRequest, api.CodeMissingPrompt
	case errors.Is(err, clipagiqa.ErrOverloaded), errors.Is(err, clipagiqa.ErrClosed):
		return http.StatusServiceUnavailable, api.CodeOverloaded
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout, api.CodeScoreTimeout
	case errors.Is(err, context.Canceled):
		return 499, api.CodeCanceled // client closed the request (nginx's convention); nobody reads it
	}
	return http.StatusInternalServerError, api.CodeInternal
}

// messageOf is what a client sees: the error for 4xx, a generic text for 5xx
// (whose details go to the log).
func messageOf(code int, err error) string {
	switch code {
	case http.StatusServiceUnavailable:
		return "server overloaded, retry later"
	case http.StatusGatewayTimeout:
		return "scoring timed out"
	case http.StatusInternalServerError:
		return "internal error"
	}
	return err.Error()
}

// readBody reads r fully, turning a read deadline into errSlowBody.
func readBody(r io.Reader) ([]byte, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return nil, errSlowBody
		}
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, fmt.Errorf("request body larger than %d bytes: %w", mbe.Limit, err)
		}
		return nil, fmt.Errorf("%w: reading body: %w", clipagiqa.ErrInvalidImage, err)
	}
	return data, nil
}

// upload is a score request's body in the making.
type upload struct {
	raw io.Reader // the body before the size limit, for draining
}

func (s *Server) fail(w http.ResponseWriter, r *http.Request, up *upload, err error) {
	code, ecode := classify(err)
	if code >= 500 && code != http.StatusServiceUnavailable && code != http.StatusGatewayTimeout {
		s.log.Error("score failed", "status", code, "err", err)
	}
	if code == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", s.retryAfter())
	}
	if code == http.StatusRequestEntityTooLarge && up != nil {
		s.refuseLarge(w, up, ecode, messageOf(code, err))
		return
	}
	writeError(w, code, ecode, messageOf(code, err))
}

// refuseLarge answers 413 at once with Connection: close, then reads and
// discards what the client is still sending (at most DrainBytes, within
// Timeout): a client that writes its whole body before reading gets the
// status instead of a reset from closing a socket with unread data.
func (s *Server) refuseLarge(w http.ResponseWriter, up *upload, code api.ErrorCode, msg string) {
	rc := http.NewResponseController(w)
	_ = rc.EnableFullDuplex() // HTTP/1: keep reading the body after answering
	w.Header().Set("Connection", "close")
	writeError(w, http.StatusRequestEntityTooLarge, code, msg)
	_ = rc.Flush()
	_ = rc.SetReadDeadline(time.Now().Add(s.cfg.Timeout))
	_, _ = io.CopyN(io.Discard, up.raw, s.cfg.DrainBytes)
}

// imagePrompt is one image of a request with its optional prompt.
type imagePrompt struct {
	name      string
	data      []byte
	prompt    string
	hasPrompt bool
}

// scored is one image's outcome: its score, its alignment when the method
// predicts one, and whether its prompt was used (nil when none was sent).
type scored struct {
	score     float64
	alignment *float64
	used      *bool
}

// score scores one image, with its prompt when it has one.
func score(ctx context.Context, b Backend, im imagePrompt) (scored, error) {
	var out scored
	if ob, ok := b.(OutputsBackend); ok {
		if names := ob.Outputs(); len(names) > 1 {
			if im.hasPrompt {
				used := ob.UsesPrompt()
				out.used = &used
			}
			vs, err := ob.ScoreBytesOutputs(ctx, im.data, im.prompt)
			if err != nil {
				return out, err
			}
			out.score = vs[0]
			for i, n := range names {
				if n == "alignment" && i < len(vs) {
					out.alignment = &vs[i]
				}
			}
			return out, nil
		}
	}
	var err error
	if !im.hasPrompt {
		out.score, err = b.ScoreBytes(ctx, im.data)
		return out, err
	}
	pb, ok := b.(PromptBackend)
	if !ok {
		used := false
		out.used = &used
		out.score, err = b.ScoreBytes(ctx, im.data)
		return out, err
	}
	used := pb.UsesPrompt()
	out.used = &used
	out.score, err = pb.ScoreBytesPrompt(ctx, im.data, im.prompt)
	return out, err
}

func (s *Server) handleScore(w http.ResponseWriter, r *http.Request) {
	b := s.current()
	if b == nil {
		w.Header().Set("Retry-After", s.retryAfter())
		writeError(w, http.StatusServiceUnavailable, api.CodeNotReady, "model not ready")
		return
	}
	if n := s.inflight.Add(1); n > int64(s.cfg.MaxInFlight) {
		s.inflight.Add(-1)
		s.fail(w, r, nil, clipagiqa.ErrOverloaded)
		return
	}
	defer s.inflight.Add(-1)
	up := &upload{raw: r.Body}
	if r.ContentLength > s.cfg.MaxBytes {
		s.refuseLarge(w, up, api.CodeTooLarge, fmt.Sprintf("request body of %d bytes is larger than %d", r.ContentLength, s.cfg.MaxBytes))
		return
	}
	mt, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil {
		writeError(w, http.StatusUnsupportedMediaType, api.CodeUnsupportedMediaType,
			"missing or invalid Content-Type: send image/*, application/octet-stream or multipart/form-data")
		return
	}
	multi := mt == "multipart/form-data"
	if !multi && !strings.HasPrefix(mt, "image/") && mt != "application/octet-stream" {
		writeError(w, http.StatusUnsupportedMediaType, api.CodeUnsupportedMediaType,
			fmt.Sprintf("Content-Type %s: send image/*, application/octet-stream or multipart/form-data", mt))
		return
	}
	// Bound the upload in size and time; a failed deadline set (e.g. on a
	// recorder in tests) only loses the time bound.
	deadline := time.Now().Add(s.cfg.Timeout)
	_ = http.NewResponseController(w).SetReadDeadline(deadline)
	r.Body = http.MaxBytesReader(w, r.Body, s.cfg.MaxBytes)
	ctx, cancel := context.WithDeadline(r.Context(), deadline)
	defer cancel()
	q := r.URL.Query()
	defaultPrompt, hasDefault := q.Get("prompt"), q.Has("prompt")
	if multi {
		s.scoreMultipart(ctx, w, r, up, b, params["boundary"], defaultPrompt, hasDefault)
		return
	}
	data, err := readBody(r.Body)
	if err != nil {
		s.fail(w, r, up, err)
		return
	}
	if len(data) == 0 {
		writeError(w, http.StatusBadRequest, api.CodeBadRequest, "empty body: send the image file as the request body")
		return
	}
	name := q.Get("name")
	if name == "" {
		name = "image"
	}
	im := imagePrompt{name: name, data: data, prompt: defaultPrompt, hasPrompt: hasDefault}
	v, err := score(ctx, b, im)
	if err != nil {
		s.metrics.ObserveImages(0, 1)
		s.fail(w, r, nil, err)
		return
	}
	s.metrics.ObserveImages(1, 0)
	res := Result{Image: name, Score: &v.score, Alignment: v.alignment, PromptUsed: v.used}
	if hasDefault {
		res.Prompt = defaultPrompt
	}
	writeJSON(w, http.StatusOK, Response{Results: []Result{res}})
}

// maxPromptBytes bounds one prompt field of a multipart request.
const maxPromptBytes = 64 << 10

// scoreMultipart scores every file part; bad parts get an error entry while
// good parts are scored. Text parts named "prompt" give the files their
// prompts in order (the k-th prompt goes with the k-th file); files without
// one take the query's ?prompt=, if any.
func (s *Server) scoreMultipart(ctx context.Context, w http.ResponseWriter, r *http.Request, up *upload, b Backend,
	boundary, defaultPrompt string, hasDefault bool) {
	if boundary == "" {
		writeError(w, http.StatusBadRequest, api.CodeBadRequest, "multipart/form-data without a boundary")
		return
	}
	mr := multipart.NewReader(r.Body, boundary)
	var files []imagePrompt
	var prompts []string
	for {
		part, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) || errors.Is(err, os.ErrDeadlineExceeded) {
				_, err = readBody(errReader{err})
			} else {
				err = fmt.Errorf("%w: malformed multipart body: %w", clipagiqa.ErrInvalidImage, err)
			}
			s.fail(w, r, up, err)
			return
		}
		if part.FormName() == "prompt" && part.FileName() == "" {
			text, err := readBody(io.LimitReader(part, maxPromptBytes+1))
			part.Close()
			if err != nil {
				s.fail(w, r, up, err)
				return
			}
			if len(text) > maxPromptBytes {
				writeError(w, http.StatusBadRequest, api.CodeBadRequest, fmt.Sprintf("prompt %d is longer than %d bytes", len(prompts), maxPromptBytes))
				return
			}
			prompts = append(prompts, string(text))
			continue
		}
		if len(files) == s.cfg.MaxParts {
			part.Close()
			s.refuseLarge(w, up, api.CodeTooManyFiles, fmt.Sprintf("more than %d files in one request", s.cfg.MaxParts))
			return
		}
		name := part.FileName()
		if name == "" {
			name = part.FormName()
		}
		if name == "" {
			name = fmt.Sprintf("part-%d", len(files))
		}
		data, err := readBody(part)
		part.Close()
		if err != nil {
			s.fail(w, r, up, err)
			return
		}
		files = append(files, imagePrompt{name: name, data: data})
	}
	if len(files) == 0 {
		writeError(w, http.StatusBadRequest, api.CodeBadRequest, "multipart body has no files")
		return
	}
	if len(prompts) > len(files) {
		writeError(w, http.StatusBadRequest, api.CodeBadRequest,
			fmt.Sprintf("%d prompt fields for %d files: send at most one prompt per file, in the files' order", len(prompts), len(files)))
		return
	}
	for i := range files {
		if i < len(prompts) {
			files[i].prompt, files[i].hasPrompt = prompts[i], true
		} else if hasDefault {
			files[i].prompt, files[i].hasPrompt = defaultPrompt, true
		}
	}
	results := make([]Result, len(files))
	errs := make([]error, len(files))
	var wg sync.WaitGroup
	for i, im := range files {
		results[i].Image = im.name
		if im.hasPrompt {
			results[i].Prompt = im.prompt
		}
		if len(im.data) == 0 {
			errs[i] = fmt.Errorf("%w: empty file", clipagiqa.ErrInvalidImage)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			v, err := score(ctx, b, im)
			if err == nil {
				results[i].Score, results[i].Alignment = &v.score, v.alignment
			}
			results[i].PromptUsed = v.used
			errs[i] = err
		}()
	}
	wg.Wait()
	ok := 0
	var first error
	for i, err := range errs {
		if err == nil {
			ok++
			continue
		}
		if first == nil {
			first = err
		}
		code, ecode := classify(err)
		results[i].Error, results[i].Code = messageOf(code, err), ecode
	}
	s.metrics.ObserveImages(ok, len(files)-ok)
	if ok > 0 {
		writeJSON(w, http.StatusOK, Response{Results: results})
		return
	}
	code, ecode := classify(first)
	if code == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", s.retryAfter())
	}
	if code == http.StatusInternalServerError {
		s.log.Error("score failed", "status", code, "err", first)
	}
	writeJSON(w, code, api.ErrorBody{Error: "no image could be scored: " + messageOf(code, first), Code: ecode, Results: results})
}

// errReader replays an error through readBody's classification.
type errReader struct{ err error }

// Read fails with the stored error.
func (e errReader) Read([]byte) (int, error) { return 0, e.err }
