package serve

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/clipagiqa/clipagiqa/serve/api"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A client that writes a whole 36 MB body before reading gets the 413 (with
// its code), not a connection reset: the server answers early and drains.
func TestOversizedBodyGets413NotReset(t *testing.T) {
	s := New(Config{Logger: quietLogger()}) // default 32 MiB limit
	s.SetBackend(errBackend())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	defer func() { cancel(); <-done }()

	body := bytes.Repeat([]byte{0xA5}, 36_000_000)
	tests := []struct {
		name string
		head string
		data []byte
	}{
		{"Content-Length", fmt.Sprintf("Content-Type: image/png\r\nContent-Length: %d\r\n", len(body)), body},
		{"chunked", "Content-Type: image/png\r\nTransfer-Encoding: chunked\r\n", chunked(body)},
		{"multipart", "", nil}, // filled below
	}
	var mp bytes.Buffer
	mw := multipart.NewWriter(&mp)
	fw, _ := mw.CreateFormFile("file", "big.png")
	_, _ = fw.Write(body)
	_ = mw.Close()
	tests[2].head = "Content-Type: " + mw.FormDataContentType() + "\r\nTransfer-Encoding: chunked\r\n"
	tests[2].data = chunked(mp.Bytes())
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", ln.Addr().String())
			require.NoError(t, err)
			defer conn.Close()
			require.NoError(t, conn.SetDeadline(time.Now().Add(60*time.Second)))
			_, err = fmt.Fprintf(conn, "POST /v1/score HTTP/1.1\r\nHost: x\r\n%s\r\n", tc.head)
			require.NoError(t, err)
			_, err = conn.Write(tc.data) // all of it, before reading anything
			require.NoError(t, err, "the server keeps reading while the client sends")
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			require.NoError(t, err, "the client reads the answer")
			defer resp.Body.Close()
			assert.Equal(t, http.StatusRequestEntityTooLarge, resp.StatusCode)
			assert.True(t, resp.Close, "Connection: close")
			var eb api.ErrorBody
			require.NoError(t, json.NewDecoder(resp.Body).Decode(&eb))
			assert.Equal(t, api.CodeTooLarge, eb.Code)
			assert.Contains(t, eb.Error, "larger than")
		})
	}
}

// chunked encodes b in 1 MiB chunks.
func chunked(b []byte) []byte {
	var out bytes.Buffer
	for len(b) > 0 {
		n := min(len(b), 1<<20)
		fmt.Fprintf(&out, "%x\r\n", n)
		out.Write(b[:n])
		out.WriteString("\r\n")
		b = b[n:]
	}
	out.WriteString("0\r\n\r\n")
	return out.Bytes()
}

// Prompts reach the result (query for a raw body; prompt parts by file
// order, the query for the rest), and CLIP-AGIQA reports them unused and
// scores the same as without.
func TestPromptsAcceptedAndReportedUnused(t *testing.T) {
	f := loadFixture(t)
	_, ts := newTestServer(t, scorer(t), Config{})
	r := post(t, ts.URL+"/v1/score?name=a&prompt=a+red+fox", "image/png", bytes.NewReader(f.images[0]))
	require.Equal(t, http.StatusOK, r.code, r.Error)
	res := r.Res[0]
	assert.Equal(t, "a red fox", res.Prompt)
	require.NotNil(t, res.PromptUsed)
	assert.False(t, *res.PromptUsed)
	assert.InDelta(t, f.want[0], *res.Score, scoreAtol)

	var b bytes.Buffer
	mw := multipart.NewWriter(&b)
	for i, p := range []string{"one", "", "three"} {
		fw, err := mw.CreateFormFile("file", f.names[i])
		require.NoError(t, err)
		_, _ = fw.Write(f.images[i])
		if p != "" {
			require.NoError(t, mw.WriteField("prompt", p))
		}
	}
	require.NoError(t, mw.Close())
	r = post(t, ts.URL+"/v1/score?prompt=default", mw.FormDataContentType(), &b)
	require.Equal(t, http.StatusOK, r.code, r.Error)
	require.Len(t, r.Res, 3)
	// Two prompt parts: the first two files get them, the third the query's.
	for i, want := range []string{"one", "three", "default"} {
		assert.Equal(t, want, r.Res[i].Prompt, i)
		require.NotNil(t, r.Res[i].PromptUsed)
		assert.False(t, *r.Res[i].PromptUsed)
		assert.InDelta(t, f.want[i], *r.Res[i].Score, scoreAtol)
	}
	// Without prompts there is no prompt_used field at all.
	raw := postRaw(t, ts.URL+"/v1/score", "image/png", f.images[1])
	assert.NotContains(t, string(raw), "prompt")

	// More prompts than files is refused with its code.
	b.Reset()
	mw = multipart.NewWriter(&b)
	fw, _ := mw.CreateFormFile("file", "a.png")
	_, _ = fw.Write(f.images[0])
	_ = mw.WriteField("prompt", "x")
	_ = mw.WriteField("prompt", "y")
	_ = mw.Close()
	resp, err := http.Post(ts.URL+"/v1/score", mw.FormDataContentType(), &b)
	require.NoError(t, err)
	var eb api.ErrorBody
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&eb))
	resp.Body.Close()
	assert.Equal(t, http.StatusBadRequest, resp.StatusCode)
	assert.Equal(t, api.CodeBadRequest, eb.Code)
}

func postRaw(t *testing.T, url, ctype string, body []byte) []byte {
	t.Helper()
	resp, err := http.Post(url, ctype, bytes.NewReader(body))
	require.NoError(t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode, string(raw))
	return raw
}

// Error bodies carry the code of their cause; per-image failures too.
func TestErrorCodes(t *testing.T) {
	f := loadFixture(t)
	_, ts := newTestServer(t, scorer(t), Config{MaxBytes: 1 << 20})
	tests := []struct {
		name  string
		ctype string
		body  []byte
		code  api.ErrorCode
	}{
		{"empty", "image/png", nil, api.CodeBadRequest},
		{"garbage", "image/png", []byte("nope"), api.CodeInvalidImage},
		{"too many pixels", "image/png", pngChunks(30000, 30000, 2, nil), api.CodeTooManyPixels},
		{"media type", "text/plain", f.images[0], api.CodeUnsupportedMediaType},
		{"too large", "image/png", make([]byte, 2<<20), api.CodeTooLarge},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := http.Post(ts.URL+"/v1/score", tc.ctype, bytes.NewReader(tc.body))
			require.NoError(t, err)
			var eb api.ErrorBody
			require.NoError(t, json.NewDecoder(resp.Body).Decode(&eb))
			resp.Body.Close()
			assert.Equal(t, tc.code, eb.Code, eb.Error)
		})
	}
	ct, body := multipartBody(t, []filePart{{"ok.png", f.images[0]}, {"bad.png", []byte("x")}})
	r := post(t, ts.URL+"/v1/score", ct, bytes.NewReader(body))
	require.Equal(t, http.StatusOK, r.code)
	assert.Empty(t, r.Res[0].Code)
	assert.Equal(t, api.CodeInvalidImage, r.Res[1].Code)
}

// /v1/info names the model and method; not ready before the backend.
func TestInfo(t *testing.T) {
	s, ts := newTestServer(t, nil, Config{Model: "tiny"})
	get := func() api.Info {
		resp, err := http.Get(ts.URL + "/v1/info")
		require.NoError(t, err)
		defer resp.Body.Close()
		var in api.Info
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&in))
		return in
	}
	in := get()
	assert.False(t, in.Ready)
	assert.Equal(t, "tiny", in.Model)
	s.SetBackend(scorer(t))
	in = get()
	assert.True(t, in.Ready)
	assert.Equal(t, "agiqa", in.Method)
	assert.Equal(t, "ViT", in.Backbone)
	assert.Equal(t, 224, in.Resolution)
	assert.Equal(t, 8, in.MaxBatch)
	assert.False(t, in.UsesPrompt)
	assert.Equal(t, int64(DefaultMaxBytes), in.MaxBytes)
}

// promptBackend scores an image by its prompt's length and records the prompts.
type promptBackend struct {
	fakeBackend
	mu   sync.Mutex
	seen map[string]string // image bytes → prompt
}

func (p *promptBackend) UsesPrompt() bool { return true }

func (p *promptBackend) ScoreBytesPrompt(ctx context.Context, data []byte, prompt string) (float64, error) {
	p.mu.Lock()
	p.seen[string(data)] = prompt
	p.mu.Unlock()
	return float64(len(prompt)), nil
}

// A prompt-aware backend gets each image's own prompt, reports them used,
// and /v1/info says it uses prompts.
func TestPromptsReachPromptAwareBackend(t *testing.T) {
	pb := &promptBackend{fakeBackend: errBackend(), seen: map[string]string{}}
	_, ts := newTestServer(t, pb, Config{})
	var b bytes.Buffer
	mw := multipart.NewWriter(&b)
	for _, f := range []struct{ name, data string }{{"a", "AAA"}, {"b", "BBB"}} {
		fw, err := mw.CreateFormFile("file", f.name)
		require.NoError(t, err)
		_, _ = fw.Write([]byte(f.data))
	}
	require.NoError(t, mw.WriteField("prompt", "a cat"))
	require.NoError(t, mw.WriteField("prompt", "a red fox"))
	require.NoError(t, mw.Close())
	r := post(t, ts.URL+"/v1/score", mw.FormDataContentType(), &b)
	require.Equal(t, http.StatusOK, r.code, r.Error)
	assert.Equal(t, map[string]string{"AAA": "a cat", "BBB": "a red fox"}, pb.seen)
	for i, want := range []float64{5, 9} {
		assert.Equal(t, want, *r.Res[i].Score)
		require.NotNil(t, r.Res[i].PromptUsed)
		assert.True(t, *r.Res[i].PromptUsed)
	}
	resp, err := http.Get(ts.URL + "/v1/info")
	require.NoError(t, err)
	var in api.Info
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&in))
	resp.Body.Close()
	assert.True(t, in.UsesPrompt)
}
