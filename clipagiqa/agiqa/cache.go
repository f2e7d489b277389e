package agiqa

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/clipagiqa/clipagiqa/clipagiqa/imageprep"
	"github.com/clipagiqa/clipagiqa/clipagiqa/loader"
	"github.com/clipagiqa/clipagiqa/clipagiqa/train"
	"github.com/clipagiqa/clipagiqa/data"
	"github.com/clipagiqa/clipagiqa/internal/regularfile"
	"github.com/clipagiqa/clipagiqa/torch"
)

// Feature-cache modes.
const (
	// CacheOff runs the image encoder on a fresh augmentation of every image
	// in every epoch: the paper's regime, one encoder pass per epoch.
	CacheOff = "off"
	// CacheCenter encodes one test-transform view per image once.
	CacheCenter = "center"
	// CacheViews encodes K augmented views per image once; each epoch draws one.
	CacheViews = "views"
)

// FeatureCache is a parsed training feature-cache mode.
type FeatureCache struct {
	Mode  string // CacheOff, CacheCenter or CacheViews
	Views int    // views per image: K for CacheViews, 1 for CacheCenter, 0 for CacheOff
}

// ParseFeatureCache parses "off", "center" or "views=K" (K ≥ 1).
func ParseFeatureCache(s string) (FeatureCache, error) {
	s = strings.TrimSpace(strings.ToLower(s))
	switch s {
	case CacheOff:
		return FeatureCache{Mode: CacheOff}, nil
	case CacheCenter:
		return FeatureCache{Mode: CacheCenter, Views: 1}, nil
	}
	if k, ok := strings.CutPrefix(s, CacheViews+"="); ok {
		n, err := strconv.Atoi(k)
		if err != nil || n < 1 || n > 1024 {
			return FeatureCache{}, fmt.Errorf("feature cache %q: views=K needs an integer K in 1..1024", s)
		}
		return FeatureCache{Mode: CacheViews, Views: n}, nil
	}
	return FeatureCache{}, fmt.Errorf("feature cache %q: want off, center or views=K", s)
}

// String is the form ParseFeatureCache reads.
func (f FeatureCache) String() string {
	if f.Mode == CacheViews {
		return fmt.Sprintf("%s=%d", CacheViews, f.Views)
	}
	return f.Mode
}

// CacheOptions configure CacheImageFeatures.
type CacheOptions struct {
	// Dir holds the cache files; empty keeps the features in memory only.
	Dir string
	// Mode is CacheCenter or views=K.
	Mode FeatureCache
	// Seed draws the augmented views (views=K only).
	Seed uint64
	// BatchSize is the encoder batch (0: 32).
	BatchSize int
	// Workers decode images in parallel (0: runtime.NumCPU()).
	Workers int
	// Prep is the preprocessing; zero means imageprep.DefaultOptions(resolution).
	Prep imageprep.Options
	// Parallel, when set with a world size > 1, splits the encoding across the
	// processes of a data-parallel group and gathers it (same rows as one
	// process); only rank 0 writes the cache file.
	Parallel Gatherer
}

// CacheStats describe how a feature set was obtained.
type CacheStats struct {
	Path          string  `json:"path,omitempty"`
	Images        int     `json:"images"` // distinct image contents
	Hits          int     `json:"hits"`   // found in the cache file
	Misses        int     `json:"misses"` // encoded now
	Rebuilt       string  `json:"rebuilt,omitempty"`
	Note          string  `json:"note,omitempty"`
	HashSeconds   float64 `json:"hash_seconds"`
	EncodeSeconds float64 `json:"encode_seconds"`
}

// CachedFeatures are L2-normalised image features of a list of samples.
type CachedFeatures struct {
	Embed int
	Views int
	// Rows holds sample i's view v at row i*Views+v (Embed floats each);
	// rows of failed samples are zero.
	Rows []float32
	// Valid[i] is false when sample i could not be read (listed in Failed).
	Valid  []bool
	Failed loader.ImageErrors
	Stats  CacheStats
}

// Row returns sample i's view v.
func (c *CachedFeatures) Row(i, v int) []float32 {
	o := (i*c.Views + v) * c.Embed
	return c.Rows[o : o+c.Embed]
}

// Cache file layout (little endian):
//
//	magic [8]byte, version uint32, key [32]byte, n uint64, embed uint32,
//	views uint32, n×[32]byte image hashes, n×views×embed float32,
//	crc32c uint32 of everything before.
const (
	cacheMagic   = "CAGQFEAT"
	cacheVersion = 1
	cacheHeader  = 8 + 4 + 32 + 8 + 4 + 4
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// featureSpec is everything a cached feature depends on; its hash is the
// file's key.
type featureSpec struct {
	Format       int        `json:"format"`
	CLIP         string     `json:"clip_sha256"`
	DType        string     `json:"dtype"`
	Mode         string     `json:"mode"`
	Views        int        `json:"views"`
	Size         int        `json:"size"`
	Mean         [3]float32 `json:"mean"`
	Std          [3]float32 `json:"std"`
	ConvertFirst bool       `json:"convert_first"`
	CropScale    [2]float64 `json:"crop_scale,omitempty"`
	CropRatio    [2]float64 `json:"crop_ratio,omitempty"`
	Seed         uint64     `json:"seed,omitempty"`
	Embed        int        `json:"embed"`
}

func (s featureSpec) key() [32]byte {
	b, _ := json.Marshal(s)
	return sha256.Sum256(b)
}

// featureFile is a decoded cache file.
type featureFile struct {
	key          [32]byte
	embed, views int
	hashes       [][32]byte
	rows         []float32
}

// errCacheInvalid marks a cache file that exists but must not be used.
var errCacheInvalid = errors.New("feature cache file unusable")

// readFeatureFile loads path in one read and checks size, magic, version,
// key, shape and checksum. A missing file returns an os.ErrNotExist error;
// anything else wrong wraps errCacheInvalid.
func readFeatureFile(path string, key [32]byte, embed, views int) (*featureFile, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s: %s", errCacheInvalid, path, fmt.Sprintf(format, args...))
	}
	if len(b) < cacheHeader+4 {
		return nil, bad("%d bytes, shorter than the header", len(b))
	}
	if string(b[:8]) != cacheMagic {
		return nil, bad("bad magic")
	}
	le := binary.LittleEndian
	if v := le.Uint32(b[8:]); v != cacheVersion {
		return nil, bad("version %d, want %d", v, cacheVersion)
	}
	if !bytes.Equal(b[12:44], key[:]) {
		return nil, bad("key mismatch (other CLIP weights or transform)")
	}
	n := le.Uint64(b[44:])
	e, v := int(le.Uint32(b[52:])), int(le.Uint32(b[56:]))
	if e != embed || v != views {
		return nil, bad("shape embed=%d views=%d, want %d and %d", e, v, embed, views)
	}
	per := uint64(32 + 4*e*v)
	if n > uint64(len(b))/per || uint64(len(b)) != cacheHeader+n*per+4 {
		return nil, bad("size %d does not match %d images (truncated or padded)", len(b), n)
	}
	body := b[:len(b)-4]
	if got, want := crc32.Checksum(body, castagnoli), le.Uint32(b[len(b)-4:]); got != want {
		return nil, bad("checksum %08x, want %08x (corrupt)", got, want)
	}
	f := &featureFile{key: key, embed: e, views: v, hashes: make([][32]byte, n), rows: make([]float32, int(n)*e*v)}
	off := cacheHeader
	for i := range f.hashes {
		copy(f.hashes[i][:], b[off:off+32])
		off += 32
	}
	for i := range f.rows {
		f.rows[i] = math.Float32frombits(le.Uint32(b[off:]))
		off += 4
	}
	return f, nil
}

// writeFeatureFile writes f atomically (temporary file, fsync, rename), so
// a reader sees either the old file or the complete new one.
func writeFeatureFile(path string, f *featureFile) error {
	n := len(f.hashes)
	b := make([]byte, 0, cacheHeader+n*(32+4*f.embed*f.views)+4)
	le := binary.LittleEndian
	b = append(b, cacheMagic...)
	b = le.AppendUint32(b, cacheVersion)
	b = append(b, f.key[:]...)
	b = le.AppendUint64(b, uint64(n))
	b = le.AppendUint32(b, uint32(f.embed))
	b = le.AppendUint32(b, uint32(f.views))
	for _, h := range f.hashes {
		b = append(b, h[:]...)
	}
	for _, x := range f.rows {
		b = le.AppendUint32(b, math.Float32bits(x))
	}
	b = le.AppendUint32(b, crc32.Checksum(b, castagnoli))
	return train.WriteFileAtomic(path, b)
}

// weightsHashFile is the sidecar in the cache directory remembering the
// SHA-256 of weight files by path, size and modification time, so large
// CLIP files are hashed once.
const weightsHashFile = "clip-weights-sha256.json"

type weightsHashEntry struct {
	Size    int64  `json:"size"`
	MTimeNs int64  `json:"mtime_ns"`
	SHA256  string `json:"sha256"`
}

var weightsHashMu sync.Mutex

// WeightsSHA256 returns the SHA-256 (hex) of the file at path, reusing the
// value recorded in cacheDir's sidecar while the file's size and mtime are
// unchanged.
func WeightsSHA256(cacheDir, path string) (string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", err
	}
	st, err := os.Stat(abs)
	if err != nil {
		return "", fmt.Errorf("hash CLIP weights: %w", err)
	}
	weightsHashMu.Lock()
	defer weightsHashMu.Unlock()
	side := filepath.Join(cacheDir, weightsHashFile)
	known := map[string]weightsHashEntry{}
	if b, err := os.ReadFile(side); err == nil {
		_ = json.Unmarshal(b, &known) // an unreadable sidecar only costs a re-hash
	}
	if e, ok := known[abs]; ok && e.Size == st.Size() && e.MTimeNs == st.ModTime().UnixNano() && len(e.SHA256) == 64 {
		return e.SHA256, nil
	}
	sum, err := fileSHA256(abs)
	if err != nil {
		return "", fmt.Errorf("hash CLIP weights: %w", err)
	}
	h := hex.EncodeToString(sum[:])
	known[abs] = weightsHashEntry{Size: st.Size(), MTimeNs: st.ModTime().UnixNano(), SHA256: h}
	if b, err := json.MarshalIndent(known, "", " "); err == nil {
		if err := train.WriteFileAtomic(side, b); err != nil {
			return "", err
		}
	}
	return h, nil
}

func fileSHA256(path string) ([32]byte, error) {
	// Streamed: a CLIP weights file is hundreds of MB.
	f, err := regularfile.Open(path)
	if err != nil {
		return [32]byte{}, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return [32]byte{}, fmt.Errorf("%s: %w", path, err)
	}
	var sum [32]byte
	h.Sum(sum[:0])
	return sum, nil
}

// hashImages returns the SHA-256 of every sample's file, in parallel.
func hashImages(ctx context.Context, samples []data.Sample, workers int) ([][32]byte, []error, error) {
	hashes := make([][32]byte, len(samples))
	errs := make([]error, len(samples))
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(workers, max(len(samples), 1)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= len(samples) {
					return
				}
				hashes[i], errs[i] = fileSHA256(samples[i].Path)
			}
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	return hashes, errs, nil
}

// viewRNG draws augmented view v of the image with content hash h: a pure
// function of (seed, view, content), independent of datasets and order.
func viewRNG(seed uint64, view int, h [32]byte) *rand.Rand {
	le := binary.LittleEndian
	return rand.New(rand.NewPCG(loader.Mix64(seed^loader.Mix64(uint64(view))), le.Uint64(h[:8])^loader.Mix64(le.Uint64(h[8:16]))))
}

// cacheFileName names a cache file after its key and mode.
func cacheFileName(spec featureSpec, key [32]byte) string {
	label := spec.Mode
	if spec.Mode == CacheViews {
		label = fmt.Sprintf("views%d", spec.Views)
	}
	return fmt.Sprintf("features-%s-r%d-%x.bin", label, spec.Size, key[:10])
}

// CacheImageFeatures returns the L2-normalised image features (m.ImageFeatures
// in inference mode) of samples under opts.Mode. With opts.Dir set, features
// live in a file keyed by the CLIP weights' SHA-256, the transform and each
// image's content hash: present images are read from it, missing ones are
// encoded and the file is rewritten atomically; a corrupt, truncated or
// mismatching file is detected and rebuilt, never used. Unreadable images
// are reported in Failed, not as an error.
func CacheImageFeatures(ctx context.Context, m *Model, samples []data.Sample, opts CacheOptions) (*CachedFeatures, error) {
	if opts.Mode.Mode != CacheCenter && opts.Mode.Mode != CacheViews {
		return nil, fmt.Errorf("feature cache: mode %q has no cached features", opts.Mode)
	}
	if opts.Mode.Views < 1 {
		return nil, fmt.Errorf("feature cache: %d views", opts.Mode.Views)
	}
	if opts.Workers <= 0 {
		opts.Workers = runtime.NumCPU()
	}
	if opts.BatchSize <= 0 {
		opts.BatchSize = 32
	}
	if opts.Prep.Size == 0 {
		opts.Prep = imageprep.DefaultOptions(m.CLIP.Config.ImageResolution)
	}
	if opts.Prep.Size != m.CLIP.Config.ImageResolution {
		return nil, fmt.Errorf("feature cache: preprocessing size %d, CLIP wants %d", opts.Prep.Size, m.CLIP.Config.ImageResolution)
	}
	views, embed := opts.Mode.Views, m.CLIP.Config.EmbedDim
	out := &CachedFeatures{Embed: embed, Views: views, Rows: make([]float32, len(samples)*views*embed), Valid: make([]bool, len(samples))}

	start := time.Now()
	hashes, herrs, err := hashImages(ctx, samples, opts.Workers)
	if err != nil {
		return nil, fmt.Errorf("feature cache: %w", err)
	}
	out.Stats.HashSeconds = time.Since(start).Seconds()
	first := map[[32]byte]int{} // content → first readable sample
	var order []int             // distinct contents in sample order
	for i := range samples {
		if herrs[i] != nil {
			out.Failed = append(out.Failed, loader.ImageError{Index: i, Name: samples[i].Name, Path: samples[i].Path, Err: herrs[i]})
			continue
		}
		if _, ok := first[hashes[i]]; !ok {
			first[hashes[i]] = i
			order = append(order, i)
		}
	}
	out.Stats.Images = len(order)

	spec := featureSpec{Format: cacheVersion, DType: m.CLIP.DType().String(), Mode: opts.Mode.Mode, Views: views,
		Size: opts.Prep.Size, Mean: opts.Prep.Mean, Std: opts.Prep.Std, ConvertFirst: opts.Prep.ConvertFirst, Embed: embed}
	if opts.Mode.Mode == CacheViews {
		spec.CropScale, spec.CropRatio, spec.Seed = opts.Prep.CropScale, opts.Prep.CropRatio, opts.Seed
		if spec.CropScale == [2]float64{} {
			spec.CropScale = imageprep.DefaultCropScale
		}
		if spec.CropRatio == [2]float64{} {
			spec.CropRatio = imageprep.DefaultCropRatio
		}
	}
	var file *featureFile
	have := map[[32]byte]int{} // content → row block in file
	path := ""
	if opts.Dir != "" {
		if m.CLIP.Path() == "" {
			out.Stats.Note = "CLIP was not loaded from a file: features kept in memory only"
		} else {
			if spec.CLIP, err = WeightsSHA256(opts.Dir, m.CLIP.Path()); err != nil {
				return nil, fmt.Errorf("feature cache: %w", err)
			}
			key := spec.key()
			path = filepath.Join(opts.Dir, cacheFileName(spec, key))
			out.Stats.Path = path
			file, err = readFeatureFile(path, key, embed, views)
			switch {
			case err == nil:
				for i, h := range file.hashes {
					have[h] = i
				}
			case errors.Is(err, os.ErrNotExist):
			case errors.Is(err, errCacheInvalid):
				out.Stats.Rebuilt = err.Error()
			default:
				return nil, fmt.Errorf("feature cache: %w", err)
			}
			if file == nil {
				file = &featureFile{key: key, embed: embed, views: views}
			}
		}
	}

	// Encode the contents the file lacks, image-major, views minor.
	var miss []int
	for _, i := range order {
		if _, ok := have[hashes[i]]; !ok {
			miss = append(miss, i)
		}
	}
	out.Stats.Hits, out.Stats.Misses = len(order)-len(miss), len(miss)
	if err := agree(opts.Parallel, "the features to encode (count, hash)", missKey(miss, hashes)...); err != nil {
		return nil, fmt.Errorf("feature cache: %w", err)
	}
	newRows := map[[32]byte][]float32{}
	if len(miss) > 0 {
		start := time.Now()
		rows, failed, err := encodeMissing(ctx, m, samples, miss, hashes, spec, opts)
		if err != nil {
			return nil, err
		}
		out.Stats.EncodeSeconds = time.Since(start).Seconds()
		out.Failed = append(out.Failed, failed...)
		bad := map[int]bool{}
		for _, f := range failed {
			bad[f.Index] = true
		}
		for j, i := range miss {
			if !bad[i] {
				newRows[hashes[i]] = rows[j*views*embed : (j+1)*views*embed]
			}
		}
	}
	if file != nil && (len(newRows) > 0 || out.Stats.Rebuilt != "") && isMainRank(opts.Parallel) {
		for _, i := range miss { // sample order keeps the file deterministic
			if r, ok := newRows[hashes[i]]; ok {
				file.hashes = append(file.hashes, hashes[i])
				file.rows = append(file.rows, r...)
			}
		}
		if err := writeFeatureFile(path, file); err != nil {
			return nil, fmt.Errorf("feature cache: %w", err)
		}
	}

	block := views * embed
	for i := range samples {
		if herrs[i] != nil {
			continue
		}
		var src []float32
		if r, ok := newRows[hashes[i]]; ok {
			src = r
		} else if k, ok := have[hashes[i]]; ok {
			src = file.rows[k*block : (k+1)*block]
		}
		if src == nil { // its content failed to decode
			if first[hashes[i]] != i {
				rep := samples[first[hashes[i]]].Name
				out.Failed = append(out.Failed, loader.ImageError{Index: i, Name: samples[i].Name, Path: samples[i].Path,
					Err: fmt.Errorf("same content as unreadable %s", rep)})
			}
			continue
		}
		copy(out.Rows[i*block:(i+1)*block], src)
		out.Valid[i] = true
	}
	sortImageErrors(out.Failed)
	return out, nil
}

func sortImageErrors(e loader.ImageErrors) {
	for i := 1; i < len(e); i++ { // insertion sort: short, nearly sorted
		for j := i; j > 0 && e[j].Index < e[j-1].Index; j-- {
			e[j], e[j-1] = e[j-1], e[j]
		}
	}
}

// encodeViews encodes views of samples[miss[j]] and returns rows[j][v][e].
// part, if not nil, restricts it to those job positions (j·views + v): the
// other rows stay zero and only their images' failures are reported.
func encodeViews(ctx context.Context, m *Model, samples []data.Sample, miss []int, hashes [][32]byte, spec featureSpec, opts CacheOptions, part []int) ([]float32, []loader.ImageError, error) {
	views, embed := spec.Views, spec.Embed
	jobs := make([]data.Sample, 0, len(miss)*views)
	for _, i := range miss {
		for range views {
			jobs = append(jobs, samples[i])
		}
	}
	prep := opts.Prep
	lopts := loader.Options{Prep: prep, BatchSize: opts.BatchSize, Workers: opts.Workers}
	if spec.Mode == CacheViews {
		lopts.Transform = func(dst []float32, img *imageprep.Image, job int) error {
			i := miss[job/views]
			return imageprep.RandomTransformInto(dst, img, prep, viewRNG(spec.Seed, job%views, hashes[i]))
		}
	}
	rows := make([]float32, len(jobs)*embed)
	var failed []loader.ImageError
	bad := map[int]bool{} // miss positions with a failed view
	dev := m.CLIP.Device()
	r := int64(prep.Size)
	for b, err := range loader.LoadBatches(ctx, jobs, part, lopts) {
		if err != nil {
			return nil, nil, fmt.Errorf("feature cache: %w", err)
		}
		for _, f := range b.Failed {
			j := f.Index / views
			if !bad[j] { // report each image once
				bad[j] = true
				f.Index = miss[j]
				failed = append(failed, f)
			}
		}
		if b.Len() == 0 {
			continue
		}
		feats, err := encodeImages(m, dev, b.Pixels, b.Len(), r)
		if err != nil {
			return nil, nil, fmt.Errorf("feature cache: %w", err)
		}
		for k, job := range b.Indices {
			copy(rows[job*embed:(job+1)*embed], feats[k*embed:(k+1)*embed])
		}
	}
	return rows, failed, nil
}

// encodeImages runs m.ImageFeatures on n preprocessed images in inference mode.
func encodeImages(m *Model, dev torch.Device, px []float32, n int, r int64) ([]float32, error) {
	s := torch.NewScope().WithGrad(torch.InferenceMode).WithDevice(dev)
	defer s.Close()
	f := m.ImageFeatures(s, s.FromFloat32On(dev, px, int64(n), 3, r, r))
	if err := s.Err(); err != nil {
		return nil, fmt.Errorf("encode %d images: %w", n, err)
	}
	return f.Float32s()
}
