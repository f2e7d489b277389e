package serve

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"image/jpeg"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clipagiqa/clipagiqa/clipagiqa"
	"github.com/clipagiqa/clipagiqa/torch"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestScoreMatchesReference(t *testing.T) {
	f := loadFixture(t)
	_, ts := newTestServer(t, scorer(t), Config{})
	for i, img := range f.images {
		r := post(t, ts.URL+"/v1/score?name="+f.names[i], "image/png", bytes.NewReader(img))
		require.Equal(t, http.StatusOK, r.code, r.Error)
		require.Len(t, r.Res, 1)
		assert.Equal(t, f.names[i], r.Res[0].Image)
		require.NotNil(t, r.Res[0].Score)
		assert.InDelta(t, f.want[i], *r.Res[0].Score, scoreAtol, f.names[i])
	}
	// All eight in one multipart request, in order.
	var parts []filePart
	for i := range f.images {
		parts = append(parts, filePart{f.names[i], f.images[i]})
	}
	ct, body := multipartBody(t, parts)
	r := post(t, ts.URL+"/v1/score", ct, bytes.NewReader(body))
	require.Equal(t, http.StatusOK, r.code, r.Error)
	require.Len(t, r.Res, len(f.images))
	for i, res := range r.Res {
		assert.Equal(t, f.names[i], res.Image)
		require.NotNil(t, res.Score, res.Error)
		assert.InDelta(t, f.want[i], *res.Score, scoreAtol, f.names[i])
	}
}

// 8 clients × 20 requests get what one client gets, and the reference.
func TestConcurrentClientsMatchSequential(t *testing.T) {
	f := loadFixture(t)
	sc := scorer(t)
	_, ts := newTestServer(t, sc, Config{})
	seq := make([]float64, len(f.images))
	for i, img := range f.images {
		r := post(t, ts.URL+"/v1/score", "image/png", bytes.NewReader(img))
		require.Equal(t, http.StatusOK, r.code, r.Error)
		seq[i] = *r.Res[0].Score
	}
	const clients, per = 8, 20
	before := sc.Stats()
	type obs struct {
		img   int
		score float64
		err   string
	}
	got := make([][]obs, clients)
	var wg sync.WaitGroup
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range per {
				i := (c*3 + j) % len(f.images)
				resp, err := http.Post(ts.URL+"/v1/score", "image/png", bytes.NewReader(f.images[i]))
				if err != nil {
					got[c] = append(got[c], obs{img: i, err: err.Error()})
					continue
				}
				var r Response
				raw, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK || json.Unmarshal(raw, &r) != nil || len(r.Results) != 1 || r.Results[0].Score == nil {
					got[c] = append(got[c], obs{img: i, err: fmt.Sprintf("%d %s", resp.StatusCode, raw)})
					continue
				}
				got[c] = append(got[c], obs{img: i, score: *r.Results[0].Score})
			}
		}()
	}
	wg.Wait()
	worstSeq, worstRef := 0.0, 0.0
	for c := range clients {
		require.Len(t, got[c], per)
		for _, o := range got[c] {
			require.Empty(t, o.err)
			worstSeq = math.Max(worstSeq, math.Abs(o.score-seq[o.img]))
			worstRef = math.Max(worstRef, math.Abs(o.score-f.want[o.img]))
		}
	}
	after := sc.Stats()
	t.Logf("max |concurrent-sequential| %.3g, |concurrent-reference| %.3g; %d images in %d batches",
		worstSeq, worstRef, after.Images-before.Images, after.Batches-before.Batches)
	assert.LessOrEqual(t, worstSeq, 1e-6)
	assert.LessOrEqual(t, worstRef, scoreAtol)
	assert.Equal(t, uint64(clients*per), after.Images-before.Images)
}

func TestMalformedInput(t *testing.T) {
	f := loadFixture(t)
	s, ts := newTestServer(t, scorer(t), Config{MaxBytes: 1 << 20})
	var jpg bytes.Buffer
	require.NoError(t, jpeg.Encode(&jpg, image.NewRGBA(image.Rect(0, 0, 64, 48)), nil))
	rng := rand.New(rand.NewPCG(1, 2))
	random := make([]byte, 4096)
	for i := range random {
		random[i] = byte(rng.UintN(256))
	}
	bomb := zipBombPNG(20000, 20000, 8<<20)
	require.Less(t, len(bomb), 64<<10, "the bomb is small on the wire")
	big := make([]byte, 2<<20)

	tests := []struct {
		name  string
		ctype string
		body  io.Reader
		want  int
	}{
		{"empty body", "image/png", bytes.NewReader(nil), http.StatusBadRequest},
		{"wrong content type", "text/plain", bytes.NewReader(f.images[0]), http.StatusUnsupportedMediaType},
		{"no content type", "", bytes.NewReader(f.images[0]), http.StatusUnsupportedMediaType},
		{"form urlencoded", "application/x-www-form-urlencoded", strings.NewReader("a=b"), http.StatusUnsupportedMediaType},
		{"truncated JPEG", "image/jpeg", bytes.NewReader(jpg.Bytes()[:jpg.Len()/2]), http.StatusBadRequest},
		{"JPEG header only", "image/jpeg", bytes.NewReader(jpg.Bytes()[:4]), http.StatusBadRequest},
		{"PNG declaring 30000x30000", "image/png", bytes.NewReader(pngChunks(30000, 30000, 2, nil)), http.StatusUnprocessableEntity},
		{"zip bomb PNG", "image/png", bytes.NewReader(bomb), http.StatusUnprocessableEntity},
		{"PNG with a zero width", "image/png", bytes.NewReader(pngChunks(0, 10, 2, nil)), http.StatusBadRequest},
		{"random bytes", "application/octet-stream", bytes.NewReader(random), http.StatusBadRequest},
		{"PNG magic then garbage", "image/png", bytes.NewReader(append([]byte("\x89PNG\r\n\x1a\n"), random...)), http.StatusBadRequest},
		{"too large (Content-Length)", "image/png", bytes.NewReader(big), http.StatusRequestEntityTooLarge},
		{"too large (chunked)", "image/png", io.MultiReader(bytes.NewReader(big)), http.StatusRequestEntityTooLarge},
		{"multipart without boundary", "multipart/form-data", strings.NewReader("x"), http.StatusBadRequest},
		{"multipart garbage", "multipart/form-data; boundary=zzz", strings.NewReader("not multipart at all"), http.StatusBadRequest},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := post(t, ts.URL+"/v1/score", tc.ctype, tc.body)
			assert.Equal(t, tc.want, r.code, r.Error)
			assert.NotEmpty(t, r.Error, "a JSON error explains the status")
		})
	}
	t.Run("GET", func(t *testing.T) {
		resp, err := http.Get(ts.URL + "/v1/score")
		require.NoError(t, err)
		resp.Body.Close()
		assert.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)
		assert.Equal(t, "POST", resp.Header.Get("Allow"))
	})
	for code := 500; code < 600; code++ {
		assert.Zero(t, s.Metrics().Requests("score", code), "no %d for bad input", code)
	}
	// The server still scores afterwards.
	r := post(t, ts.URL+"/v1/score", "image/png", bytes.NewReader(f.images[0]))
	require.Equal(t, http.StatusOK, r.code)
	assert.InDelta(t, f.want[0], *r.Res[0].Score, scoreAtol)
}

func TestMultipartBadPartsAmongGood(t *testing.T) {
	f := loadFixture(t)
	_, ts := newTestServer(t, scorer(t), Config{MaxParts: 5})
	tests := []struct {
		name   string
		parts  []filePart
		code   int
		scored []bool
	}{
		{"one bad among good", []filePart{
			{"a.png", f.images[0]}, {"notes.txt", []byte("hello")}, {"b.png", f.images[3]},
		}, http.StatusOK, []bool{true, false, true}},
		{"empty and huge parts", []filePart{
			{"empty.png", nil}, {"huge.png", pngChunks(30000, 30000, 2, nil)}, {"c.png", f.images[6]},
		}, http.StatusOK, []bool{false, false, true}},
		{"all bad", []filePart{{"x", []byte("x")}, {"y", []byte("yy")}}, http.StatusBadRequest, []bool{false, false}},
		{"all too many pixels", []filePart{{"h1", pngChunks(30000, 30000, 2, nil)}}, http.StatusUnprocessableEntity, []bool{false}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ct, body := multipartBody(t, tc.parts)
			r := post(t, ts.URL+"/v1/score", ct, bytes.NewReader(body))
			require.Equal(t, tc.code, r.code, r.Error)
			require.Len(t, r.Res, len(tc.parts))
			for i, res := range r.Res {
				assert.Equal(t, tc.parts[i].name, res.Image)
				if tc.scored[i] {
					require.NotNil(t, res.Score, res.Error)
					assert.Empty(t, res.Error)
					idx := map[string]int{"a.png": 0, "b.png": 3, "c.png": 6}[res.Image]
					assert.InDelta(t, f.want[idx], *res.Score, scoreAtol)
				} else {
					assert.Nil(t, res.Score)
					assert.NotEmpty(t, res.Error)
				}
			}
		})
	}
	t.Run("too many parts", func(t *testing.T) {
		var parts []filePart
		for i := range 6 {
			parts = append(parts, filePart{fmt.Sprint(i), f.images[0]})
		}
		ct, body := multipartBody(t, parts)
		r := post(t, ts.URL+"/v1/score", ct, bytes.NewReader(body))
		assert.Equal(t, http.StatusRequestEntityTooLarge, r.code)
	})
}

// rawRequest writes a request head announcing n body bytes, then body, on a
// fresh connection.
func rawRequest(t *testing.T, addr string, n int, body []byte) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	_, err = fmt.Fprintf(conn, "POST /v1/score HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: %d\r\n\r\n", n)
	require.NoError(t, err)
	_, err = conn.Write(body)
	require.NoError(t, err)
	return conn
}

func TestClientDisconnects(t *testing.T) {
	f := loadFixture(t)
	sc := scorer(t)
	s, ts := newTestServer(t, sc, Config{})
	addr := ts.Listener.Addr().String()
	live := torch.LiveTensors()
	finished := func() uint64 {
		var n uint64
		for code := 100; code < 600; code++ {
			n += s.Metrics().Requests("score", code)
		}
		return n
	}

	// Mid-upload: announce the whole image, send a third, hang up.
	img := f.images[1]
	conn := rawRequest(t, addr, len(img), img[:len(img)/3])
	require.NoError(t, conn.Close())
	waitFor(t, func() bool { return finished() == 1 }, "the aborted upload to finish")
	assert.Equal(t, uint64(1), s.Metrics().Requests("score", http.StatusBadRequest))

	// After the upload, before the answer: the score is computed or dropped.
	for range 5 {
		conn := rawRequest(t, addr, len(img), img)
		require.NoError(t, conn.Close())
	}
	waitFor(t, func() bool { return finished() == 6 }, "the abandoned requests to finish")
	waitFor(t, func() bool { return sc.QueueDepth() == 0 }, "the queue to drain")
	for code := 500; code < 600; code++ {
		assert.Zero(t, s.Metrics().Requests("score", code), "status %d", code)
	}
	// A batch of abandoned requests may still be finishing on the batcher
	// after their handlers returned; once it is done nothing may be left.
	waitFor(t, func() bool { return torch.LiveTensors() == live }, "tensors to return to their count before the requests")
	assert.Equal(t, live, torch.LiveTensors(), "no tensors leak")

	// The server is fine.
	r := post(t, ts.URL+"/v1/score", "image/png", bytes.NewReader(img))
	require.Equal(t, http.StatusOK, r.code)
	assert.InDelta(t, f.want[1], *r.Res[0].Score, scoreAtol)
}

func TestSlowUploadTimesOut(t *testing.T) {
	f := loadFixture(t)
	s := New(Config{Timeout: 200 * time.Millisecond, Logger: quietLogger()})
	s.SetBackend(scorer(t))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	defer func() { cancel(); require.NoError(t, <-done) }()

	img := f.images[0]
	conn := rawRequest(t, ln.Addr().String(), len(img), img[:100]) // and then nothing
	defer conn.Close()
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	require.NoError(t, err)
	defer resp.Body.Close()
	assert.Equal(t, http.StatusRequestTimeout, resp.StatusCode)
}

func TestReadiness(t *testing.T) {
	s, ts := newTestServer(t, nil, Config{})
	get := func(path string) (int, http.Header) {
		resp, err := http.Get(ts.URL + path)
		require.NoError(t, err)
		resp.Body.Close()
		return resp.StatusCode, resp.Header
	}
	code, _ := get("/healthz")
	assert.Equal(t, http.StatusOK, code, "live while loading")
	code, hdr := get("/readyz")
	assert.Equal(t, http.StatusServiceUnavailable, code, "not ready while loading")
	assert.Equal(t, "1", hdr.Get("Retry-After"))
	r := post(t, ts.URL+"/v1/score", "image/png", strings.NewReader("x"))
	assert.Equal(t, http.StatusServiceUnavailable, r.code)
	code, _ = get("/metrics")
	assert.Equal(t, http.StatusOK, code)

	s.SetBackend(fakeBackend{score: func(context.Context, []byte) (float64, error) { return 3.5, nil }})
	code, _ = get("/readyz")
	assert.Equal(t, http.StatusOK, code)
	r = post(t, ts.URL+"/v1/score", "image/png", strings.NewReader("x"))
	require.Equal(t, http.StatusOK, r.code)
	assert.Equal(t, 3.5, *r.Res[0].Score)
	code, _ = get("/nope")
	assert.Equal(t, http.StatusNotFound, code)
}

func TestBackendFailuresMapToStatus(t *testing.T) {
	tests := []struct {
		name  string
		score func(ctx context.Context, data []byte) (float64, error)
		cfg   Config
		want  int
		retry bool
	}{
		{"overloaded", func(context.Context, []byte) (float64, error) { return 0, fmt.Errorf("x: %w", clipagiqa.ErrOverloaded) },
			Config{}, http.StatusServiceUnavailable, true},
		{"closed", func(context.Context, []byte) (float64, error) { return 0, clipagiqa.ErrClosed },
			Config{}, http.StatusServiceUnavailable, true},
		{"timeout", func(ctx context.Context, _ []byte) (float64, error) { <-ctx.Done(); return 0, ctx.Err() },
			Config{Timeout: 100 * time.Millisecond}, http.StatusGatewayTimeout, false},
		{"unexpected error", func(context.Context, []byte) (float64, error) { return 0, errors.New("libtorch exploded") },
			Config{}, http.StatusInternalServerError, false},
		{"panic", func(context.Context, []byte) (float64, error) { panic("boom") },
			Config{}, http.StatusInternalServerError, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, ts := newTestServer(t, fakeBackend{score: tc.score}, tc.cfg)
			r := post(t, ts.URL+"/v1/score", "image/png", strings.NewReader("x"))
			assert.Equal(t, tc.want, r.code)
			assert.NotEmpty(t, r.Error)
			assert.NotContains(t, r.Error, "exploded", "internal details stay in the log")
			if tc.retry {
				assert.Equal(t, "1", r.hdr.Get("Retry-After"))
			}
			assert.Equal(t, uint64(1), s.Metrics().Requests("score", tc.want))
			resp, err := http.Get(ts.URL + "/healthz")
			require.NoError(t, err, "the server survives")
			resp.Body.Close()
		})
	}
}

func TestMaxInFlight(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	_, ts := newTestServer(t, fakeBackend{score: func(context.Context, []byte) (float64, error) {
		entered <- struct{}{}
		<-release
		return 1, nil
	}}, Config{MaxInFlight: 1})
	first := make(chan reply, 1)
	go func() { first <- post(t, ts.URL+"/v1/score", "image/png", strings.NewReader("x")) }()
	<-entered
	r := post(t, ts.URL+"/v1/score", "image/png", strings.NewReader("x"))
	assert.Equal(t, http.StatusServiceUnavailable, r.code)
	assert.Equal(t, "1", r.hdr.Get("Retry-After"))
	close(release)
	assert.Equal(t, http.StatusOK, (<-first).code)
}

func TestGracefulShutdownFinishesInFlight(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	s := New(Config{Logger: quietLogger()})
	s.SetBackend(fakeBackend{score: func(context.Context, []byte) (float64, error) {
		close(entered)
		<-release
		return 2.25, nil
	}})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()

	first := make(chan reply, 1)
	go func() { first <- post(t, "http://"+addr+"/v1/score", "image/png", strings.NewReader("x")) }()
	<-entered
	cancel() // as SIGTERM does in `clipagiqa serve`
	waitFor(t, func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err != nil
	}, "the listener to close")
	assert.False(t, s.Ready(), "unready while draining")
	select {
	case err := <-done:
		t.Fatalf("Serve returned (%v) before the in-flight request finished", err)
	default:
	}
	close(release)
	r := <-first
	require.Equal(t, http.StatusOK, r.code)
	assert.Equal(t, 2.25, *r.Res[0].Score)
	require.NoError(t, <-done)
}

// rss is the resident set size in bytes (Linux), or -1.
func rss() int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return -1
	}
	fields := strings.Fields(string(b))
	if len(fields) < 2 {
		return -1
	}
	pages, err := strconv.ParseInt(fields[1], 10, 64)
	if err != nil {
		return -1
	}
	return pages * int64(os.Getpagesize())
}

// Memory stays flat: after a warm-up, 2000 more requests (good and bad)
// leave the tensor count unchanged and the RSS within a bound.
func TestMemoryFlatUnderLoad(t *testing.T) {
	f := loadFixture(t)
	_, ts := newTestServer(t, scorer(t), Config{})
	bodies := [][]byte{f.images[0], f.images[6], f.images[3], []byte("not an image")}
	run := func(total int) {
		const clients = 8
		var wg sync.WaitGroup
		var failed sync.Map
		for c := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := c; j < total; j += clients {
					body := bodies[j%len(bodies)]
					resp, err := http.Post(ts.URL+"/v1/score", "image/png", bytes.NewReader(body))
					if err != nil {
						failed.Store(j, err.Error())
						continue
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if want := map[bool]int{true: 400, false: 200}[j%len(bodies) == 3]; resp.StatusCode != want {
						failed.Store(j, resp.Status)
					}
				}
			}()
		}
		wg.Wait()
		failed.Range(func(k, v any) bool { t.Errorf("request %v: %v", k, v); return true })
	}
	settle := func() int64 {
		runtime.GC()
		debug.FreeOSMemory()
		return rss()
	}
	run(200)
	live, rss0 := torch.LiveTensors(), settle()
	n := 2000
	if testing.Short() {
		n = 400
	}
	run(n)
	rss1 := settle()
	assert.Equal(t, live, torch.LiveTensors(), "tensor count after %d requests", n)
	t.Logf("RSS %.1f MiB → %.1f MiB after %d requests", float64(rss0)/(1<<20), float64(rss1)/(1<<20), n)
	if rss0 > 0 {
		// Allocator caches may still grow a little; a leak of even 16 kB per
		// request would add 32 MiB.
		assert.Less(t, rss1-rss0, int64(24<<20))
	}
}
