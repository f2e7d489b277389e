// Package api holds the wire types of the clipagiqa HTTP API (see
// serve/openapi.json): what the server sends and the Go client decodes. It
// has no dependencies, so a client builds without libtorch or cgo.
package api

// ErrorCode is the stable, machine-readable reason of a failed request or
// image; the message next to it is for people and may change.
type ErrorCode string

// Error codes. Adding one is an API change: list it in Codes and in
// openapi.json's ErrorCode enum (a test compares them).
const (
	CodeBadRequest           ErrorCode = "bad_request"            // 400: malformed request (empty body, bad multipart)
	CodeInvalidImage         ErrorCode = "invalid_image"          // 400: the bytes are not a decodable image
	CodeMissingPrompt        ErrorCode = "missing_prompt"         // 400: the method scores with the image's prompt and none was sent
	CodeUploadTimeout        ErrorCode = "upload_timeout"         // 408: the body did not arrive in time
	CodeMethodNotAllowed     ErrorCode = "method_not_allowed"     // 405
	CodeNotFound             ErrorCode = "not_found"              // 404: no such endpoint
	CodeTooLarge             ErrorCode = "too_large"              // 413: body over the size limit
	CodeTooManyFiles         ErrorCode = "too_many_files"         // 413: more files than the per-request limit
	CodeUnsupportedMediaType ErrorCode = "unsupported_media_type" // 415
	CodeTooManyPixels        ErrorCode = "too_many_pixels"        // 422: the header declares more pixels than allowed
	CodeInternal             ErrorCode = "internal"               // 500
	CodeNotReady             ErrorCode = "not_ready"              // 503: the model is still loading (Retry-After)
	CodeOverloaded           ErrorCode = "overloaded"             // 503: the queue is full (Retry-After)
	CodeScoreTimeout         ErrorCode = "score_timeout"          // 504: scoring did not finish in time
	CodeCanceled             ErrorCode = "canceled"               // the client went away (499, rarely seen)
)

// Codes lists every ErrorCode.
var Codes = []ErrorCode{
	CodeBadRequest, CodeInvalidImage, CodeMissingPrompt, CodeUploadTimeout, CodeMethodNotAllowed, CodeNotFound, CodeTooLarge,
	CodeTooManyFiles, CodeUnsupportedMediaType, CodeTooManyPixels, CodeInternal, CodeNotReady, CodeOverloaded,
	CodeScoreTimeout, CodeCanceled,
}

// Result is one image's outcome: a score, or the reason it has none.
type Result struct {
	// Image is the file name of a multipart part, or ?name= of a raw body.
	Image string `json:"image"`
	// Score is the predicted quality (absent when the image failed).
	Score *float64 `json:"score,omitempty"`
	// Alignment is the predicted image–prompt alignment, from a method that
	// predicts it (IP-IQA trained on AGIQA-3K); absent otherwise.
	Alignment *float64 `json:"alignment,omitempty"`
	// Error and Code say why the image has no score.
	Error string    `json:"error,omitempty"`
	Code  ErrorCode `json:"code,omitempty"`
	// Prompt echoes the image's prompt, when one was sent.
	Prompt string `json:"prompt,omitempty"`
	// PromptUsed, present when a prompt was sent, says whether the model
	// used it (CLIP-AGIQA and CLIP-IQA score the image alone).
	PromptUsed *bool `json:"prompt_used,omitempty"`
}

// Response is the body of a successful score request: one result per image,
// in request order (200 when at least one image was scored).
type Response struct {
	Results []Result `json:"results"`
}

// ErrorBody is the body of every non-2xx answer.
type ErrorBody struct {
	Error string    `json:"error"`
	Code  ErrorCode `json:"code"`
	// Results, for a multipart request of which no image could be scored, has
	// each image's reason.
	Results []Result `json:"results,omitempty"`
}

// Info describes the model behind the server (GET /v1/info).
type Info struct {
	// Model is the CLIP weights' name (file name without extension).
	Model string `json:"model"`
	// Method is "agiqa" (CLIP-AGIQA), "clipiqa" (zero-shot CLIP-IQA) or
	// "ipiqa" (IP-IQA), or another registered method.
	Method string `json:"method"`
	// UsesPrompt says whether per-image prompts change the score; a method
	// that uses them (IP-IQA) needs one for every image (else missing_prompt).
	UsesPrompt bool `json:"uses_prompt"`
	// Outputs names what each result carries: ["score"], or ["quality",
	// "alignment"] (score and alignment) for a 2-output IP-IQA.
	Outputs []string `json:"outputs,omitempty"`
	// Backbone ("ViT" or "RN") and Resolution (input pixels) of CLIP.
	Backbone   string `json:"backbone"`
	Resolution int    `json:"resolution"`
	// MaxBatch is the most images per device batch; MaxFiles per request.
	MaxBatch int `json:"max_batch"`
	MaxFiles int `json:"max_files"`
	// MaxBytes is the largest request body.
	MaxBytes int64 `json:"max_bytes"`
	// Ready is false while the model loads (the other fields are then empty).
	Ready bool `json:"ready"`
}

// Status is the body of /healthz and /readyz.
type Status struct {
	Status string `json:"status"`
}
