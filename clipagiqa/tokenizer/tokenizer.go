// Package tokenizer is CLIP's byte-level BPE tokenizer, producing the same
// ids as OpenAI's simple_tokenizer and clip.tokenize.
//
// The vocabulary bpe_simple_vocab_16e6.txt.gz is OpenAI's (MIT licence, see
// LICENSE.openai-clip in this directory), embedded in the binary. OpenAI runs
// ftfy.fix_text first; that repair step is not reproduced, so ids are
// guaranteed only for text ftfy leaves unchanged (ordinary text).
package tokenizer

import (
	"bufio"
	"bytes"
	"compress/gzip"
	_ "embed"
	"fmt"
	"html"
	"io"
	"regexp"
	"strings"
	"sync"
	"unicode/utf8"
)

//go:embed bpe_simple_vocab_16e6.txt.gz
var embeddedVocab []byte

// Special ids and sizes of CLIP's vocabulary.
const (
	SOT           = 49406
	EOT           = 49407
	VocabSize     = 49408
	ContextLength = 77
	numMerges     = 49152 - 256 - 2
)

// Tokenizer maps text to CLIP BPE ids. It is safe for concurrent use.
type Tokenizer struct {
	encoder     map[string]int
	decoder     []string
	ranks       map[[2]string]int
	byteEncoder [256]string
	byteDecoder map[rune]byte

	mu    sync.RWMutex
	cache map[string][]string
}

var (
	// Pre-tokenisation, as OpenAI's pattern (case-insensitive).
	wordRe = regexp.MustCompile(`(?i)<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\v\p{Z}\p{L}\p{N}]+`)
	// Python's \s on str also matches Unicode spaces.
	spaceRe = regexp.MustCompile(`[\s\v\p{Z}\x{1c}-\x{1f}\x{85}]+`)

	defaultOnce sync.Once
	defaultTok  *Tokenizer
	defaultErr  error
)

// Default returns the tokenizer over the embedded vocabulary (parsed once).
func Default() (*Tokenizer, error) {
	defaultOnce.Do(func() {
		defaultTok, defaultErr = New(bytes.NewReader(embeddedVocab))
	})
	return defaultTok, defaultErr
}

// byteToUnicode is GPT-2's reversible byte → printable-rune table.
func byteToUnicode() [256]rune {
	var table [256]rune
	var assigned [256]bool
	for _, r := range [][2]int{{'!', '~'}, {0xA1, 0xAC}, {0xAE, 0xFF}} {
		for b := r[0]; b <= r[1]; b++ {
			table[b], assigned[b] = rune(b), true
		}
	}
	n := 0
	for b := 0; b < 256; b++ {
		if !assigned[b] {
			table[b] = rune(256 + n)
			n++
		}
	}
	return table
}

// printableOrder is the byte order of OpenAI's vocabulary: the printable bytes
// first, then the rest.
func printableOrder() []int {
	var order []int
	seen := [256]bool{}
	for _, r := range [][2]int{{'!', '~'}, {0xA1, 0xAC}, {0xAE, 0xFF}} {
		for b := r[0]; b <= r[1]; b++ {
			order = append(order, b)
			seen[b] = true
		}
	}
	for b := 0; b < 256; b++ {
		if !seen[b] {
			order = append(order, b)
		}
	}
	return order
}

// New parses a gzip-compressed BPE merges file.
func New(gzVocab io.Reader) (*Tokenizer, error) {
	zr, err := gzip.NewReader(gzVocab)
	if err != nil {
		return nil, fmt.Errorf("tokenizer vocabulary: %w", err)
	}
	defer zr.Close()
	sc := bufio.NewScanner(zr)
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	var merges [][2]string
	line := 0
	for sc.Scan() {
		line++
		if line == 1 { // version header
			continue
		}
		if len(merges) == numMerges {
			break
		}
		parts := strings.Split(sc.Text(), " ")
		if len(parts) != 2 {
			return nil, fmt.Errorf("tokenizer vocabulary line %d: want two symbols, got %q", line, sc.Text())
		}
		merges = append(merges, [2]string{parts[0], parts[1]})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("tokenizer vocabulary: %w", err)
	}
	if len(merges) != numMerges {
		return nil, fmt.Errorf("tokenizer vocabulary has %d merges, want %d", len(merges), numMerges)
	}
	t := &Tokenizer{encoder: map[string]int{}, ranks: map[[2]string]int{}, byteDecoder: map[rune]byte{}, cache: map[string][]string{}}
	table := byteToUnicode()
	for b := 0; b < 256; b++ {
		t.byteEncoder[b] = string(table[b])
		t.byteDecoder[table[b]] = byte(b)
	}
	var vocab []string
	for _, b := range printableOrder() {
		vocab = append(vocab, string(table[b]))
	}
	for _, b := range printableOrder() {
		vocab = append(vocab, string(table[b])+"</w>")
	}
	for i, m := range merges {
		vocab = append(vocab, m[0]+m[1])
		t.ranks[m] = i
	}
	vocab = append(vocab, "<|startoftext|>", "<|endoftext|>")
	for i, v := range vocab {
		t.encoder[v] = i
	}
	t.decoder = vocab
	t.cache["<|startoftext|>"] = []string{"<|startoftext|>"}
	t.cache["<|endoftext|>"] = []string{"<|endoftext|>"}
	return t, nil
}

// clean applies OpenAI's basic_clean (without ftfy) and whitespace_clean,
// then lower-cases.
func clean(text string) string {
	text = strings.TrimSpace(html.UnescapeString(html.UnescapeString(text)))
	text = strings.TrimSpace(spaceRe.ReplaceAllString(text, " "))
	return strings.ToLower(text)
}

// bpe splits one byte-encoded word into vocabulary symbols.
func (t *Tokenizer) bpe(token string) []string {
	t.mu.RLock()
	if c, ok := t.cache[token]; ok {
		t.mu.RUnlock()
		return c
	}
	t.mu.RUnlock()
	var word []string
	for _, r := range token {
		word = append(word, string(r))
	}
	word[len(word)-1] += "</w>"
	for len(word) > 1 {
		best, bestRank := -1, int(^uint(0)>>1)
		for i := 0; i+1 < len(word); i++ {
			if r, ok := t.ranks[[2]string{word[i], word[i+1]}]; ok && r < bestRank {
				best, bestRank = i, r
			}
		}
		if best < 0 {
			break
		}
		first, second := word[best], word[best+1]
		merged := make([]string, 0, len(word))
		for i := 0; i < len(word); {
			if i+1 < len(word) && word[i] == first && word[i+1] == second {
				merged = append(merged, first+second)
				i += 2
			} else {
				merged = append(merged, word[i])
				i++
			}
		}
		word = merged
	}
	t.mu.Lock()
	t.cache[token] = word
	t.mu.Unlock()
	return word
}

// Encode returns the BPE ids of text, without start and end tokens.
func (t *Tokenizer) Encode(text string) []int {
	var ids []int
	for _, tok := range wordRe.FindAllString(clean(text), -1) {
		var sb strings.Builder
		for _, b := range []byte(tok) {
			sb.WriteString(t.byteEncoder[b])
		}
		for _, sym := range t.bpe(sb.String()) {
			ids = append(ids, t.encoder[sym])
		}
	}
	return ids
}

// Decode maps ids back to text ("</w>" becomes a space; invalid UTF-8 is
// replaced, as OpenAI's decode does).
func (t *Tokenizer) Decode(ids []int) string {
	var raw []byte
	for _, id := range ids {
		if id < 0 || id >= len(t.decoder) {
			continue
		}
		for _, r := range t.decoder[id] {
			if b, ok := t.byteDecoder[r]; ok {
				raw = append(raw, b)
			} else {
				raw = append(raw, string(r)...)
			}
		}
	}
	s := strings.ToValidUTF8(string(raw), string(utf8.RuneError))
	return strings.ReplaceAll(s, "</w>", " ")
}

// Tokenize returns, for each text, SOT + ids + EOT padded with zeros to
// contextLength, as clip.tokenize does. A text that does not fit is an error
// unless truncate is set, in which case it is cut and EOT put last.
func (t *Tokenizer) Tokenize(texts []string, contextLength int, truncate bool) ([][]int64, error) {
	if contextLength < 2 {
		return nil, fmt.Errorf("context length %d too small", contextLength)
	}
	out := make([][]int64, len(texts))
	for i, text := range texts {
		ids := append(append([]int{SOT}, t.Encode(text)...), EOT)
		if len(ids) > contextLength {
			if !truncate {
				return nil, fmt.Errorf("text %q has %d tokens, more than the context length %d (enable truncation to cut it)", text, len(ids), contextLength)
			}
			ids = ids[:contextLength]
			ids[contextLength-1] = EOT
		}
		row := make([]int64, contextLength)
		for j, id := range ids {
			row[j] = int64(id)
		}
		out[i] = row
	}
	return out, nil
}

// EOTIndex is the position of the largest id of a row (the EOT token), as
// CLIP's argmax finds it.
func EOTIndex(row []int64) int {
	best := 0
	for i, v := range row {
		if v > row[best] {
			best = i
		}
	}
	return best
}
