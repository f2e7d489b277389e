package serve

import (
	"bytes"
	"compress/zlib"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/clipagiqa/clipagiqa/clipagiqa"
	"github.com/clipagiqa/clipagiqa/internal/reffix"
	"github.com/stretchr/testify/require"
)

// Scores of the fixture images from the original Python code; the README's
// tolerance for them is 1e-6.
const scoreAtol = 1e-6

// testMaxPixels keeps decodes small: 2048×2048.
const testMaxPixels = 1 << 22

var (
	sharedOnce sync.Once
	shared     *clipagiqa.Scorer
	sharedErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if shared != nil {
		shared.Close()
	}
	os.Exit(code)
}

// scorer is one tiny-fixture scorer shared by the package's tests (loading
// takes a fraction of a second, but the tests need many).
func scorer(t testing.TB) *clipagiqa.Scorer {
	t.Helper()
	sharedOnce.Do(func() {
		shared, sharedErr = clipagiqa.LoadScorer(reffix.Path("tiny_clip_vit_fp16.pt"), reffix.Dir(),
			clipagiqa.WithMaxBatch(8), clipagiqa.WithMaxPixels(testMaxPixels))
	})
	require.NoError(t, sharedErr)
	return shared
}

func quietLogger() *slog.Logger { return slog.New(slog.NewJSONHandler(io.Discard, nil)) }

// newTestServer serves b (nil: not ready) on an httptest server.
func newTestServer(t *testing.T, b Backend, cfg Config) (*Server, *httptest.Server) {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = quietLogger()
	}
	s := New(cfg)
	if b != nil {
		s.SetBackend(b)
	}
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(ts.Close)
	return s, ts
}

type fixture struct {
	names  []string
	images [][]byte
	want   []float64
}

func loadFixture(t testing.TB) *fixture {
	t.Helper()
	exp, err := reffix.Load()
	require.NoError(t, err)
	f := &fixture{want: exp.CLIPAGIQA.Scores}
	for i := range 8 {
		name := fmt.Sprintf("img_%d.png", i)
		b, err := os.ReadFile(reffix.Path(name))
		require.NoError(t, err)
		f.names = append(f.names, name)
		f.images = append(f.images, b)
	}
	return f
}

// pngChunks builds a PNG from an IHDR (w×h, bit depth 8, colour type ct) and raw IDAT bytes.
func pngChunks(w, h uint32, ct byte, idat []byte) []byte {
	var b bytes.Buffer
	b.WriteString("\x89PNG\r\n\x1a\n")
	chunk := func(typ string, data []byte) {
		_ = binary.Write(&b, binary.BigEndian, uint32(len(data)))
		crc := crc32.NewIEEE()
		crc.Write([]byte(typ))
		crc.Write(data)
		b.WriteString(typ)
		b.Write(data)
		_ = binary.Write(&b, binary.BigEndian, crc.Sum32())
	}
	ihdr := make([]byte, 13)
	binary.BigEndian.PutUint32(ihdr[0:], w)
	binary.BigEndian.PutUint32(ihdr[4:], h)
	ihdr[8], ihdr[9] = 8, ct
	chunk("IHDR", ihdr)
	chunk("IDAT", idat)
	chunk("IEND", nil)
	return b.Bytes()
}

// zipBombPNG declares a huge grayscale image whose IDAT is a few kB of
// zlib that inflates to n zero bytes: small on the wire, huge in memory.
func zipBombPNG(w, h uint32, n int) []byte {
	var z bytes.Buffer
	zw, _ := zlib.NewWriterLevel(&z, zlib.BestCompression)
	zero := make([]byte, 1<<16)
	for left := n; left > 0; left -= len(zero) {
		_, _ = zw.Write(zero[:min(left, len(zero))])
	}
	_ = zw.Close()
	return pngChunks(w, h, 0, z.Bytes())
}

type filePart struct {
	name string
	data []byte
}

func multipartBody(t testing.TB, parts []filePart) (string, []byte) {
	t.Helper()
	var b bytes.Buffer
	mw := multipart.NewWriter(&b)
	for _, p := range parts {
		w, err := mw.CreateFormFile("file", p.name)
		require.NoError(t, err)
		_, err = w.Write(p.data)
		require.NoError(t, err)
	}
	require.NoError(t, mw.Close())
	return mw.FormDataContentType(), b.Bytes()
}

// reply is a decoded answer of /v1/score.
type reply struct {
	code  int
	hdr   http.Header
	Error string   `json:"error"`
	Res   []Result `json:"results"`
}

func post(t testing.TB, url, ctype string, body io.Reader) reply {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, body)
	require.NoError(t, err)
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	r := reply{code: resp.StatusCode, hdr: resp.Header}
	require.Equal(t, "application/json", resp.Header.Get("Content-Type"), "body: %s", raw)
	require.NoError(t, json.Unmarshal(raw, &r), "body: %s", raw)
	return r
}

// fakeBackend scores with a function, for the HTTP layer's own behaviour.
type fakeBackend struct {
	score func(ctx context.Context, data []byte) (float64, error)
}

func (f fakeBackend) ScoreBytes(ctx context.Context, data []byte) (float64, error) {
	return f.score(ctx, data)
}

func (f fakeBackend) Stats() clipagiqa.ScorerStats {
	return clipagiqa.ScorerStats{MaxBatch: 4, BatchSizes: []uint64{0, 3, 1, 0, 2}, Batches: 6, Images: 13, QueueDepth: 2}
}

// waitFor polls cond (bounded), for state changes made by other goroutines.
func waitFor(t testing.TB, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}
