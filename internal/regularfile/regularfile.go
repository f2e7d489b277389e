// Package regularfile opens inputs only when they are regular files, so that a
// named pipe, socket or device given as an image, weights or checkpoint is
// refused with a clear error instead of blocking forever in open().
package regularfile

import (
	"fmt"
	"io/fs"
	"os"
)

// Check returns an error naming path unless it is a regular file (symlinks
// are followed). The error wraps the os.Stat error when path is missing.
func Check(path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	return checkMode(path, st.Mode())
}

// CheckEntry is Check for a directory entry's mode (as from fs.DirEntry.Type
// or Info), for walking directories without opening anything.
func CheckEntry(path string, mode fs.FileMode) error { return checkMode(path, mode) }

func checkMode(path string, mode fs.FileMode) error {
	if mode.IsRegular() {
		return nil
	}
	return fmt.Errorf("%s: not a regular file (%s)", path, Kind(mode))
}

// Kind names a file mode's type in words.
func Kind(mode fs.FileMode) string {
	switch {
	case mode.IsDir():
		return "a directory"
	case mode&fs.ModeNamedPipe != 0:
		return "a named pipe (FIFO)"
	case mode&fs.ModeSocket != 0:
		return "a socket"
	case mode&fs.ModeCharDevice != 0:
		return "a character device"
	case mode&fs.ModeDevice != 0:
		return "a device"
	case mode&fs.ModeSymlink != 0:
		return "a symbolic link"
	case mode.IsRegular():
		return "a regular file"
	default:
		return "not a regular file"
	}
}

// Open opens path for reading after checking that it is a regular file.
func Open(path string) (*os.File, error) {
	if err := Check(path); err != nil {
		return nil, err
	}
	return os.Open(path)
}

// ReadFile is os.ReadFile for regular files only.
func ReadFile(path string) ([]byte, error) {
	if err := Check(path); err != nil {
		return nil, err
	}
	return os.ReadFile(path)
}
