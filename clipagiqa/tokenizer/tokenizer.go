// Package tokenizer is a pure-Go port of OpenAI CLIP's text tokenizer
// (simple_tokenizer.py and clip.tokenize): byte-level BPE over the merges of
// bpe_simple_vocab_16e6.txt.gz, giving the same ids as the Python code.
//
// Text goes through the steps of the Python code, with Python's semantics:
//
//  1. ftfy.fix_text is treated as the identity. Text that ftfy would repair
//     (mojibake, curly quotes, full-width forms, ligatures, text not in NFC, …)
//     can therefore get other ids than OpenAI's; ordinary text is unaffected.
//  2. html.unescape twice, with Python's rules (numeric references without
//     ';', control code points dropped, Windows-1252 for &#128;–&#159;).
//  3. strip, runs of Unicode White_Space → one space, strip (str.strip also
//     removes U+001C–U+001F, the regex \s does not).
//  4. Python's str.lower, including İ → "i̇" and the final-sigma rule.
//  5. The pre-tokenisation pattern
//     <\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+
//     (case-insensitive) with the character classes of Python's regex module.
//  6. UTF-8 bytes → printable runes, BPE with "</w>" marking the word end.
//
// Characters new in Unicode 15.0 follow Go's tables (Python 3.11's str.lower
// knows Unicode 14.0). Invalid UTF-8 in Go input (impossible in a Python str) is first replaced by
// U+FFFD the way Python's decode(errors="replace") does.
//
// Attribution: bpe_simple_vocab_16e6.txt.gz is copied unchanged from
// github.com/openai/CLIP (Copyright (c) 2021 OpenAI, MIT licence, see
// LICENSE.openai-clip in this directory) and embedded in the binary. The code
// here is a re-implementation, not a copy.
package tokenizer

import (
	"bufio"
	"bytes"
	"compress/gzip"
	_ "embed"
	"fmt"
	"io"
	"strings"
	"sync"
	"unicode/utf8"
)

//go:embed bpe_simple_vocab_16e6.txt.gz
var embeddedVocab []byte

// Ids and sizes fixed by CLIP's vocabulary.
const (
	// SOT is the id of <|startoftext|>.
	SOT = 49406
	// EOT is the id of <|endoftext|>; it is the largest id, so CLIP finds it by argmax.
	EOT = 49407
	// VocabSize is the number of ids: 512 byte symbols, the merges, SOT and EOT.
	VocabSize = 49408
	// ContextLength is the sequence length of every released CLIP text encoder.
	ContextLength = 77

	// numMerges is how many merges simple_tokenizer reads after the header line.
	numMerges = 49152 - 256 - 2
	// maxCacheEntries bounds the BPE cache (Python's is unbounded); past it the
	// cache starts afresh, so a long-running server does not grow without end.
	maxCacheEntries = 1 << 16
)

const (
	sotText = "<|startoftext|>"
	eotText = "<|endoftext|>"
)

// mergeRule is what a BPE merge of two adjacent symbols produces.
type mergeRule struct {
	rank int32 // line of the merge: lower merges first
	id   int32 // id of the merged symbol
}

// Tokenizer maps text to CLIP BPE ids. It is safe for concurrent use.
type Tokenizer struct {
	byteID    [256]int32           // id of the symbol of one byte
	byteEndID [256]int32           // id of that symbol with "</w>"
	merges    map[uint32]mergeRule // key: left id << 16 | right id
	decoder   [][]byte             // id → the bytes it stands for ("</w>" kept)

	mu    sync.RWMutex
	cache map[string][]int32 // pre-token → BPE ids
}

var (
	defaultOnce sync.Once
	defaultTok  *Tokenizer
	defaultErr  error
)

// Default returns the tokenizer over the embedded vocabulary; it is parsed
// on the first call only.
func Default() (*Tokenizer, error) {
	defaultOnce.Do(func() {
		defaultTok, defaultErr = New(bytes.NewReader(embeddedVocab))
		if defaultErr != nil {
			defaultErr = fmt.Errorf("embedded CLIP vocabulary: %w", defaultErr)
		}
	})
	return defaultTok, defaultErr
}

// byteRunes is GPT-2's reversible byte → printable-rune table, together with
// the byte order of CLIP's vocabulary (printable bytes first, then the rest).
func byteRunes() (table [256]rune, order [256]byte) {
	var assigned [256]bool
	n := 0
	for _, span := range [][2]int{{'!', '~'}, {0xA1, 0xAC}, {0xAE, 0xFF}} {
		for b := span[0]; b <= span[1]; b++ {
			table[b], assigned[b] = rune(b), true
			order[n] = byte(b)
			n++
		}
	}
	extra := 0
	for b := 0; b < 256; b++ {
		if !assigned[b] {
			table[b] = rune(256 + extra)
			extra++
			order[n] = byte(b)
			n++
		}
	}
	return table, order
}

// New parses a gzip-compressed BPE merges file laid out like
// bpe_simple_vocab_16e6.txt.gz: a header line, then at least 48894 lines of
// two space-separated symbols (later lines are ignored, as in CLIP).
func New(gzVocab io.Reader) (*Tokenizer, error) {
	zr, err := gzip.NewReader(gzVocab)
	if err != nil {
		return nil, fmt.Errorf("tokenizer vocabulary: %w", err)
	}
	defer zr.Close()
	sc := bufio.NewScanner(zr)
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	merges := make([][2]string, 0, numMerges)
	for line := 1; len(merges) < numMerges && sc.Scan(); line++ {
		if line == 1 { // version header
			continue
		}
		f := strings.Fields(sc.Text())
		if len(f) != 2 {
			return nil, fmt.Errorf("tokenizer vocabulary line %d: want two symbols, got %q", line, sc.Text())
		}
		merges = append(merges, [2]string{f[0], f[1]})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("tokenizer vocabulary: %w", err)
	}
	if len(merges) != numMerges {
		return nil, fmt.Errorf("tokenizer vocabulary has %d merges, want %d", len(merges), numMerges)
	}

	table, order := byteRunes()
	vocab := make([]string, 0, VocabSize)
	for _, b := range order {
		vocab = append(vocab, string(table[b]))
	}
	for _, b := range order {
		vocab = append(vocab, string(table[b])+"</w>")
	}
	for _, m := range merges {
		vocab = append(vocab, m[0]+m[1])
	}
	vocab = append(vocab, sotText, eotText)

	// Later duplicates win, as in Python's dict(zip(vocab, range(...))).
	encoder := make(map[string]int32, len(vocab))
	for i, v := range vocab {
		encoder[v] = int32(i)
	}
	t := &Tokenizer{
		merges:  make(map[uint32]mergeRule, len(merges)),
		decoder: make([][]byte, len(vocab)),
		cache:   map[string][]int32{},
	}
	for b := 0; b < 256; b++ {
		t.byteID[b] = encoder[string(table[b])]
		t.byteEndID[b] = encoder[string(table[b])+"</w>"]
	}
	for rank, m := range merges {
		l, okL := encoder[m[0]]
		r, okR := encoder[m[1]]
		if !okL || !okR { // a symbol no word can contain: the merge never fires
			continue
		}
		t.merges[pairKey(l, r)] = mergeRule{rank: int32(rank), id: encoder[m[0]+m[1]]}
	}
	runeByte := make(map[rune]byte, 256)
	for b := 0; b < 256; b++ {
		runeByte[table[b]] = byte(b)
	}
	for id, v := range vocab {
		raw := make([]byte, 0, len(v))
		for _, r := range v {
			if b, ok := runeByte[r]; ok {
				raw = append(raw, b)
			} else { // only reachable with a foreign merges file
				raw = utf8.AppendRune(raw, r)
			}
		}
		t.decoder[id] = raw
	}
	return t, nil
}

func pairKey(l, r int32) uint32 { return uint32(l)<<16 | uint32(r) }

// bpe returns the ids of one pre-token (raw UTF-8, not yet byte-encoded).
// The result is shared with the cache and must not be modified.
func (t *Tokenizer) bpe(token string) []int32 {
	t.mu.RLock()
	ids, ok := t.cache[token]
	t.mu.RUnlock()
	if ok {
		return ids
	}
	word := make([]int32, len(token))
	for i := 0; i < len(token); i++ {
		word[i] = t.byteID[token[i]]
	}
	word[len(word)-1] = t.byteEndID[token[len(token)-1]]
	for len(word) > 1 {
		// The lowest-ranked adjacent pair is merged everywhere, left to right.
		best := mergeRule{rank: -1}
		var left, right int32
		for i := 0; i+1 < len(word); i++ {
			if m, ok := t.merges[pairKey(word[i], word[i+1])]; ok && (best.rank < 0 || m.rank < best.rank) {
				best, left, right = m, word[i], word[i+1]
			}
		}
		if best.rank < 0 {
			break
		}
		out := word[:0] // in place: the write index never passes the read index
		for i := 0; i < len(word); {
			if i+1 < len(word) && word[i] == left && word[i+1] == right {
				out = append(out, best.id)
				i += 2
			} else {
				out = append(out, word[i])
				i++
			}
		}
		word = out
	}
	t.mu.Lock()
	if len(t.cache) >= maxCacheEntries {
		t.cache = make(map[string][]int32)
	}
	t.cache[token] = word
	t.mu.Unlock()
	return word
}

// Encode returns the BPE ids of text, without SOT and EOT (simple_tokenizer's
// encode). "<|startoftext|>" and "<|endoftext|>" in the text become SOT and
// EOT, as in Python.
func (t *Tokenizer) Encode(text string) []int {
	var ids []int
	pretokenize(clean(text), func(tok string) {
		switch tok {
		case sotText:
			ids = append(ids, SOT)
		case eotText:
			ids = append(ids, EOT)
		default:
			for _, id := range t.bpe(tok) {
				ids = append(ids, int(id))
			}
		}
	})
	return ids
}

// Decode maps ids back to text like simple_tokenizer's decode: "</w>" becomes
// a space and invalid UTF-8 becomes U+FFFD. Ids outside the vocabulary, which
// Python rejects with a KeyError, are skipped.
func (t *Tokenizer) Decode(ids []int) string {
	var raw []byte
	for _, id := range ids {
		if id >= 0 && id < len(t.decoder) {
			raw = append(raw, t.decoder[id]...)
		}
	}
	return strings.ReplaceAll(pyDecodeUTF8(raw), "</w>", " ")
}

// Tokenize is clip.tokenize: for each text SOT + Encode(text) + EOT, padded
// with zeros to contextLength. A text that does not fit is an error, unless
// truncate is set: then it keeps the first contextLength ids and the last one
// becomes EOT.
func (t *Tokenizer) Tokenize(texts []string, contextLength int, truncate bool) ([][]int64, error) {
	if contextLength < 1 {
		return nil, fmt.Errorf("tokenize: context length %d, want at least 1", contextLength)
	}
	out := make([][]int64, len(texts))
	for i, text := range texts {
		ids := t.Encode(text)
		n := len(ids) + 2
		if n > contextLength && !truncate {
			return nil, fmt.Errorf("tokenize text %d %q: %d tokens with SOT and EOT, more than the context length %d (truncate would cut it)",
				i, shorten(text, 100), n, contextLength)
		}
		row := make([]int64, contextLength)
		row[0] = SOT
		k := 1
		for _, id := range ids {
			if k == contextLength {
				break
			}
			row[k] = int64(id)
			k++
		}
		if k == contextLength {
			k-- // truncated (or exactly full): EOT takes the last place
		}
		row[k] = EOT
		out[i] = row
	}
	return out, nil
}

// shorten keeps error messages readable for very long texts.
func shorten(s string, maxRunes int) string {
	if utf8.RuneCountInString(s) <= maxRunes {
		return s
	}
	r := []rune(s)
	return string(r[:maxRunes]) + "…"
}

// EOTIndex is the position of the first largest id of a row (the EOT), as
// CLIP's text.argmax(dim=-1) finds it.
func EOTIndex(row []int64) int {
	best := 0
	for i, v := range row {
		if v > row[best] {
			best = i
		}
	}
	return best
}
