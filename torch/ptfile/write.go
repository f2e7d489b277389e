package ptfile

import (
	"archive/zip"
	"bufio"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sort"
)

// archivePrefix is the zip top folder of written files; readers (torch's
// included) take it from the first record, so any name works.
const archivePrefix = "archive/"

// recordAlignment matches torch's serializer: record data starts on a
// 64-byte boundary so storages can be memory-mapped.
const recordAlignment = 64

// Save writes entries in the order given. With no meta it is SaveStateDict;
// otherwise it is SaveCheckpoint.
func Save(path string, entries []NamedTensor, meta map[string]any) error {
	if len(meta) == 0 {
		return SaveStateDict(path, entries)
	}
	return SaveCheckpoint(path, entries, meta)
}

// SaveStateDict writes an OrderedDict name → tensor, the layout of
// torch.save(model.state_dict(), path).
func SaveStateDict(path string, entries []NamedTensor) error {
	d, err := orderedTensors(entries)
	if err != nil {
		return fmt.Errorf("ptfile: save %s: %w", path, err)
	}
	return SaveValue(path, d)
}

// SaveCheckpoint writes the Dassl checkpoint layout {"state_dict":
// OrderedDict(stateDict), **meta}, meta keys sorted. Meta values may be
// nil, bools, ints, floats, strings, lists and maps of those, or tensors.
func SaveCheckpoint(path string, stateDict []NamedTensor, meta map[string]any) error {
	sd, err := orderedTensors(stateDict)
	if err != nil {
		return fmt.Errorf("ptfile: save %s: %w", path, err)
	}
	if _, ok := meta["state_dict"]; ok {
		return fmt.Errorf("ptfile: save %s: meta must not contain \"state_dict\"", path)
	}
	root := NewDict(KindDict)
	root.Set("state_dict", sd)
	for _, k := range sortedKeys(meta) {
		root.Set(k, meta[k])
	}
	return SaveValue(path, root)
}

// SaveValue atomically writes any picklable tree (see Write) to path.
func SaveValue(path string, root any) error {
	if err := writeFileAtomic(path, func(w io.Writer) error { return Write(w, root) }); err != nil {
		return fmt.Errorf("ptfile: save %s: %w", path, err)
	}
	return nil
}

func orderedTensors(entries []NamedTensor) (*Dict, error) {
	d := NewDict(KindOrderedDict)
	for _, e := range entries {
		if e.Tensor == nil {
			return nil, fmt.Errorf("tensor %q is nil", e.Name)
		}
		if _, dup := d.Get(e.Name); dup {
			return nil, fmt.Errorf("duplicate tensor name %q", e.Name)
		}
		d.Set(e.Name, e.Tensor)
	}
	return d, nil
}

// sortedKeys fixes the order of map entries so identical input gives
// byte-identical files.
func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Write encodes root as a torch.save zip archive (format version 3, pickle
// protocol 2) to w. Each distinct *Tensor becomes one storage record.
func Write(w io.Writer, root any) error {
	p := newPickler()
	if err := p.dump(root, 0); err != nil {
		return err
	}
	pkl := p.finish()
	type record struct {
		name string
		data []byte
	}
	recs := []record{{"data.pkl", pkl}, {"byteorder", []byte("little")}}
	for i, t := range p.storages {
		recs = append(recs, record{fmt.Sprintf("data/%d", i), t.Data})
	}
	recs = append(recs, record{"version", []byte("3\n")})

	zw := zip.NewWriter(w)
	var offset int64
	for _, r := range recs {
		name := archivePrefix + r.name
		extra := alignmentExtra(offset, len(name))
		fh := &zip.FileHeader{
			Name:               name,
			Method:             zip.Store,
			ReaderVersion:      20,
			CreatorVersion:     20,
			CRC32:              crc32.ChecksumIEEE(r.data),
			CompressedSize64:   uint64(len(r.data)),
			UncompressedSize64: uint64(len(r.data)),
			Extra:              extra,
		}
		fw, err := zw.CreateRaw(fh)
		if err != nil {
			return fmt.Errorf("zip record %s: %w", name, err)
		}
		if _, err := fw.Write(r.data); err != nil {
			return fmt.Errorf("zip record %s: %w", name, err)
		}
		// The padding belongs in the local header only; torch's central
		// directory carries no extra fields either.
		fh.Extra = nil
		offset += 30 + int64(len(name)) + int64(len(extra)) + int64(len(r.data))
	}
	return zw.Close()
}

// alignmentExtra builds torch's "FB" padding extra field so that the record
// data after a local header at offset starts on a 64-byte boundary.
func alignmentExtra(offset int64, nameLen int) []byte {
	start := offset + 30 + int64(nameLen) + 4
	pad := (recordAlignment - start%recordAlignment) % recordAlignment
	extra := make([]byte, 4+pad)
	extra[0], extra[1] = 'F', 'B'
	binary.LittleEndian.PutUint16(extra[2:], uint16(pad))
	for i := 4; i < len(extra); i++ {
		extra[i] = 'Z'
	}
	return extra
}

// writeFileAtomic writes through a temporary file in the target directory,
// fsyncs it and renames it over path, so readers never see a partial file.
func writeFileAtomic(path string, write func(io.Writer) error) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	bw := bufio.NewWriterSize(f, 1<<20)
	if err = write(bw); err != nil {
		return err
	}
	if err = bw.Flush(); err != nil {
		return err
	}
	if err = f.Chmod(0o644); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp, path); err != nil {
		return err
	}
	// Persist the rename itself; not every filesystem supports syncing a
	// directory, so a failure here is not fatal.
	if d, derr := os.Open(dir); derr == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}
