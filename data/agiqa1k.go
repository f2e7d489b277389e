package data

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
)

// AGIQA1KTable is the score table's file name in the AGIQA-1K release.
const AGIQA1KTable = "AIGC_all.csv"

// AGIQA-1K image names are model_main_second_place_style.jpg; the
// database's README gives the words behind each index. The prompt combines
// all four words; place and style are modifiers of one subject.
var (
	agiqa1kMain = []string{"bird", "cat", "dog", "batman", "snoppy", "teddy bear",
		"kid", "man", "woman", "alien", "demon", "witch"}
	agiqa1kSecond = []string{"driving aircraft", "driving bike", "driving car",
		"having hamburger", "having icecream", "having pizza",
		"playing baseball", "playing football", "playing yoga",
		"using CD", "using laptop", "using phone",
		"wearing coat", "wearing hat", "wearing shirt"}
)

// LoadAGIQA1K reads AGIQA-1K's AIGC_all.csv (columns Image, Score) with
// images under root; csvPath "" means root/AIGC_all.csv.
//
// Group is the prompt's subject, "<main object> <second object>" (e.g.
// "alien playing baseball" for deepai_9_6_0_1.jpg), decoded from the name.
// It deliberately ignores the place and style words: splitting on the
// subject keeps every prompt, and all its place/style variants, on one side,
// and it stays well defined for the one released name whose style field is
// empty (dreamStudio_8_9_1_.jpg). That gives 180 groups of 4 or 8 images.
func LoadAGIQA1K(root, csvPath string) (*Dataset, error) {
	if csvPath == "" {
		csvPath = filepath.Join(root, AGIQA1KTable)
	}
	t, err := readTableFile(csvPath)
	if err != nil {
		return nil, fmt.Errorf("agiqa1k: %w", err)
	}
	cols, err := t.require("image|name", "score|mos")
	if err != nil {
		return nil, fmt.Errorf("agiqa1k: %w", err)
	}
	ds := &Dataset{Name: "agiqa1k", Root: root}
	seen := dupChecker{}
	for i := range t.rows {
		name, err := t.name(i, cols[0])
		if err != nil {
			return nil, fmt.Errorf("agiqa1k: %w", err)
		}
		if err := seen.check(t, i, name); err != nil {
			return nil, fmt.Errorf("agiqa1k: %w", err)
		}
		mos, err := t.float(i, cols[1])
		if err != nil {
			return nil, fmt.Errorf("agiqa1k: %w", err)
		}
		group, err := AGIQA1KSubject(name)
		if err != nil {
			return nil, fmt.Errorf("agiqa1k: %s:%d: %w", t.src, t.lines[i], err)
		}
		ds.Samples = append(ds.Samples, newSample(root, name, mos, group))
	}
	return ds, nil
}

// AGIQA1KSubject decodes the prompt subject ("<main> <second>") from an
// AGIQA-1K image name such as "deepai_9_6_0_1.jpg".
func AGIQA1KSubject(name string) (string, error) {
	base := strings.TrimSuffix(filepath.Base(name), filepath.Ext(name))
	f := strings.Split(base, "_")
	if len(f) != 5 {
		return "", fmt.Errorf("image name %q: want model_main_second_place_style", name)
	}
	m, err1 := strconv.Atoi(f[1])
	s, err2 := strconv.Atoi(f[2])
	if err1 != nil || err2 != nil || m < 0 || m >= len(agiqa1kMain) || s < 0 || s >= len(agiqa1kSecond) {
		return "", fmt.Errorf("image name %q: object indices out of range (main 0-%d, second 0-%d)",
			name, len(agiqa1kMain)-1, len(agiqa1kSecond)-1)
	}
	return agiqa1kMain[m] + " " + agiqa1kSecond[s], nil
}
