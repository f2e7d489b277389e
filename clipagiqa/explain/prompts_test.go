package explain

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func writeTable(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "prompts.csv")
	require.NoError(t, os.WriteFile(p, []byte(body), 0o644))
	return p
}

func TestReadPrompts(t *testing.T) {
	p, err := ReadPrompts(writeTable(t, "\ufeffName,mos,Prompt\nsub/a.png,3,\"a cat, on a sofa\"\nb.png,2,\nsub/a.png,3,\"a cat, on a sofa\"\n"))
	require.NoError(t, err)
	assert.Equal(t, 2, p.Len())
	v, ok := p.Lookup("nope.png", "sub/a.png")
	assert.True(t, ok)
	assert.Equal(t, "a cat, on a sofa", v)
	v, ok = p.Lookup("./b.png")
	assert.True(t, ok, "names are cleaned")
	assert.Equal(t, "", v, "an empty prompt is a prompt")
	_, ok = p.Lookup("a.png")
	assert.False(t, ok)
}

func TestReadPromptsErrors(t *testing.T) {
	for _, c := range []struct{ body, want string }{
		{"image,text\na.png,x\n", "needs an image column"},
		{"image,prompt\na.png,x\na.png,y\n", "listed twice with different prompts"},
		{"image,prompt\n,x\n", "line 2 has no image name"},
		{"prompt,image\nx\n", "line 2 has 1 fields"},
		{"", "header"},
	} {
		_, err := ReadPrompts(writeTable(t, c.body))
		assert.ErrorContains(t, err, c.want, c.body)
	}
	_, err := ReadPrompts(filepath.Join(t.TempDir(), "missing.csv"))
	assert.Error(t, err)
}
