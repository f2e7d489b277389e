// Package client is a Go client for the clipagiqa HTTP API (`clipagiqa
// serve`, documented at /openapi.json). It needs neither cgo nor libtorch.
//
//	c, err := client.New("http://127.0.0.1:8080")
//	res, err := c.Score(ctx, client.Image{Name: "a.jpg", Data: jpegBytes})
//	if err == nil && res[0].Err == nil { fmt.Println(res[0].Score) }
//
// Requests refused with 503 (model loading, queue full) are retried with
// exponential backoff, waiting at least the server's Retry-After.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"mime/multipart"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/clipagiqa/clipagiqa/serve/api"
)

// Image is one image to score.
type Image struct {
	// Name labels the result (default "image-<index>").
	Name string
	// Data is the encoded file (JPEG, PNG, GIF, BMP, WebP).
	Data []byte
	// Prompt is the text the image was generated from, for prompt-aware
	// models ("" sends none). Others accept and ignore it
	// (Result.PromptUsed false).
	Prompt string
}

// Result is one image's outcome.
type Result struct {
	Image string
	// Score is valid when Err is nil.
	Score float64
	// Alignment is the image–prompt alignment from a method that predicts it
	// (IP-IQA on AGIQA-3K); nil otherwise.
	Alignment *float64
	// Err says why the image has no score (its Code is stable).
	Err *Error
	// Prompt echoes the prompt sent; PromptUsed (nil when none was sent)
	// says whether the model used it.
	Prompt     string
	PromptUsed *bool
}

// Error is a failed request or image: the HTTP status, the API's stable
// error code and its message. errors.Is matches Errors by Code, so
// errors.Is(err, client.ErrOverloaded) works.
type Error struct {
	Status     int           // HTTP status (0 for a per-image error inside a 200 answer)
	Code       api.ErrorCode // stable reason
	Message    string
	RetryAfter time.Duration // the server's Retry-After, if any
	// Results, when no image of a request could be scored, has each image's reason.
	Results []Result
}

// Error formats the status, code and message.
func (e *Error) Error() string {
	if e.Status == 0 {
		return fmt.Sprintf("clipagiqa: %s: %s", e.Code, e.Message)
	}
	return fmt.Sprintf("clipagiqa: HTTP %d %s: %s", e.Status, e.Code, e.Message)
}

// Is matches another *Error with the same Code.
func (e *Error) Is(target error) bool {
	var t *Error
	return errors.As(target, &t) && t.Code == e.Code
}

// Errors to compare with errors.Is.
var (
	ErrOverloaded    = &Error{Code: api.CodeOverloaded}
	ErrNotReady      = &Error{Code: api.CodeNotReady}
	ErrInvalidImage  = &Error{Code: api.CodeInvalidImage}
	ErrTooManyPixels = &Error{Code: api.CodeTooManyPixels}
	ErrTooLarge      = &Error{Code: api.CodeTooLarge}
)

// Client talks to one server. It is safe for concurrent use.
type Client struct {
	base       *url.URL
	hc         *http.Client
	maxRetries int
	minBackoff time.Duration
	maxBackoff time.Duration
	maxFiles   int
}

// Option configures New.
type Option func(*Client)

// WithHTTPClient uses hc (default: a client with no overall timeout; bound
// calls with their context).
func WithHTTPClient(hc *http.Client) Option { return func(c *Client) { c.hc = hc } }

// WithRetries sets how many times a 503 is retried (default 5; 0 never).
func WithRetries(n int) Option { return func(c *Client) { c.maxRetries = n } }

// WithBackoff sets the first retry delay and its cap (default 100ms, 10s);
// the delay doubles per attempt, with jitter, and is never shorter than the
// server's Retry-After.
func WithBackoff(first, limit time.Duration) Option {
	return func(c *Client) { c.minBackoff, c.maxBackoff = first, limit }
}

// WithMaxFiles splits Score calls into requests of at most n images
// (default 64, the server's default --max-parts).
func WithMaxFiles(n int) Option { return func(c *Client) { c.maxFiles = n } }

// New returns a client for the server at baseURL (e.g. "http://127.0.0.1:8080").
func New(baseURL string, opts ...Option) (*Client, error) {
	u, err := url.Parse(strings.TrimSuffix(baseURL, "/"))
	if err != nil {
		return nil, fmt.Errorf("clipagiqa client: base URL %q: %w", baseURL, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("clipagiqa client: base URL %q: want http:// or https://", baseURL)
	}
	c := &Client{base: u, hc: &http.Client{}, maxRetries: 5, minBackoff: 100 * time.Millisecond,
		maxBackoff: 10 * time.Second, maxFiles: 64}
	for _, o := range opts {
		o(c)
	}
	if c.maxFiles <= 0 {
		c.maxFiles = 1
	}
	return c, nil
}

// Score scores images and returns one Result per image, in order. A
// request-level failure (after retries) is an *Error; an image that could
// not be scored while others were has its own Result.Err.
func (c *Client) Score(ctx context.Context, images ...Image) ([]Result, error) {
	if len(images) == 0 {
		return nil, errors.New("clipagiqa client: no images to score")
	}
	out := make([]Result, 0, len(images))
	for start := 0; start < len(images); start += c.maxFiles {
		chunk := images[start:min(start+c.maxFiles, len(images))]
		res, err := c.scoreChunk(ctx, start, chunk)
		if err != nil {
			return nil, err
		}
		out = append(out, res...)
	}
	return out, nil
}

func (c *Client) scoreChunk(ctx context.Context, offset int, images []Image) ([]Result, error) {
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	names := make([]string, len(images))
	prompts := 0
	for _, im := range images {
		if im.Prompt != "" {
			prompts++
		}
	}
	for i, im := range images {
		names[i] = im.Name
		if names[i] == "" {
			names[i] = "image-" + strconv.Itoa(offset+i)
		}
		fw, err := mw.CreateFormFile("file", names[i])
		if err != nil {
			return nil, fmt.Errorf("clipagiqa client: %w", err)
		}
		if _, err := fw.Write(im.Data); err != nil {
			return nil, fmt.Errorf("clipagiqa client: %w", err)
		}
	}
	// Prompt parts pair with files by order, so when only some images have
	// one, every image gets a part (the server tells "" apart from none by
	// the part's presence, and reports an empty prompt as sent).
	if prompts > 0 {
		for _, im := range images {
			if err := mw.WriteField("prompt", im.Prompt); err != nil {
				return nil, fmt.Errorf("clipagiqa client: %w", err)
			}
		}
	}
	if err := mw.Close(); err != nil {
		return nil, fmt.Errorf("clipagiqa client: %w", err)
	}
	raw, err := c.do(ctx, http.MethodPost, "/v1/score", mw.FormDataContentType(), body.Bytes())
	if err != nil {
		return nil, err
	}
	var resp api.Response
	if err := json.Unmarshal(raw, &resp); err != nil {
		return nil, fmt.Errorf("clipagiqa client: decode score answer: %w", err)
	}
	if len(resp.Results) != len(images) {
		return nil, fmt.Errorf("clipagiqa client: %d results for %d images", len(resp.Results), len(images))
	}
	return convert(resp.Results, images, prompts > 0), nil
}

// convert turns wire results into Results; prompts "" that were only sent to
// keep the pairing are not reported as sent.
func convert(in []api.Result, images []Image, sentPrompts bool) []Result {
	out := make([]Result, len(in))
	for i, r := range in {
		out[i] = Result{Image: r.Image, Alignment: r.Alignment, Prompt: r.Prompt, PromptUsed: r.PromptUsed}
		if sentPrompts && i < len(images) && images[i].Prompt == "" {
			out[i].PromptUsed = nil
		}
		if r.Score != nil {
			out[i].Score = *r.Score
		} else {
			out[i].Err = &Error{Code: r.Code, Message: r.Error}
		}
	}
	return out
}

// Info describes the server's model (its Ready is false while it loads).
func (c *Client) Info(ctx context.Context) (*api.Info, error) {
	raw, err := c.do(ctx, http.MethodGet, "/v1/info", "", nil)
	if err != nil {
		return nil, err
	}
	var in api.Info
	if err := json.Unmarshal(raw, &in); err != nil {
		return nil, fmt.Errorf("clipagiqa client: decode info: %w", err)
	}
	return &in, nil
}

// do sends one request, retrying 503 answers, and returns a 200's body or
// an *Error.
func (c *Client) do(ctx context.Context, method, path, ctype string, body []byte) ([]byte, error) {
	u := *c.base
	u.Path += path
	for attempt := 0; ; attempt++ {
		req, err := http.NewRequestWithContext(ctx, method, u.String(), bytes.NewReader(body))
		if err != nil {
			return nil, fmt.Errorf("clipagiqa client: %w", err)
		}
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		req.Header.Set("Accept", "application/json")
		resp, err := c.hc.Do(req)
		if err != nil {
			return nil, fmt.Errorf("clipagiqa client: %s %s: %w", method, path, err)
		}
		raw, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
		resp.Body.Close()
		if err != nil {
			return nil, fmt.Errorf("clipagiqa client: %s %s: reading answer: %w", method, path, err)
		}
		if resp.StatusCode == http.StatusOK {
			return raw, nil
		}
		apiErr := decodeError(resp, raw)
		if resp.StatusCode != http.StatusServiceUnavailable || attempt >= c.maxRetries {
			return nil, apiErr
		}
		wait := c.backoff(attempt, apiErr.RetryAfter)
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("clipagiqa client: giving up while waiting to retry (%w): %w", apiErr, ctx.Err())
		}
	}
}

// backoff is the wait before retry attempt+1: minBackoff·2^attempt with ±25 %
// jitter, capped at maxBackoff, but never less than the server's Retry-After.
func (c *Client) backoff(attempt int, retryAfter time.Duration) time.Duration {
	d := c.minBackoff << min(attempt, 30)
	if d <= 0 || d > c.maxBackoff {
		d = c.maxBackoff
	}
	d = time.Duration(float64(d) * (0.75 + 0.5*rand.Float64()))
	return max(d, retryAfter)
}

// decodeError reads an API error body (or describes a non-API answer).
func decodeError(resp *http.Response, raw []byte) *Error {
	e := &Error{Status: resp.StatusCode}
	if s := resp.Header.Get("Retry-After"); s != "" {
		if n, err := strconv.Atoi(s); err == nil && n >= 0 {
			e.RetryAfter = time.Duration(n) * time.Second
		} else if t, err := http.ParseTime(s); err == nil {
			e.RetryAfter = max(time.Until(t), 0)
		}
	}
	var body api.ErrorBody
	if err := json.Unmarshal(raw, &body); err != nil || body.Code == "" {
		// Not our error body (a proxy, or /readyz's status): keep what we have.
		e.Code = api.CodeInternal
		if resp.StatusCode == http.StatusServiceUnavailable {
			e.Code = api.CodeNotReady
		}
		e.Message = strings.TrimSpace(string(raw))
		if len(e.Message) > 200 {
			e.Message = e.Message[:200] + "…"
		}
		if e.Message == "" {
			e.Message = http.StatusText(resp.StatusCode)
		}
		return e
	}
	e.Code, e.Message = body.Code, body.Error
	if len(body.Results) > 0 {
		e.Results = convert(body.Results, nil, false)
	}
	return e
}
