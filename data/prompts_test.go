package data

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestReadPromptTable(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	pt, err := ReadPromptTable(write("ok.csv", "image,prompt\na.png,a cat\nw.png,   \nsub/b.png,\"a dog, running\"\n./a.png,a cat\nc.png,\n"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		names []string
		want  string
		ok    bool
	}{
		{[]string{"a.png"}, "a cat", true},
		{[]string{"x/a.png", "a.png"}, "a cat", true},
		{[]string{"sub/b.png"}, "a dog, running", true},
		{[]string{"b.png"}, "", false},
		{[]string{"w.png"}, "   ", true}, // verbatim, as the official code passes it to the tokenizer
		{[]string{"c.png"}, "", true},    // listed with an empty prompt
		{[]string{"", "d.png"}, "", false},
	} {
		got, ok := pt.Lookup(tc.names...)
		if got != tc.want || ok != tc.ok {
			t.Errorf("Lookup(%q) = %q, %v; want %q, %v", tc.names, got, ok, tc.want, tc.ok)
		}
	}
	for _, tc := range []struct{ body, want string }{
		{"image,score\na.png,1\n", "missing column(s) prompt or text"},
		{"name,prompt\na.png,one\na.png,two\n", "another prompt on line 2"},
		{"name,prompt\n../a.png,one\n", "outside the image root"},
	} {
		if _, err := ReadPromptTable(write("bad.csv", tc.body)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want %q", tc.body, err, tc.want)
		}
	}
}
