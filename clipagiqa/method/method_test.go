package method

import (
	"context"
	"strings"
	"testing"

	"github.com/clipagiqa/clipagiqa/data"
	"github.com/clipagiqa/clipagiqa/torch"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fixedTokenizer encodes every text as one id per word (1, 2, 3, ...).
type fixedTokenizer struct{}

func (fixedTokenizer) Encode(text string) []int {
	ids := make([]int, len(strings.Fields(text)))
	for i := range ids {
		ids[i] = i + 1
	}
	return ids
}

func openNothing(string, int) (HeadLoader, error) { return nil, nil }

func TestRegisterAndLookup(t *testing.T) {
	require.ErrorContains(t, Register(Method{Open: openNothing}), "needs a name and Open")
	require.ErrorContains(t, Register(Method{Name: "x-no-open"}), "needs a name and Open")
	require.NoError(t, Register(Method{Name: "x-test-a", Description: "a", NeedsCheckpoint: true, Open: openNothing}))
	require.ErrorContains(t, Register(Method{Name: "x-test-a", Open: openNothing}), "already registered")
	m, err := Lookup("x-test-a")
	require.NoError(t, err)
	assert.Equal(t, "a", m.Description)
	assert.True(t, m.NeedsCheckpoint)
	assert.Contains(t, Names(), "x-test-a")
	_, err = Lookup("x-test-missing")
	require.Error(t, err)
	assert.Contains(t, err.Error(), `method "x-test-missing": want one of`)
	assert.Contains(t, err.Error(), "x-test-a")
}

func TestTokenizeRow(t *testing.T) {
	row, err := TokenizeRow(fixedTokenizer{}, "a b c", 6)
	require.NoError(t, err)
	assert.Equal(t, []int64{sotToken, 1, 2, 3, eotToken, 0}, row)
	_, err = TokenizeRow(fixedTokenizer{}, "a b c d e", 6) // 5 ids + start + end = 7 > 6
	require.ErrorContains(t, err, "has 7 tokens, more than the context length 6")
}

// promptHead reads prompts: the shared CLIP loop has none to give it.
type promptHead struct{}

func (promptHead) Prepare(*torch.Scope) *torch.Tensor { return nil }
func (promptHead) Score(*torch.Scope, *torch.Tensor, *torch.Tensor, []string) *torch.Tensor {
	return nil
}
func (promptHead) UsesPrompt() bool { return true }
func (promptHead) Close()           {}

func TestEvaluateHeadRefusesPromptHeads(t *testing.T) {
	ds := &data.Dataset{Name: "d", Samples: []data.Sample{{Name: "a", Path: "a.png", MOS: 1}}}
	_, preds, err := EvaluateHead(context.Background(), nil, promptHead{}, ds, EvalOptions{})
	require.ErrorContains(t, err, "evaluate d: this method's head has its own input")
	assert.Nil(t, preds)
}
