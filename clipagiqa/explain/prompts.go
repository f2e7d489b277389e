package explain

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// Prompts maps image names to prompts, read from a CSV table.
type Prompts struct {
	byName map[string]string
}

// imageColumns are the header names accepted for the image column.
var imageColumns = []string{"image", "name", "file", "path", "filename"}

// ReadPrompts reads a CSV table with a header naming an image column
// (image, name, file, path or filename) and a prompt column. Names are
// slash- or OS-separated paths relative to the images given; an image listed
// twice with different prompts is an error.
func ReadPrompts(path string) (*Prompts, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("prompts: %w", err)
	}
	defer f.Close()
	r := csv.NewReader(f)
	r.FieldsPerRecord = -1
	header, err := r.Read()
	if err != nil {
		return nil, fmt.Errorf("prompts %s: header: %w", path, err)
	}
	ic, pc := -1, -1
	for i, h := range header {
		h = strings.ToLower(strings.TrimSpace(strings.TrimPrefix(h, "\ufeff")))
		switch {
		case h == "prompt" && pc < 0:
			pc = i
		case ic < 0 && contains(imageColumns, h):
			ic = i
		}
	}
	if ic < 0 || pc < 0 {
		return nil, fmt.Errorf("prompts %s: header %q needs an image column (%s) and a prompt column", path, header, strings.Join(imageColumns, ", "))
	}
	p := &Prompts{byName: map[string]string{}}
	for line := 2; ; line++ {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("prompts %s: %w", path, err)
		}
		if len(rec) <= max(ic, pc) {
			return nil, fmt.Errorf("prompts %s: line %d has %d fields, want at least %d", path, line, len(rec), max(ic, pc)+1)
		}
		name := cleanName(rec[ic])
		if name == "" || name == "." {
			return nil, fmt.Errorf("prompts %s: line %d has no image name", path, line)
		}
		if old, ok := p.byName[name]; ok && old != rec[pc] {
			return nil, fmt.Errorf("prompts %s: line %d: image %s is listed twice with different prompts", path, line, rec[ic])
		}
		p.byName[name] = rec[pc]
	}
	return p, nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func cleanName(n string) string {
	return filepath.Clean(filepath.FromSlash(strings.TrimSpace(n)))
}

// Lookup returns the prompt of the first of names (e.g. the path as given,
// then relative to its directory argument, then the base name) that the
// table lists.
func (p *Prompts) Lookup(names ...string) (string, bool) {
	for _, n := range names {
		if v, ok := p.byName[cleanName(n)]; ok {
			return v, true
		}
	}
	return "", false
}

// Len is the number of images listed.
func (p *Prompts) Len() int { return len(p.byName) }
