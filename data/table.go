package data

import (
	"bytes"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/clipagiqa/clipagiqa/internal/regularfile"
)

// table is a parsed CSV file with a header, keeping each row's line number
// for error messages.
type table struct {
	src    string         // file name used in messages
	cols   map[string]int // lower-cased, trimmed header -> index
	header []string
	rows   [][]string
	lines  []int
}

// readTableFile reads a CSV file from disk.
func readTableFile(path string) (*table, error) {
	raw, err := regularfile.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read score table: %w", err)
	}
	return parseTable(path, raw)
}

// parseTable parses CSV bytes. Header names are matched case-insensitively;
// a UTF-8 byte order mark is ignored; every row must have as many fields as
// the header.
func parseTable(src string, raw []byte) (*table, error) {
	raw = bytes.TrimPrefix(raw, []byte("\xef\xbb\xbf"))
	r := csv.NewReader(bytes.NewReader(raw))
	r.FieldsPerRecord = 0
	header, err := r.Read()
	if errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%s: empty file (no header line)", src)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", src, err)
	}
	t := &table{src: src, cols: make(map[string]int, len(header))}
	for i, h := range header {
		key := strings.ToLower(strings.TrimSpace(h))
		t.header = append(t.header, key)
		if key == "" {
			continue // e.g. a pandas index column
		}
		if _, dup := t.cols[key]; dup {
			return nil, fmt.Errorf("%s:1: column %q appears twice in the header", src, h)
		}
		t.cols[key] = i
	}
	for {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", src, err)
		}
		line, _ := r.FieldPos(0)
		t.rows = append(t.rows, rec)
		t.lines = append(t.lines, line)
	}
	if len(t.rows) == 0 {
		return nil, fmt.Errorf("%s: no data rows after the header", src)
	}
	return t, nil
}

// col returns the index of the first present column among names.
func (t *table) col(names ...string) (int, bool) {
	for _, n := range names {
		if i, ok := t.cols[n]; ok {
			return i, true
		}
	}
	return 0, false
}

// require returns the indices of the named columns, or an error naming all
// absent ones and the header actually found. Each entry may list
// alternatives separated by "|".
func (t *table) require(names ...string) ([]int, error) {
	idx := make([]int, len(names))
	var missing []string
	for i, n := range names {
		alts := strings.Split(n, "|")
		k, ok := t.col(alts...)
		if !ok {
			missing = append(missing, strings.Join(alts, " or "))
			continue
		}
		idx[i] = k
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("%s: missing column(s) %s (header has: %s)",
			t.src, strings.Join(missing, ", "), strings.Join(t.header, ", "))
	}
	return idx, nil
}

// MaxAbsScore bounds the scores a table may hold: MOS scales are 0-5 or
// 0-100, and squares of larger values overflow the metrics.
const MaxAbsScore = 1e6

// float parses field col of row i as a finite number.
func (t *table) float(i, col int) (float64, error) {
	s := strings.TrimSpace(t.rows[i][col])
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, fmt.Errorf("%s:%d: %s %q is not a number", t.src, t.lines[i], t.header[col], s)
	}
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, fmt.Errorf("%s:%d: %s %q is not a finite number", t.src, t.lines[i], t.header[col], s)
	}
	if math.Abs(v) > MaxAbsScore {
		return 0, fmt.Errorf("%s:%d: %s %q is outside ±%g (not an opinion score; metrics would overflow)", t.src, t.lines[i], t.header[col], s, MaxAbsScore)
	}
	return v, nil
}

// name returns field col of row i as an image name, which must be
// non-empty.
func (t *table) name(i, col int) (string, error) {
	s := strings.TrimSpace(t.rows[i][col])
	if s == "" {
		return "", fmt.Errorf("%s:%d: empty %s", t.src, t.lines[i], t.header[col])
	}
	if !filepath.IsLocal(filepath.FromSlash(s)) {
		return "", fmt.Errorf("%s:%d: %s %q is outside the image root (absolute, or climbing out with ..): refused", t.src, t.lines[i], t.header[col], s)
	}
	return s, nil
}

// dupChecker reports repeated image names with both line numbers.
type dupChecker map[string]int

func (d dupChecker) check(t *table, i int, name string) error {
	if first, ok := d[name]; ok {
		return fmt.Errorf("%s:%d: duplicate image name %q (first on line %d)", t.src, t.lines[i], name, first)
	}
	d[name] = t.lines[i]
	return nil
}
