package tokenizer

import (
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func tok(t testing.TB) *Tokenizer {
	t.Helper()
	tk, err := Default()
	require.NoError(t, err)
	return tk
}

// Vectors produced by OpenAI's tokenizer (testdata/tokenizer_vectors.json).
func TestOpenAIVectors(t *testing.T) {
	var f struct {
		Cases []struct {
			Text       string `json:"text"`
			BPE        []int  `json:"bpe_ids"`
			WithSotEot []int  `json:"with_sot_eot"`
			Decoded    string `json:"decoded"`
		} `json:"cases"`
	}
	b, err := os.ReadFile("testdata/tokenizer_vectors.json")
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, &f))
	require.NotEmpty(t, f.Cases)
	tk := tok(t)
	for _, c := range f.Cases {
		got := tk.Encode(c.Text)
		if len(c.BPE) == 0 {
			assert.Empty(t, got, c.Text)
		} else {
			assert.Equal(t, c.BPE, got, "encode %q", c.Text)
		}
		if len(c.WithSotEot) > ContextLength {
			_, err := tk.Tokenize([]string{c.Text}, ContextLength, false)
			require.Error(t, err, "%q does not fit", c.Text)
			rows, err := tk.Tokenize([]string{c.Text}, ContextLength, true)
			require.NoError(t, err)
			want := make([]int64, ContextLength)
			for i := range want {
				want[i] = int64(c.WithSotEot[i])
			}
			want[ContextLength-1] = EOT
			assert.Equal(t, want, rows[0], "truncated %q", c.Text)
			continue
		}
		rows, err := tk.Tokenize([]string{c.Text}, ContextLength, false)
		require.NoError(t, err)
		for i, id := range c.WithSotEot {
			require.Equal(t, int64(id), rows[0][i], "tokenize %q at %d", c.Text, i)
		}
		for _, id := range rows[0][len(c.WithSotEot):] {
			require.Zero(t, id, "padding of %q", c.Text)
		}
		assert.Equal(t, c.Decoded, tk.Decode(c.BPE), "decode %v", c.BPE)
	}
}

// The ten strings of the reference fixture (digits, entities, contractions,
// whitespace runs, non-ASCII, the CLIP-AGIQA prompt).
func TestFixtureExtraStrings(t *testing.T) {
	var f struct {
		Cases []struct {
			Text     string  `json:"text"`
			BPE      []int   `json:"bpe_ids"`
			Tokenize []int64 `json:"tokenize_77"`
		} `json:"cases"`
	}
	b, err := os.ReadFile("testdata/extra.json")
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, &f))
	require.Len(t, f.Cases, 10)
	tk := tok(t)
	for _, c := range f.Cases {
		got := tk.Encode(c.Text)
		if len(c.BPE) == 0 {
			assert.Empty(t, got, c.Text)
		} else {
			assert.Equal(t, c.BPE, got, "encode %q", c.Text)
		}
		rows, err := tk.Tokenize([]string{c.Text}, ContextLength, false)
		require.NoError(t, err)
		assert.Equal(t, c.Tokenize, rows[0], "tokenize %q", c.Text)
	}
}

func TestPromptAndTruncation(t *testing.T) {
	tk := tok(t)
	rows, err := tk.Tokenize([]string{strings.Repeat("X ", 16) + "terrible."}, ContextLength, false)
	require.NoError(t, err)
	want := []int64{SOT}
	for range 16 {
		want = append(want, 343)
	}
	want = append(want, 9741, 269, EOT)
	assert.Equal(t, want, rows[0][:len(want)])
	assert.Equal(t, 19, EOTIndex(rows[0]))

	long := strings.Repeat("quality ", 100)
	_, err = tk.Tokenize([]string{long}, ContextLength, false)
	require.ErrorContains(t, err, "more than the context length")
	rows, err = tk.Tokenize([]string{long}, ContextLength, true)
	require.NoError(t, err)
	assert.Equal(t, int64(SOT), rows[0][0])
	assert.Equal(t, int64(EOT), rows[0][ContextLength-1])

	rows, err = tk.Tokenize([]string{""}, ContextLength, false)
	require.NoError(t, err)
	assert.Equal(t, []int64{SOT, EOT}, rows[0][:2])
}

func TestBadVocabulary(t *testing.T) {
	_, err := New(strings.NewReader("not gzip"))
	require.Error(t, err)
}

func BenchmarkTokenize(b *testing.B) {
	tk := tok(b)
	texts := []string{"a photo of a cat sitting on a mat.", "X X X X X X X X X X X X X X X X perfect."}
	for b.Loop() {
		if _, err := tk.Tokenize(texts, ContextLength, false); err != nil {
			b.Fatal(err)
		}
	}
}
