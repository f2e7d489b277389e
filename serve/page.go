package serve

import (
	_ "embed"
	"net/http"
)

// indexHTML is the browser page: one self-contained file (inline CSS and
// script, no external assets), so it works offline.
//
//go:embed web/index.html
var indexHTML []byte

func (s *Server) handlePage(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	// Everything the page needs is on this server: forbid the rest.
	w.Header().Set("Content-Security-Policy",
		"default-src 'self'; img-src 'self' blob: data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'; connect-src 'self'")
	_, _ = w.Write(indexHTML)
}
