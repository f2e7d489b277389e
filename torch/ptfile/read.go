package ptfile

import (
	"archive/zip"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"

	"github.com/clipagiqa/clipagiqa/internal/regularfile"
)

// File is a loaded torch.save file or TorchScript archive.
type File struct {
	// Root is the unpickled data.pkl (see the package doc for its types).
	Root any
	// Prefix is the archive's top folder including the slash ("model.pth/").
	Prefix string
	// Version is the trimmed content of the version record ("3" for
	// torch.save, "4"+ for TorchScript), empty if absent.
	Version string
	// TorchScript reports whether the archive holds constants.pkl or code/,
	// i.e. was written by torch.jit.save.
	TorchScript bool
}

// Load reads a PyTorch zip checkpoint or TorchScript archive from path.
// Every storage is read into memory; the file is closed on return.
func Load(path string) (*File, error) {
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		return nil, fmt.Errorf("ptfile: load %s: is a directory", path)
	}
	f, err := regularfile.Open(path) // a FIFO would block in open()
	if err != nil {
		return nil, fmt.Errorf("ptfile: load: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("ptfile: load %s: %w", path, err)
	}
	pf, err := read(f, st.Size())
	if err != nil {
		return nil, fmt.Errorf("ptfile: load %s: %w", path, err)
	}
	return pf, nil
}

// VerifyArchive checks that path is a readable zip archive whose every
// record matches its CRC-32, streaming so that memory stays flat. Load
// verifies the records it reads itself; this is for archives that another
// reader (libtorch's, which skips the check) will read.
func VerifyArchive(path string) error {
	f, err := regularfile.Open(path)
	if err != nil {
		return fmt.Errorf("ptfile: verify: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("ptfile: verify %s: %w", path, err)
	}
	if st.Size() == 0 {
		return fmt.Errorf("ptfile: verify %s: empty file", path)
	}
	zr, err := zip.NewReader(f, st.Size())
	if err != nil {
		return fmt.Errorf("ptfile: verify %s: not a zip archive (truncated or not a PyTorch file): %w", path, err)
	}
	for _, rec := range zr.File {
		if err := checkBounds(rec, st.Size()); err != nil {
			return fmt.Errorf("ptfile: verify %s: %w", path, err)
		}
		rc, err := rec.Open()
		if err == nil {
			var n int64
			n, err = io.Copy(io.Discard, rc) // reading to EOF checks the CRC-32
			rc.Close()
			if err == nil && uint64(n) != rec.UncompressedSize64 {
				err = fmt.Errorf("%d bytes, the directory says %d", n, rec.UncompressedSize64)
			}
		}
		if err != nil {
			return fmt.Errorf("ptfile: verify %s: record %s: %w", path, rec.Name, describeRecordErr(err))
		}
	}
	return nil
}

// describeRecordErr says what a checksum failure means for the user.
func describeRecordErr(err error) error {
	if errors.Is(err, zip.ErrChecksum) {
		return fmt.Errorf("CRC-32 mismatch: the file is corrupt (re-download or re-save it): %w", err)
	}
	return err
}

// checkBounds refuses a stored record whose directory entry points past the
// end of the archive. The central directory sits at the end of the file and
// was read, so this is a corrupt directory rather than a truncated file.
func checkBounds(f *zip.File, archiveSize int64) error {
	if f.Method != zip.Store {
		return nil
	}
	n := f.UncompressedSize64
	off, err := f.DataOffset()
	if err != nil {
		return fmt.Errorf("record %s: corrupt zip directory entry: %w", f.Name, err)
	}
	if f.CompressedSize64 != n || off < 0 || n > uint64(archiveSize) || off > archiveSize-int64(n) {
		return fmt.Errorf("record %s: the zip directory says %d bytes at offset %d, past the end of the %d-byte file (corrupt zip directory)", f.Name, n, off, archiveSize)
	}
	return nil
}

// Read is Load for an archive held in r (size bytes long).
func Read(r io.ReaderAt, size int64) (*File, error) {
	pf, err := read(r, size)
	if err != nil {
		return nil, fmt.Errorf("ptfile: read: %w", err)
	}
	return pf, nil
}

// ErrLegacyFormat reports a pre-1.6 (non-zip) torch.save file.
var ErrLegacyFormat = errors.New("legacy (non-zip) torch.save format is not supported; re-save it with torch >= 1.6")

func read(r io.ReaderAt, size int64) (*File, error) {
	if size == 0 {
		return nil, errors.New("empty file")
	}
	zr, err := zip.NewReader(r, size)
	if err != nil {
		var head [2]byte
		if n, _ := r.ReadAt(head[:], 0); n == 2 && head[0] == 0x80 && head[1] <= 5 {
			return nil, ErrLegacyFormat
		}
		return nil, fmt.Errorf("not a zip archive (truncated or not a PyTorch file): %w", err)
	}
	entries := make(map[string]*zip.File, len(zr.File))
	var pkl *zip.File
	pf := &File{}
	for _, f := range zr.File {
		entries[f.Name] = f
		dir, base := path.Split(f.Name)
		if base == "data.pkl" && strings.Count(f.Name, "/") <= 1 && pkl == nil {
			pkl = f
			pf.Prefix = dir
		}
	}
	if pkl == nil {
		return nil, errors.New("zip archive has no <top>/data.pkl record: not a torch.save or TorchScript file")
	}
	for name := range entries {
		rest, ok := strings.CutPrefix(name, pf.Prefix)
		if ok && (rest == "constants.pkl" || strings.HasPrefix(rest, "code/")) {
			pf.TorchScript = true
		}
	}
	for _, v := range []string{"version", ".data/version"} {
		if f, ok := entries[pf.Prefix+v]; ok {
			b, err := readEntry(f, size, 64)
			if err != nil {
				return nil, err
			}
			pf.Version = strings.TrimSpace(string(b))
			break
		}
	}
	data, err := readEntry(pkl, size, -1)
	if err != nil {
		return nil, err
	}
	loader := &storageLoader{storages: make(map[string]*Storage)}
	loader.read = func(key string) ([]byte, error) {
		name := pf.Prefix + "data/" + key
		f, ok := entries[name]
		if !ok {
			return nil, fmt.Errorf("storage record %s missing from the archive", name)
		}
		return readEntry(f, size, -1)
	}
	root, err := unpickle(data, loader.load, callClass)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", pkl.Name, err)
	}
	pf.Root = root
	return pf, nil
}

// readEntry reads one zip record. Sizes from the headers are checked
// against the archive size before anything is allocated; limit >= 0 caps
// the record size.
func readEntry(f *zip.File, archiveSize int64, limit int64) ([]byte, error) {
	n := f.UncompressedSize64
	if limit >= 0 && n > uint64(limit) {
		return nil, fmt.Errorf("record %s is %d bytes, more than the %d expected", f.Name, n, limit)
	}
	if err := checkBounds(f, archiveSize); err != nil {
		return nil, err
	}
	rc, err := f.Open()
	if err != nil {
		return nil, fmt.Errorf("record %s: %w", f.Name, err)
	}
	defer rc.Close()
	var buf []byte
	if f.Method == zip.Store {
		buf = make([]byte, n)
		_, err = io.ReadFull(rc, buf)
		if err == nil {
			// Reading to EOF makes archive/zip verify the CRC-32.
			var one [1]byte
			if m, e := rc.Read(one[:]); m != 0 {
				err = errors.New("record longer than its header says")
			} else if e != nil && e != io.EOF {
				err = e
			}
		}
	} else {
		buf, err = io.ReadAll(io.LimitReader(rc, int64(min(n, 1<<62))+1))
		if err == nil && uint64(len(buf)) != n {
			err = fmt.Errorf("decompressed to %d bytes, header says %d", len(buf), n)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("record %s: %w", f.Name, describeRecordErr(err))
	}
	return buf, nil
}
