package clipagiqa_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"time"

	"github.com/clipagiqa/clipagiqa/clipagiqa"
	"github.com/clipagiqa/clipagiqa/clipagiqa/imageprep"
)

// Embedding the scorer in a net/http handler: one Scorer per process, shared
// by all requests; concurrent requests are batched on the device.
func ExampleScorer_httpHandler() {
	scorer, err := clipagiqa.LoadScorer(
		"../testdata/clip-agiqa-ref/tiny_clip_vit_fp16.pt", // OpenAI CLIP weights
		"../testdata/clip-agiqa-ref",                       // trained CLIP-AGIQA checkpoint
		clipagiqa.WithMaxBatch(16), clipagiqa.WithMaxWait(5*time.Millisecond),
		clipagiqa.WithMaxPixels(20_000_000))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer scorer.Close()

	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 16<<20))
		if err != nil {
			http.Error(w, err.Error(), http.StatusRequestEntityTooLarge)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
		defer cancel()
		score, err := scorer.ScoreBytes(ctx, body)
		switch {
		case errors.Is(err, imageprep.ErrTooManyPixels):
			http.Error(w, err.Error(), http.StatusUnprocessableEntity)
		case errors.Is(err, clipagiqa.ErrInvalidImage):
			http.Error(w, err.Error(), http.StatusBadRequest)
		case errors.Is(err, clipagiqa.ErrOverloaded):
			http.Error(w, "busy", http.StatusServiceUnavailable)
		case err != nil:
			http.Error(w, "internal error", http.StatusInternalServerError)
		default:
			_ = json.NewEncoder(w).Encode(map[string]float64{"score": score})
		}
	})

	// Exercise it as a client would.
	img, _ := os.ReadFile("../testdata/clip-agiqa-ref/img_0.png")
	for _, body := range []string{string(img), "not an image"} {
		rec := httptest.NewRecorder()
		handler.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/score", strings.NewReader(body)))
		var out struct{ Score float64 }
		_ = json.Unmarshal(rec.Body.Bytes(), &out)
		fmt.Printf("%d %.4f\n", rec.Code, out.Score)
	}
	// Output:
	// 200 0.0282
	// 400 0.0000
}
