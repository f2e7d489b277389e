package ptfile

import (
	"archive/zip"
	"bytes"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// rewriteZip copies the records of src accepted by keep into dst, raw.
func rewriteZip(t *testing.T, src, dst string, keep func(name string) bool) {
	t.Helper()
	zr, err := zip.OpenReader(src)
	require.NoError(t, err)
	defer zr.Close()
	out, err := os.Create(dst)
	require.NoError(t, err)
	zw := zip.NewWriter(out)
	for _, f := range zr.File {
		if keep(f.Name) {
			require.NoError(t, zw.Copy(f))
		}
	}
	require.NoError(t, zw.Close())
	require.NoError(t, out.Close())
}

// zipWith writes a zip holding the given records (stored).
func zipWith(t *testing.T, path string, records map[string][]byte, order []string) {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, name := range order {
		w, err := zw.CreateHeader(&zip.FileHeader{Name: name, Method: zip.Store})
		require.NoError(t, err)
		_, err = w.Write(records[name])
		require.NoError(t, err)
	}
	require.NoError(t, zw.Close())
	require.NoError(t, os.WriteFile(path, buf.Bytes(), 0o644))
}

// storagePickle is a hand-written protocol-2 pickle of one tensor whose
// storage has the given class and key.
func storagePickle(storageClass, key string, numel byte) []byte {
	var b bytes.Buffer
	b.WriteString("\x80\x02ctorch._utils\n_rebuild_tensor_v2\n(")
	b.WriteString("(X\x07\x00\x00\x00storage")
	b.WriteString("ctorch\n" + storageClass + "\n")
	b.WriteString("X" + string([]byte{byte(len(key)), 0, 0, 0}) + key)
	b.WriteString("X\x03\x00\x00\x00cpu")
	b.WriteString("K" + string([]byte{numel}) + "tQ")
	b.WriteString("K\x00K" + string([]byte{numel}) + "\x85K\x01\x85\x89ccollections\nOrderedDict\n)Rt")
	b.WriteString("R.")
	return b.Bytes()
}

func TestStoragePickleHelperIsValid(t *testing.T) {
	// The hand-written pickle itself must load when its storage exists.
	dir := t.TempDir()
	p := filepath.Join(dir, "ok.pt")
	zipWith(t, p, map[string][]byte{
		"a/data.pkl": storagePickle("FloatStorage", "0", 2),
		"a/data/0":   {0, 0, 0x80, 0x3f, 0, 0, 0, 0x40},
	}, []string{"a/data.pkl", "a/data/0"})
	f, err := Load(p)
	require.NoError(t, err)
	v, err := f.Root.(*Tensor).Float32s()
	require.NoError(t, err)
	assert.Equal(t, []float32{1, 2}, v)
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	ckpt := filepath.Join("testdata", "py_checkpoint.pt")
	full, err := os.ReadFile(ckpt)
	require.NoError(t, err)

	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, data, 0o644))
		return p
	}
	rng := rand.New(rand.NewSource(7))
	random := make([]byte, 4096)
	rng.Read(random)

	noPkl := filepath.Join(dir, "nopkl.pt")
	zipWith(t, noPkl, map[string][]byte{"a/version": []byte("3\n"), "a/data/0": {1, 2, 3, 4}}, []string{"a/version", "a/data/0"})
	missingKey := filepath.Join(dir, "missingkey.pt")
	zipWith(t, missingKey, map[string][]byte{"a/data.pkl": storagePickle("FloatStorage", "0", 2)}, []string{"a/data.pkl"})
	complexDT := filepath.Join(dir, "complex.pt")
	zipWith(t, complexDT, map[string][]byte{
		"a/data.pkl": storagePickle("ComplexFloatStorage", "0", 1),
		"a/data/0":   make([]byte, 8),
	}, []string{"a/data.pkl", "a/data/0"})
	shortStorage := filepath.Join(dir, "short.pt")
	zipWith(t, shortStorage, map[string][]byte{
		"a/data.pkl": storagePickle("FloatStorage", "0", 4),
		"a/data/0":   make([]byte, 8),
	}, []string{"a/data.pkl", "a/data/0"})
	badPickle := filepath.Join(dir, "badpickle.pt")
	zipWith(t, badPickle, map[string][]byte{"a/data.pkl": []byte("\x80\x02}q\x00(X\x01\x00\x00\x00a")}, []string{"a/data.pkl"})

	tests := []struct {
		name    string
		path    string
		wantMsg string
	}{
		{"missing file", filepath.Join(dir, "nope.pt"), "no such file"},
		{"directory", dir, "is a directory"},
		{"empty file", write("empty.pt", nil), "empty file"},
		{"random bytes", write("random.pt", random), "not a zip archive"},
		{"truncated half", write("half.pt", full[:len(full)/2]), "not a zip archive"},
		{"legacy pickle", write("legacy.pt", []byte("\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19.")), "legacy"},
		{"zip without data.pkl", noPkl, "no <top>/data.pkl"},
		{"storage key missing", missingKey, "a/data/0 missing"},
		{"unsupported dtype", complexDT, "unsupported dtype"},
		{"storage too short", shortStorage, "holds 8 bytes"},
		{"truncated pickle", badPickle, "truncated"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, err := Load(tc.path)
			require.Error(t, err)
			assert.Nil(t, f)
			assert.Contains(t, err.Error(), tc.path, "error names the path")
			assert.Contains(t, err.Error(), tc.wantMsg)
		})
	}
}

// TestTruncatedStorageRecord cuts the archive inside a storage record but
// keeps a valid central directory, so only the record read can notice.
func TestTruncatedStorageRecord(t *testing.T) {
	full, err := os.ReadFile(filepath.Join("testdata", "py_checkpoint.pt"))
	require.NoError(t, err)
	zr, err := zip.NewReader(bytes.NewReader(full), int64(len(full)))
	require.NoError(t, err)
	var rec *zip.File
	for _, f := range zr.File {
		if filepath.Base(filepath.Dir(f.Name)) == "data" {
			rec = f
			break
		}
	}
	require.NotNil(t, rec)
	off, err := rec.DataOffset()
	require.NoError(t, err)
	// Corrupt the record's bytes: the CRC check must fail.
	bad := append([]byte(nil), full...)
	bad[off] ^= 0xff
	_, err = Read(bytes.NewReader(bad), int64(len(bad)))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "checksum")
}

// TestCorruptPicklesNeverPanic flips bytes and truncates data.pkl of real
// checkpoints; every outcome must be a value or an error.
func TestCorruptPicklesNeverPanic(t *testing.T) {
	for _, name := range []string{"py_checkpoint.pt", "py_tensors.pt", "py_proto4.pt", "py_script.pt"} {
		pf, err := Load(filepath.Join("testdata", name))
		require.NoError(t, err)
		zr, err := zip.OpenReader(filepath.Join("testdata", name))
		require.NoError(t, err)
		var pkl []byte
		storages := map[string][]byte{}
		for _, f := range zr.File {
			rc, err := f.Open()
			require.NoError(t, err)
			b, err := io.ReadAll(rc)
			require.NoError(t, err)
			rc.Close()
			if f.Name == pf.Prefix+"data.pkl" {
				pkl = b
			} else {
				storages[f.Name] = b
			}
		}
		zr.Close()
		loader := func() *storageLoader {
			return &storageLoader{storages: map[string]*Storage{}, read: func(key string) ([]byte, error) {
				if b, ok := storages[pf.Prefix+"data/"+key]; ok {
					return b, nil
				}
				return nil, os.ErrNotExist
			}}
		}
		for cut := 0; cut < len(pkl); cut++ {
			_, err := unpickle(pkl[:cut], loader().load, callClass)
			require.Error(t, err, "%s cut at %d", name, cut)
		}
		rng := rand.New(rand.NewSource(1))
		for i := 0; i < 3000; i++ {
			m := append([]byte(nil), pkl...)
			for j := 0; j < 1+rng.Intn(4); j++ {
				m[rng.Intn(len(m))] = byte(rng.Intn(256))
			}
			assert.NotPanics(t, func() { _, _ = unpickle(m, loader().load, callClass) })
		}
	}
}

// FuzzUnpickle runs its seeds in plain `go test`; `go test -fuzz` explores.
func FuzzUnpickle(f *testing.F) {
	f.Add(storagePickle("FloatStorage", "0", 2))
	f.Add([]byte("\x80\x02}q\x00(X\x01\x00\x00\x00aK\x01u."))
	f.Add([]byte("(lp0\nI1\naI2\na."))
	f.Add([]byte("\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00\x8c\x01a\x94\x8a\x00\x86\x94."))
	f.Fuzz(func(t *testing.T, data []byte) {
		load := func(any) (any, error) {
			return &Storage{DType: Float32, Numel: 2, Data: make([]byte, 8)}, nil
		}
		_, _ = unpickle(data, load, callClass)
	})
}

// TestExpandedViewIsBounded: a stride-0 view may not blow one element up
// into gigabytes; a small expanded view is fine.
func TestExpandedViewIsBounded(t *testing.T) {
	st := &Storage{DType: Float32, Key: "0", Numel: 1, Data: []byte{0, 0, 0x80, 0x3f}}
	small, err := rebuildTensor([]any{st, int64(0), Tuple{int64(2), int64(3)}, Tuple{int64(0), int64(0)}}, Invalid)
	require.NoError(t, err)
	v, err := small.Float32s()
	require.NoError(t, err)
	assert.Equal(t, []float32{1, 1, 1, 1, 1, 1}, v)
	_, err = rebuildTensor([]any{st, int64(0), Tuple{int64(1) << 40}, Tuple{int64(0)}}, Invalid)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "too large")
	_, err = rebuildTensor([]any{st, int64(1), Tuple{int64(1)}, Tuple{int64(1)}}, Invalid)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "exceeds storage")
}
