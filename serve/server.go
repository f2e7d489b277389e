// Package serve is clipagiqa's HTTP scoring server: POST /v1/score with a raw
// image or a multipart form of images, health and readiness probes, and
// Prometheus metrics, on top of a batching clipagiqa.Scorer. It also holds the
// load generator behind `clipagiqa bench-serve`.
package serve

import (
	"context"
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
	"github.com/clipagiqa/clipagiqa/clipagiqa/imageprep"
)

// Backend scores encoded images; *clipagiqa.Scorer is one.
type Backend interface {
	ScoreBytes(ctx context.Context, data []byte) (float64, error)
	Stats() clipagiqa.ScorerStats
}

// HTTP defaults.
const (
	DefaultMaxBytes = 32 << 20
	DefaultTimeout  = 30 * time.Second
)

// Config tunes the HTTP layer; zero fields take the defaults.
type Config struct {
	// MaxBytes caps a request body (default 32 MiB); larger bodies get 413.
	MaxBytes int64
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
	// Logger receives JSON access and error logs (default slog.Default()).
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.MaxBytes <= 0 {
		c.MaxBytes = DefaultMaxBytes
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

// New returns a server that is live but not ready.
func New(cfg Config) *Server {
	cfg = cfg.withDefaults()
	s := &Server{cfg: cfg, log: cfg.Logger, metrics: NewMetrics()}
	mux := http.NewServeMux()
	mux.Handle("/v1/score", s.wrap("score", http.HandlerFunc(s.handleScore)))
	mux.Handle("/healthz", s.wrap("healthz", http.HandlerFunc(s.handleHealth)))
	mux.Handle("/readyz", s.wrap("readyz", http.HandlerFunc(s.handleReady)))
	mux.Handle("/metrics", s.wrap("metrics", http.HandlerFunc(s.handleMetrics)))
	mux.Handle("/", s.wrap("other", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such endpoint: "+r.URL.Path)
	})))
	s.handler = mux
	return s
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
					writeError(rec, http.StatusInternalServerError, "internal error")
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

// errorBody is the JSON of a failed request.
type errorBody struct {
	Error   string   `json:"error"`
	Results []Result `json:"results,omitempty"`
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, errorBody{Error: msg})
}

func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (s *Server) handleReady(w http.ResponseWriter, r *http.Request) {
	if !s.Ready() {
		w.Header().Set("Retry-After", s.retryAfter())
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "loading"})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
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

// Result is one image's outcome: a score, or the reason it has none.
type Result struct {
	Image string   `json:"image"`
	Score *float64 `json:"score,omitempty"`
	Error string   `json:"error,omitempty"`
}

// Response is the body of a successful score request.
type Response struct {
	Results []Result `json:"results"`
}

// errSlowBody reports a body not received within the timeout.
var errSlowBody = errors.New("request body not received in time")

// statusOf maps an error to its HTTP status; bad input is always 4xx.
func statusOf(err error) int {
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, errSlowBody):
		return http.StatusRequestTimeout
	case errors.Is(err, imageprep.ErrTooManyPixels):
		return http.StatusUnprocessableEntity
	case errors.Is(err, clipagiqa.ErrInvalidImage):
		return http.StatusBadRequest
	case errors.Is(err, clipagiqa.ErrOverloaded), errors.Is(err, clipagiqa.ErrClosed):
		return http.StatusServiceUnavailable
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout
	case errors.Is(err, context.Canceled):
		return 499 // client closed the request (nginx's convention); nobody reads it
	}
	return http.StatusInternalServerError
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

func (s *Server) fail(w http.ResponseWriter, err error) {
	code := statusOf(err)
	if code >= 500 && code != http.StatusServiceUnavailable && code != http.StatusGatewayTimeout {
		s.log.Error("score failed", "status", code, "err", err)
	}
	if code == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", s.retryAfter())
	}
	writeError(w, code, messageOf(code, err))
}

func (s *Server) handleScore(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeError(w, http.StatusMethodNotAllowed, "use POST")
		return
	}
	b := s.current()
	if b == nil {
		w.Header().Set("Retry-After", s.retryAfter())
		writeError(w, http.StatusServiceUnavailable, "model not ready")
		return
	}
	if n := s.inflight.Add(1); n > int64(s.cfg.MaxInFlight) {
		s.inflight.Add(-1)
		s.fail(w, clipagiqa.ErrOverloaded)
		return
	}
	defer s.inflight.Add(-1)
	if r.ContentLength > s.cfg.MaxBytes {
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body of %d bytes is larger than %d", r.ContentLength, s.cfg.MaxBytes))
		return
	}
	mt, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil {
		writeError(w, http.StatusUnsupportedMediaType, "missing or invalid Content-Type: send image/*, application/octet-stream or multipart/form-data")
		return
	}
	multi := mt == "multipart/form-data"
	if !multi && !strings.HasPrefix(mt, "image/") && mt != "application/octet-stream" {
		writeError(w, http.StatusUnsupportedMediaType, fmt.Sprintf("Content-Type %s: send image/*, application/octet-stream or multipart/form-data", mt))
		return
	}
	// Bound the upload in size and time; a failed deadline set (e.g. on a
	// recorder in tests) only loses the time bound.
	deadline := time.Now().Add(s.cfg.Timeout)
	_ = http.NewResponseController(w).SetReadDeadline(deadline)
	r.Body = http.MaxBytesReader(w, r.Body, s.cfg.MaxBytes)
	ctx, cancel := context.WithDeadline(r.Context(), deadline)
	defer cancel()
	if multi {
		s.scoreMultipart(ctx, w, r, b, params["boundary"])
		return
	}
	data, err := readBody(r.Body)
	if err != nil {
		s.fail(w, err)
		return
	}
	if len(data) == 0 {
		writeError(w, http.StatusBadRequest, "empty body: send the image file as the request body")
		return
	}
	name := r.URL.Query().Get("name")
	if name == "" {
		name = "image"
	}
	score, err := b.ScoreBytes(ctx, data)
	if err != nil {
		s.metrics.ObserveImages(0, 1)
		s.fail(w, err)
		return
	}
	s.metrics.ObserveImages(1, 0)
	writeJSON(w, http.StatusOK, Response{Results: []Result{{Image: name, Score: &score}}})
}

// scoreMultipart scores every file part; bad parts get an error entry while
// good parts are scored.
func (s *Server) scoreMultipart(ctx context.Context, w http.ResponseWriter, r *http.Request, b Backend, boundary string) {
	if boundary == "" {
		writeError(w, http.StatusBadRequest, "multipart/form-data without a boundary")
		return
	}
	mr := multipart.NewReader(r.Body, boundary)
	var names []string
	var files [][]byte
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
			s.fail(w, err)
			return
		}
		if len(files) == s.cfg.MaxParts {
			part.Close()
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("more than %d files in one request", s.cfg.MaxParts))
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
			s.fail(w, err)
			return
		}
		names = append(names, name)
		files = append(files, data)
	}
	if len(files) == 0 {
		writeError(w, http.StatusBadRequest, "multipart body has no files")
		return
	}
	results := make([]Result, len(files))
	errs := make([]error, len(files))
	var wg sync.WaitGroup
	for i := range files {
		results[i].Image = names[i]
		if len(files[i]) == 0 {
			errs[i] = fmt.Errorf("%w: empty file", clipagiqa.ErrInvalidImage)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			v, err := b.ScoreBytes(ctx, files[i])
			if err == nil {
				results[i].Score = &v
			}
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
		results[i].Error = messageOf(statusOf(err), err)
	}
	s.metrics.ObserveImages(ok, len(files)-ok)
	if ok > 0 {
		writeJSON(w, http.StatusOK, Response{Results: results})
		return
	}
	code := statusOf(first)
	if code == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", s.retryAfter())
	}
	if code == http.StatusInternalServerError {
		s.log.Error("score failed", "status", code, "err", first)
	}
	writeJSON(w, code, errorBody{Error: "no image could be scored: " + messageOf(code, first), Results: results})
}

// errReader replays an error through readBody's classification.
type errReader struct{ err error }

// Read fails with the stored error.
func (e errReader) Read([]byte) (int, error) { return 0, e.err }
