package client_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/clipagiqa/clipagiqa/clipagiqa"
	"github.com/clipagiqa/clipagiqa/internal/reffix"
	"github.com/clipagiqa/clipagiqa/serve"
	"github.com/clipagiqa/clipagiqa/serve/api"
	"github.com/clipagiqa/clipagiqa/serve/client"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The fixture's reference scores (official Python code); tolerance as the README's.
const scoreAtol = 1e-6

var (
	once   sync.Once
	sc     *clipagiqa.Scorer
	scErr  error
	images []client.Image
	want   []float64
)

func TestMain(m *testing.M) {
	code := m.Run()
	if sc != nil {
		sc.Close()
	}
	os.Exit(code)
}

// realServer serves the tiny fixture model on loopback, behind wrap (nil: none).
func realServer(t *testing.T, wrap func(http.Handler) http.Handler) *httptest.Server {
	t.Helper()
	once.Do(func() {
		sc, scErr = clipagiqa.LoadScorer(reffix.Path("tiny_clip_vit_fp16.pt"), reffix.Dir(), clipagiqa.WithMaxBatch(8))
		if scErr != nil {
			return
		}
		exp, err := reffix.Load()
		if err != nil {
			scErr = err
			return
		}
		want = exp.CLIPAGIQA.Scores
		for i := range 8 {
			name := fmt.Sprintf("img_%d.png", i)
			b, err := os.ReadFile(reffix.Path(name))
			if err != nil {
				scErr = err
				return
			}
			images = append(images, client.Image{Name: name, Data: b})
		}
	})
	require.NoError(t, scErr)
	s := serve.New(serve.Config{Model: "tiny", Logger: slog.New(slog.NewJSONHandler(io.Discard, nil))})
	s.SetBackend(sc)
	var h http.Handler = s.Handler()
	if wrap != nil {
		h = wrap(h)
	}
	ts := httptest.NewServer(h) // a real TCP listener on 127.0.0.1
	t.Cleanup(ts.Close)
	return ts
}

func TestScoreMatchesReference(t *testing.T) {
	ts := realServer(t, nil)
	c, err := client.New(ts.URL, client.WithMaxFiles(3)) // 8 images: three requests
	require.NoError(t, err)
	res, err := c.Score(context.Background(), images...)
	require.NoError(t, err)
	require.Len(t, res, len(images))
	for i, r := range res {
		require.Nil(t, r.Err)
		assert.Equal(t, images[i].Name, r.Image)
		assert.InDelta(t, want[i], r.Score, scoreAtol, r.Image)
		assert.Nil(t, r.PromptUsed, "no prompt sent")
	}
	in, err := c.Info(context.Background())
	require.NoError(t, err)
	assert.Equal(t, "agiqa", in.Method)
	assert.Equal(t, "tiny", in.Model)
	assert.True(t, in.Ready)
}

func TestPerImageErrorsAndPrompts(t *testing.T) {
	ts := realServer(t, nil)
	c, err := client.New(ts.URL)
	require.NoError(t, err)
	res, err := c.Score(context.Background(),
		client.Image{Name: "a", Data: images[0].Data, Prompt: "a cat"},
		client.Image{Name: "bad", Data: []byte("not an image")},
		client.Image{Name: "c", Data: images[2].Data})
	require.NoError(t, err)
	require.Len(t, res, 3)
	require.Nil(t, res[0].Err)
	assert.InDelta(t, want[0], res[0].Score, scoreAtol)
	assert.Equal(t, "a cat", res[0].Prompt)
	require.NotNil(t, res[0].PromptUsed)
	assert.False(t, *res[0].PromptUsed, "CLIP-AGIQA does not use prompts")
	require.NotNil(t, res[1].Err)
	assert.ErrorIs(t, res[1].Err, client.ErrInvalidImage)
	assert.Nil(t, res[1].PromptUsed)
	assert.InDelta(t, want[2], res[2].Score, scoreAtol)
	assert.Nil(t, res[2].PromptUsed)

	// Nothing scorable: a request-level *Error with each image's reason.
	_, err = c.Score(context.Background(), client.Image{Name: "x", Data: []byte("x")})
	var e *client.Error
	require.ErrorAs(t, err, &e)
	assert.Equal(t, http.StatusBadRequest, e.Status)
	assert.Equal(t, api.CodeInvalidImage, e.Code)
	require.Len(t, e.Results, 1)
	assert.Equal(t, "x", e.Results[0].Image)
}

// failFirst answers the first n score requests 503 with Retry-After: 1 and
// records when each request arrived.
func failFirst(n int32, arrivals *[]time.Time, mu *sync.Mutex) func(http.Handler) http.Handler {
	var count atomic.Int32
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			*arrivals = append(*arrivals, time.Now())
			mu.Unlock()
			if count.Add(1) <= n {
				_, _ = io.Copy(io.Discard, r.Body)
				w.Header().Set("Retry-After", "1")
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusServiceUnavailable)
				_, _ = io.WriteString(w, `{"error":"server overloaded, retry later","code":"overloaded"}`)
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

func TestRetriesHonourRetryAfter(t *testing.T) {
	var mu sync.Mutex
	var arrivals []time.Time
	ts := realServer(t, failFirst(2, &arrivals, &mu))
	c, err := client.New(ts.URL, client.WithBackoff(time.Millisecond, 5*time.Millisecond))
	require.NoError(t, err)
	res, err := c.Score(context.Background(), images[3])
	require.NoError(t, err)
	assert.InDelta(t, want[3], res[0].Score, scoreAtol)
	require.Len(t, arrivals, 3, "two 503s, then the answer")
	for i := 1; i < 3; i++ {
		// The backoff alone would wait ≤ 6ms; Retry-After asks for 1s.
		assert.GreaterOrEqual(t, arrivals[i].Sub(arrivals[i-1]), time.Second, "retry %d waited for Retry-After", i)
	}
}

func TestRetriesGiveUp(t *testing.T) {
	var mu sync.Mutex
	var arrivals []time.Time
	ts := realServer(t, failFirst(100, &arrivals, &mu))
	c, err := client.New(ts.URL, client.WithRetries(1))
	require.NoError(t, err)
	_, err = c.Score(context.Background(), images[0])
	assert.ErrorIs(t, err, client.ErrOverloaded)
	var e *client.Error
	require.ErrorAs(t, err, &e)
	assert.Equal(t, http.StatusServiceUnavailable, e.Status)
	assert.Equal(t, time.Second, e.RetryAfter)
	assert.Len(t, arrivals, 2, "one try and one retry")

	// A context that ends during the wait stops at once, not after Retry-After.
	c, err = client.New(ts.URL)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = c.Score(ctx, images[0])
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.ErrorIs(t, err, client.ErrOverloaded)
	assert.Less(t, time.Since(start), 900*time.Millisecond)
}

func TestNotReadyAndBadURL(t *testing.T) {
	s := serve.New(serve.Config{Logger: slog.New(slog.NewJSONHandler(io.Discard, nil))})
	ts := httptest.NewServer(s.Handler())
	defer ts.Close()
	c, err := client.New(ts.URL, client.WithRetries(0))
	require.NoError(t, err)
	_, err = c.Score(context.Background(), client.Image{Data: []byte("x")})
	assert.True(t, errors.Is(err, client.ErrNotReady), "%v", err)
	in, err := c.Info(context.Background())
	require.NoError(t, err)
	assert.False(t, in.Ready)

	for _, u := range []string{"ftp://x", "::"} {
		_, err := client.New(u)
		assert.Error(t, err, u)
	}
	_, err = c.Score(context.Background())
	assert.Error(t, err, "no images")
}
