package data

import (
	"fmt"
	"path/filepath"
)

// PromptTable maps image names (slash-separated, cleaned) to the text
// prompts they were generated from.
type PromptTable struct {
	// Source is the table's file name, for messages.
	Source  string
	prompts map[string]string
}

// ReadPromptTable reads a CSV table with an image column (image, name or
// path) and a prompt column (prompt or text), e.g. AGIQA-3K's data.csv or
// AGIQA-1K's AIGC_MOS_Zscore.csv. Names are relative to the images they
// describe; one listed twice must have the same prompt both times.
func ReadPromptTable(path string) (*PromptTable, error) {
	t, err := readTableFile(path)
	if err != nil {
		return nil, fmt.Errorf("prompt table: %w", err)
	}
	cols, err := t.require("image|name|path", "prompt|text")
	if err != nil {
		return nil, fmt.Errorf("prompt table: %w", err)
	}
	pt := &PromptTable{Source: path, prompts: make(map[string]string, len(t.rows))}
	lines := map[string]int{}
	for i := range t.rows {
		name, err := t.name(i, cols[0])
		if err != nil {
			return nil, fmt.Errorf("prompt table: %w", err)
		}
		key := promptKey(name)
		prompt := t.rows[i][cols[1]] // verbatim: the tokenizer cleans whitespace as the official code's does
		if prev, ok := pt.prompts[key]; ok && prev != prompt {
			return nil, fmt.Errorf("prompt table: %s:%d: image %q has another prompt on line %d", t.src, t.lines[i], name, lines[key])
		}
		pt.prompts[key], lines[key] = prompt, t.lines[i]
	}
	return pt, nil
}

func promptKey(name string) string { return filepath.ToSlash(filepath.Clean(filepath.FromSlash(name))) }

// Len is the number of images with a prompt.
func (p *PromptTable) Len() int { return len(p.prompts) }

// Lookup returns the prompt of the first of names (alternative spellings of
// one image: relative to the directory given, as given, base name) that the
// table lists; the prompt may be empty (an empty cell).
func (p *PromptTable) Lookup(names ...string) (string, bool) {
	for _, n := range names {
		if n == "" {
			continue
		}
		if v, ok := p.prompts[promptKey(n)]; ok {
			return v, true
		}
	}
	return "", false
}
