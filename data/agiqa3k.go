package data

import (
	"embed"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
)

// Score targets. AGIQA-3K rates quality and alignment; AIGCIQA2023 rates
// quality, authenticity and correspondence.
const (
	TargetQuality        = "quality"
	TargetAlignment      = "alignment"
	TargetAuthenticity   = "authenticity"
	TargetCorrespondence = "correspondence"
)

// AGIQA3KTable is the score table's file name in the AGIQA-3K release.
const AGIQA3KTable = "data.csv"

// LoadAGIQA3K reads AGIQA-3K's data.csv (columns name, prompt, adj1, adj2,
// style, mos_quality, std_quality, mos_align, std_align) with images under
// root. csvPath "" means root/data.csv. target is TargetQuality
// (mos_quality) or TargetAlignment (mos_align, also accepted as "align").
// Group and Prompt are the prompt text; Ratings holds both MOS columns
// (those the table has), so a two-output model is judged on each.
func LoadAGIQA3K(root, csvPath, target string) (*Dataset, error) {
	var col string
	switch strings.ToLower(target) {
	case TargetQuality:
		col, target = "mos_quality", TargetQuality
	case TargetAlignment, "align":
		col, target = "mos_align", TargetAlignment
	default:
		return nil, fmt.Errorf("agiqa3k: unknown target %q (want %q or %q)", target, TargetQuality, TargetAlignment)
	}
	if csvPath == "" {
		csvPath = filepath.Join(root, AGIQA3KTable)
	}
	t, err := readTableFile(csvPath)
	if err != nil {
		return nil, fmt.Errorf("agiqa3k: %w", err)
	}
	cols, err := t.require("name", "prompt", col)
	if err != nil {
		return nil, fmt.Errorf("agiqa3k: %w", err)
	}
	ratingCols := map[string]int{}
	for tgt, name := range map[string]string{TargetQuality: "mos_quality", TargetAlignment: "mos_align"} {
		if k, ok := t.col(name); ok {
			ratingCols[tgt] = k
		}
	}
	ds := &Dataset{Name: "agiqa3k-" + target, Root: root}
	seen := dupChecker{}
	for i := range t.rows {
		name, err := t.name(i, cols[0])
		if err != nil {
			return nil, fmt.Errorf("agiqa3k: %w", err)
		}
		if err := seen.check(t, i, name); err != nil {
			return nil, fmt.Errorf("agiqa3k: %w", err)
		}
		mos, err := t.float(i, cols[2])
		if err != nil {
			return nil, fmt.Errorf("agiqa3k: %w", err)
		}
		prompt := strings.TrimSpace(t.rows[i][cols[1]])
		smp := newSample(root, name, mos, prompt)
		smp.Prompt = t.rows[i][cols[1]] // verbatim: the tokenizer cleans whitespace as the official code's does
		smp.Ratings = make(map[string]float64, len(ratingCols))
		for tgt, k := range ratingCols {
			if smp.Ratings[tgt], err = t.float(i, k); err != nil {
				return nil, fmt.Errorf("agiqa3k: %w", err)
			}
		}
		ds.Samples = append(ds.Samples, smp)
	}
	return ds, nil
}

// The CLIP-AGIQA paper's AGIQA-3K train/test lists (name, mos_quality),
// shipped with the AGIQA-3K MIT license.
//
//go:embed splits/agiqa3k/split_paper_train.csv splits/agiqa3k/split_paper_test.csv splits/agiqa3k/LICENSE
var paperSplits embed.FS

// PaperSplitNames returns the image names of the embedded AGIQA-3K paper
// split (2385 train, 597 test), in file order.
func PaperSplitNames() (train, test []string, err error) {
	if train, err = embeddedNames("splits/agiqa3k/split_paper_train.csv"); err != nil {
		return nil, nil, err
	}
	if test, err = embeddedNames("splits/agiqa3k/split_paper_test.csv"); err != nil {
		return nil, nil, err
	}
	return train, test, nil
}

func embeddedNames(path string) ([]string, error) {
	raw, err := paperSplits.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("embedded split: %w", err)
	}
	t, err := parseTable("embedded "+path, raw)
	if err != nil {
		return nil, err
	}
	cols, err := t.require("name")
	if err != nil {
		return nil, err
	}
	names := make([]string, len(t.rows))
	for i := range t.rows {
		if names[i], err = t.name(i, cols[0]); err != nil {
			return nil, err
		}
	}
	return names, nil
}

// PaperSplit splits an AGIQA-3K dataset (either target) into the CLIP-AGIQA
// paper's train and test parts, in the order of the split files. It fails,
// listing them, if names of the split are absent from ds. Note that this
// split is random per image, not prompt-disjoint.
func PaperSplit(ds *Dataset) (train, test *Dataset, err error) {
	trainNames, testNames, err := PaperSplitNames()
	if err != nil {
		return nil, nil, fmt.Errorf("paper split: %w", err)
	}
	if train, err = SelectNames(ds, "train", trainNames); err != nil {
		return nil, nil, fmt.Errorf("paper split: %w", err)
	}
	if test, err = SelectNames(ds, "test", testNames); err != nil {
		return nil, nil, fmt.Errorf("paper split: %w", err)
	}
	return train, test, nil
}

// SelectNames returns the samples of ds named in names, in that order, as a
// dataset called ds.Name+"/"+part. Names absent from ds are an error that
// lists the first few and counts them all; repeated names are an error too.
func SelectNames(ds *Dataset, part string, names []string) (*Dataset, error) {
	pos := make(map[string]int, len(ds.Samples))
	for i, s := range ds.Samples {
		pos[s.Name] = i
	}
	idx := make([]int, 0, len(names))
	used := make(map[string]bool, len(names))
	var absent []string
	for _, n := range names {
		if used[n] {
			return nil, fmt.Errorf("%s: name %q listed twice", part, n)
		}
		used[n] = true
		k, ok := pos[n]
		if !ok {
			absent = append(absent, n)
			continue
		}
		idx = append(idx, k)
	}
	if len(absent) > 0 {
		shown := absent[:min(len(absent), maxListed)]
		msg := fmt.Sprintf("%s: %d of %d names absent from %s: %s", part, len(absent), len(names), ds.Name, strings.Join(shown, ", "))
		if len(absent) > len(shown) {
			msg += fmt.Sprintf(" … and %d more", len(absent)-len(shown))
		}
		return nil, errors.New(msg)
	}
	return ds.Subset(part, idx), nil
}
