package tokenizer

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func defaultTokenizer(t testing.TB) *Tokenizer {
	t.Helper()
	tk, err := Default()
	require.NoError(t, err)
	return tk
}

func readJSON(t testing.TB, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, v), path)
}

// padded is ids followed by zeros up to ContextLength.
func padded(ids ...int64) []int64 {
	row := make([]int64, ContextLength)
	copy(row, ids)
	return row
}

func toInt64(ids []int) []int64 {
	out := make([]int64, len(ids))
	for i, id := range ids {
		out[i] = int64(id)
	}
	return out
}

// testdata/tokenizer_vectors.json: OpenAI's tokenizer (copied from
// /work/shared/clip).
func TestOpenAIVectors(t *testing.T) {
	var f struct {
		SOT, EOT      int
		ContextLength int `json:"context_length"`
		VocabSize     int `json:"vocab_size"`
		Cases         []struct {
			Text       string `json:"text"`
			BPE        []int  `json:"bpe_ids"`
			WithSotEot []int  `json:"with_sot_eot"`
			Decoded    *string
		} `json:"cases"`
	}
	readJSON(t, "testdata/tokenizer_vectors.json", &f)
	require.Len(t, f.Cases, 27)
	assert.Equal(t, []int{SOT, EOT, ContextLength, VocabSize}, []int{f.SOT, f.EOT, f.ContextLength, f.VocabSize})
	tk := defaultTokenizer(t)
	for _, c := range f.Cases {
		t.Run(shorten(c.Text, 30), func(t *testing.T) {
			got := tk.Encode(c.Text)
			assert.Equal(t, len(c.BPE), len(got))
			if len(c.BPE) > 0 {
				assert.Equal(t, c.BPE, got)
			}
			want := toInt64(c.WithSotEot)
			if len(want) <= ContextLength {
				rows, err := tk.Tokenize([]string{c.Text}, ContextLength, false)
				require.NoError(t, err)
				assert.Equal(t, padded(want...), rows[0])
			} else { // the 102-token case: see TestTruncation
				want = append(want[:ContextLength-1:ContextLength-1], EOT)
				rows, err := tk.Tokenize([]string{c.Text}, ContextLength, true)
				require.NoError(t, err)
				assert.Equal(t, want, rows[0])
			}
			if c.Decoded != nil {
				assert.Equal(t, *c.Decoded, tk.Decode(c.BPE))
			}
		})
	}
}

// testdata/extra.json: the ten tokenizer_extra strings of the CLIP-AGIQA
// reference fixture (digits, entities, contractions, whitespace runs,
// non-ASCII, the CLIP-AGIQA prompt).
func TestFixtureExtraStrings(t *testing.T) {
	var f struct {
		Cases []struct {
			Text     string  `json:"text"`
			BPE      []int   `json:"bpe_ids"`
			Tokenize []int64 `json:"tokenize_77"`
		} `json:"cases"`
	}
	readJSON(t, "testdata/extra.json", &f)
	require.Len(t, f.Cases, 10)
	tk := defaultTokenizer(t)
	for _, c := range f.Cases {
		assert.Equal(t, c.BPE, tk.Encode(c.Text), "encode %q", c.Text)
		rows, err := tk.Tokenize([]string{c.Text}, ContextLength, false)
		require.NoError(t, err)
		require.Len(t, c.Tokenize, ContextLength)
		assert.Equal(t, c.Tokenize, rows[0], "tokenize %q", c.Text)
	}
}

// pythonRef is testdata/python_ref.json, written by
// testdata/gen/make_python_ref.py from OpenAI's simple_tokenizer and the
// Python library functions it calls.
type pythonRef struct {
	Classes  map[string][][2]rune `json:"classes"`
	LowerMap [][2]json.RawMessage `json:"lower_map"`
	Unescape [][2]string          `json:"unescape"`
	Encode   []struct {
		Text      string   `json:"text"`
		Cleaned   string   `json:"cleaned"`
		Pretokens []string `json:"pretokens"`
		BPE       []int    `json:"bpe_ids"`
	} `json:"encode"`
	Decode [][2]json.RawMessage `json:"decode"` // [ids, text]
}

func loadPythonRef(t *testing.T) pythonRef {
	var ref pythonRef
	readJSON(t, "testdata/python_ref.json", &ref)
	return ref
}

func inRanges(rs [][2]rune, r rune) bool {
	lo, hi := 0, len(rs)
	for lo < hi {
		m := (lo + hi) / 2
		switch {
		case r < rs[m][0]:
			hi = m
		case r > rs[m][1]:
			lo = m + 1
		default:
			return true
		}
	}
	return false
}

func isSurrogate(r rune) bool { return r >= 0xD800 && r <= 0xDFFF }

// Every code point: the pattern's classes, the two whitespace notions and
// the properties of the final-sigma rule, against Python (regex module,
// str.isspace, str.lower).
func TestCharacterClassesMatchPython(t *testing.T) {
	ref := loadPythonRef(t)
	for _, k := range []string{"letter", "number", "other", "regex_space", "isspace", "case_ignorable", "cased_not_ignorable", "unicodedata_assigned"} {
		require.NotEmpty(t, ref.Classes[k], k)
	}
	bad := map[string][]string{}
	check := func(name string, got bool, r rune) {
		if got != inRanges(ref.Classes[name], r) && len(bad[name]) < 10 {
			bad[name] = append(bad[name], fmt.Sprintf("%U: go %v", r, got))
		}
	}
	for r := rune(0); r <= 0x10FFFF; r++ {
		if isSurrogate(r) {
			continue
		}
		c := classOf(r)
		check("letter", c == classLetter, r)
		check("number", c == classNumber, r)
		check("other", c == classOther, r)
		check("regex_space", isRegexSpace(r), r)
		check("isspace", isPySpace(r), r)
		if !inRanges(ref.Classes["unicodedata_assigned"], r) {
			continue // new in Go's Unicode 15.0, unknown to Python 3.11's 14.0
		}
		ign := isCaseIgnorable(r)
		check("case_ignorable", ign, r)
		if !ign { // casedness of case-ignorable characters never matters
			check("cased_not_ignorable", isCased(r), r)
		}
	}
	assert.Empty(t, bad)
}

// isRegexSpace is what collapseSpace treats as \s.
func isRegexSpace(r rune) bool { return collapseSpace("a"+string(r)+"b") == "a b" }

// Every code point lower-cased alone, against Python's str.lower.
func TestLowerMatchesPython(t *testing.T) {
	ref := loadPythonRef(t)
	want := map[rune]string{}
	for _, p := range ref.LowerMap {
		var r rune
		var s string
		require.NoError(t, json.Unmarshal(p[0], &r))
		require.NoError(t, json.Unmarshal(p[1], &s))
		want[r] = s
	}
	require.Len(t, want, 1433)
	var bad []string
	for r := rune(0); r <= 0x10FFFF; r++ {
		if isSurrogate(r) {
			continue
		}
		w, ok := want[r]
		if !ok {
			w = string(r)
		}
		if got := pyLower(string(r)); got != w && len(bad) < 10 {
			bad = append(bad, fmt.Sprintf("%U: go %q python %q", r, got, w))
		}
	}
	assert.Empty(t, bad)
}

// One pass of html.unescape: every HTML5 entity name in three contexts and
// numeric references around Python's special cases.
func TestUnescapeMatchesPython(t *testing.T) {
	ref := loadPythonRef(t)
	require.Greater(t, len(ref.Unescape), 7000)
	n := 0
	for _, c := range ref.Unescape {
		if got := pyUnescape(c[0]); got != c[1] {
			n++
			if n <= 10 {
				t.Errorf("unescape %q: got %q, python %q", c[0], got, c[1])
			}
		}
	}
	assert.Zero(t, n, "mismatches")
}

// Corner cases and random mixes through the whole tokenizer: cleaned text,
// pre-tokens and ids from OpenAI's code.
func TestEncodeMatchesPython(t *testing.T) {
	ref := loadPythonRef(t)
	require.Greater(t, len(ref.Encode), 300)
	tk := defaultTokenizer(t)
	for _, c := range ref.Encode {
		cleaned := clean(c.Text)
		if !assert.Equal(t, c.Cleaned, cleaned, "clean %q", c.Text) {
			continue
		}
		var pre []string
		pretokenize(cleaned, func(s string) { pre = append(pre, s) })
		assert.Equal(t, len(c.Pretokens), len(pre), "pretokens of %q", cleaned)
		if len(c.Pretokens) > 0 {
			assert.Equal(t, c.Pretokens, pre, "pretokens of %q", cleaned)
		}
		got := tk.Encode(c.Text)
		assert.Equal(t, len(c.BPE), len(got), "encode %q", c.Text)
		if len(c.BPE) > 0 {
			assert.Equal(t, c.BPE, got, "encode %q", c.Text)
		}
	}
}

// Decoding cut or invalid UTF-8 byte sequences: one U+FFFD per maximal
// invalid subpart, as Python's errors="replace".
func TestDecodeMatchesPython(t *testing.T) {
	ref := loadPythonRef(t)
	require.NotEmpty(t, ref.Decode)
	tk := defaultTokenizer(t)
	for _, c := range ref.Decode {
		var ids []int
		var want string
		require.NoError(t, json.Unmarshal(c[0], &ids))
		require.NoError(t, json.Unmarshal(c[1], &want))
		assert.Equal(t, want, tk.Decode(ids), "decode %v", ids)
	}
	// Out-of-range ids are skipped (Python raises KeyError).
	assert.Equal(t, "a photo ", tk.Decode([]int{-1, 320, VocabSize, 1125}))
}

// Invalid UTF-8 input becomes U+FFFD per maximal subpart, hand-derived:
// "\xe2\x82" is one cut sequence, "\xff" and "\xfe" are one each.
func TestInvalidUTF8Input(t *testing.T) {
	assert.Equal(t, "a\uFFFDb\uFFFD\uFFFDc", pyValidUTF8("a\xe2\x82b\xff\xfec"))
	tk := defaultTokenizer(t)
	assert.Equal(t, tk.Encode("a\uFFFDb\uFFFD\uFFFDc"), tk.Encode("a\xe2\x82b\xff\xfec"))
}

// The CLIP-AGIQA prompt for the class "terrible", hand-checked ids: SOT,
// "x" (343) ×16, "terrible" (9741), "." (269), EOT, then zeros; EOT at 19.
func TestCLIPAGIQAPrompt(t *testing.T) {
	tk := defaultTokenizer(t)
	want := []int64{SOT}
	for range 16 {
		want = append(want, 343)
	}
	want = append(want, 9741, 269, EOT)
	rows, err := tk.Tokenize([]string{"X X X X X X X X X X X X X X X X terrible."}, ContextLength, false)
	require.NoError(t, err)
	require.Len(t, rows, 1)
	assert.Equal(t, padded(want...), rows[0])
	assert.Equal(t, 19, EOTIndex(rows[0]))
}

func TestTruncation(t *testing.T) {
	tk := defaultTokenizer(t)
	long := strings.Repeat("a ", 100) // 100 ids of "a" (320)
	_, err := tk.Tokenize([]string{"fine", long}, ContextLength, false)
	require.Error(t, err)
	assert.ErrorContains(t, err, "text 1")
	assert.ErrorContains(t, err, `"a a a`)
	assert.ErrorContains(t, err, "102 tokens")
	assert.ErrorContains(t, err, "context length 77")

	rows, err := tk.Tokenize([]string{"fine", long}, ContextLength, true)
	require.NoError(t, err)
	want := []int64{SOT}
	for range ContextLength - 2 {
		want = append(want, 320)
	}
	want = append(want, EOT)
	assert.Equal(t, want, rows[1])
	assert.Equal(t, padded(SOT, 3797, EOT), rows[0]) // "fine" = 3797 (OpenAI's encode)
	assert.Equal(t, ContextLength-1, EOTIndex(rows[1]))

	// Exactly full (75 ids + SOT + EOT) needs no truncation.
	full := strings.Repeat("a ", ContextLength-2)
	rows, err = tk.Tokenize([]string{full}, ContextLength, false)
	require.NoError(t, err)
	assert.Equal(t, want, rows[0])
	_, err = tk.Tokenize([]string{full + "a"}, ContextLength, false)
	require.ErrorContains(t, err, "78 tokens")

	// Other lengths, as clip.tokenize: tokens[:n], last set to EOT.
	rows, err = tk.Tokenize([]string{"a photo"}, 3, true)
	require.NoError(t, err)
	assert.Equal(t, []int64{SOT, 320, EOT}, rows[0])
	rows, err = tk.Tokenize([]string{"a photo"}, 1, true)
	require.NoError(t, err)
	assert.Equal(t, []int64{EOT}, rows[0])
	_, err = tk.Tokenize([]string{"a"}, 0, true)
	require.Error(t, err)
}

func TestEmptyText(t *testing.T) {
	tk := defaultTokenizer(t)
	for _, s := range []string{"", "   ", "\t\n", "&nbsp;"} {
		assert.Empty(t, tk.Encode(s), "%q", s)
		rows, err := tk.Tokenize([]string{s}, ContextLength, false)
		require.NoError(t, err)
		assert.Equal(t, padded(SOT, EOT), rows[0], "%q", s)
		assert.Equal(t, 1, EOTIndex(rows[0]))
	}
	rows, err := tk.Tokenize(nil, ContextLength, false)
	require.NoError(t, err)
	assert.Empty(t, rows)
	assert.Equal(t, "", tk.Decode(nil))
}

// Many goroutines over shared and distinct words give the single-threaded
// ids (run with -race to check the cache's locking).
func TestConcurrentEncode(t *testing.T) {
	tk, err := New(bytes.NewReader(embeddedVocab)) // fresh, empty cache
	require.NoError(t, err)
	ref := defaultTokenizer(t)
	texts := []string{"a photo of a cat", "X X X X X X X X X X X X X X X X perfect.", "naïve café résumé", "日本語のテキスト"}
	var wg sync.WaitGroup
	errs := make(chan string, 64)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				text := fmt.Sprintf("%s word%c%c", texts[(g+i)%len(texts)], 'a'+rune(i%26), 'a'+rune(g))
				got, want := tk.Encode(text), ref.Encode(text)
				if fmt.Sprint(got) != fmt.Sprint(want) {
					errs <- fmt.Sprintf("%q: %v != %v", text, got, want)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

// The cache is bounded and stays correct across a reset.
func TestCacheBound(t *testing.T) {
	tk, err := New(bytes.NewReader(embeddedVocab))
	require.NoError(t, err)
	first := tk.Encode("photograph")
	for i := range maxCacheEntries + 10 {
		word := []byte{byte('a' + i%26), byte('a' + i/26%26), byte('a' + i/676%26), byte('a' + i/17576%26)}
		tk.Encode(string(word))
	}
	tk.mu.RLock()
	n := len(tk.cache)
	tk.mu.RUnlock()
	assert.LessOrEqual(t, n, maxCacheEntries)
	assert.Equal(t, first, tk.Encode("photograph"))
}

func gzipped(t *testing.T, s string) *bytes.Reader {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	_, err := zw.Write([]byte(s))
	require.NoError(t, err)
	require.NoError(t, zw.Close())
	return bytes.NewReader(buf.Bytes())
}

func TestNewRejectsBadVocabulary(t *testing.T) {
	_, err := New(strings.NewReader("not gzip"))
	assert.ErrorContains(t, err, "tokenizer vocabulary")
	_, err = New(gzipped(t, "#version: 0.2\ni n\nt h\n"))
	assert.ErrorContains(t, err, "has 2 merges, want 48894")
	_, err = New(gzipped(t, "#version: 0.2\ni n\nthree symbols here\n"))
	assert.ErrorContains(t, err, "line 3")
}

// Default parses once and hands out the same tokenizer.
func TestDefaultIsShared(t *testing.T) {
	a, err := Default()
	require.NoError(t, err)
	b, err := Default()
	require.NoError(t, err)
	assert.Same(t, a, b)
	assert.Len(t, a.decoder, VocabSize)
	assert.Equal(t, "<|startoftext|>", string(a.decoder[SOT]))
	assert.Equal(t, "<|endoftext|>", string(a.decoder[EOT]))
}

func TestEOTIndex(t *testing.T) {
	assert.Equal(t, 0, EOTIndex(nil))
	assert.Equal(t, 2, EOTIndex([]int64{SOT, 5, EOT, 0}))
	assert.Equal(t, 1, EOTIndex([]int64{SOT, EOT, 7, EOT})) // first maximum, as torch.argmax
}

func BenchmarkTokenize(b *testing.B) {
	tk := defaultTokenizer(b)
	texts := []string{
		"X X X X X X X X X X X X X X X X terrible.", "X X X X X X X X X X X X X X X X perfect.",
		"Good photo.", "Bad photo.", "an astronaut meeting an alien lizard humanoid, warm color, anime style",
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := tk.Tokenize(texts, ContextLength, true); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEncodeUncached measures BPE itself: every call uses a fresh cache.
func BenchmarkEncodeUncached(b *testing.B) {
	text := "an astronaut meeting an alien lizard humanoid, warm color, anime style, supercalifragilisticexpialidocious"
	tk, err := New(bytes.NewReader(embeddedVocab))
	require.NoError(b, err)
	b.ReportAllocs()
	for b.Loop() {
		tk.mu.Lock()
		clear(tk.cache)
		tk.mu.Unlock()
		tk.Encode(text)
	}
}

func BenchmarkNew(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := New(bytes.NewReader(embeddedVocab)); err != nil {
			b.Fatal(err)
		}
	}
}
