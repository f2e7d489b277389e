package regularfile

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestRefusesWhatIsNotARegularFile(t *testing.T) {
	dir := t.TempDir()
	reg := filepath.Join(dir, "a.png")
	if err := os.WriteFile(reg, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "pipe.png")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	link := filepath.Join(dir, "link.png")
	if err := os.Symlink(fifo, link); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, path, want string
		missing          bool
	}{
		{"regular", reg, "", false},
		{"fifo", fifo, "named pipe", false},
		{"symlink to fifo", link, "named pipe", false},
		{"directory", dir, "a directory", false},
		{"missing", filepath.Join(dir, "none"), "no such file", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			// ReadFile must return, not block, on the FIFO.
			_, err := ReadFile(c.path)
			if c.want == "" {
				if err != nil {
					t.Fatalf("ReadFile: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), c.path) {
				t.Fatalf("ReadFile(%s) = %v, want an error naming the path and %q", c.path, err, c.want)
			}
			if c.missing != errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("errors.Is(ErrNotExist) = %v", !c.missing)
			}
		})
	}
}
