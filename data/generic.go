package data

import (
	"fmt"
	"path/filepath"
	"strings"
)

// LoadCSV reads a generic score table: a header with an "image" or "name"
// column and a "mos" column (case-insensitive), plus optionally a "group"
// or "prompt" column used as Group, and a "prompt" column as Prompt; other
// columns are ignored. Images live
// under imageRoot. The dataset is named after the file.
func LoadCSV(imageRoot, csvPath string) (*Dataset, error) {
	t, err := readTableFile(csvPath)
	if err != nil {
		return nil, fmt.Errorf("csv dataset: %w", err)
	}
	cols, err := t.require("image|name", "mos")
	if err != nil {
		return nil, fmt.Errorf("csv dataset: %w", err)
	}
	groupCol, hasGroup := t.col("group", "prompt")
	promptCol, hasPrompt := t.col("prompt")
	stem := strings.TrimSuffix(filepath.Base(csvPath), filepath.Ext(csvPath))
	ds := &Dataset{Name: stem, Root: imageRoot}
	seen := dupChecker{}
	for i := range t.rows {
		name, err := t.name(i, cols[0])
		if err != nil {
			return nil, fmt.Errorf("csv dataset: %w", err)
		}
		if err := seen.check(t, i, name); err != nil {
			return nil, fmt.Errorf("csv dataset: %w", err)
		}
		mos, err := t.float(i, cols[1])
		if err != nil {
			return nil, fmt.Errorf("csv dataset: %w", err)
		}
		group := ""
		if hasGroup {
			group = strings.TrimSpace(t.rows[i][groupCol])
		}
		smp := newSample(imageRoot, name, mos, group)
		if hasPrompt {
			smp.Prompt = t.rows[i][promptCol] // verbatim, as AGIQA-3K's
		}
		ds.Samples = append(ds.Samples, smp)
	}
	return ds, nil
}

// LoadTrainTestCSV reads a train and a test table with LoadCSV, sharing
// imageRoot, and rejects images listed in both (a leak that would inflate
// test scores).
func LoadTrainTestCSV(imageRoot, trainCSV, testCSV string) (train, test *Dataset, err error) {
	if train, err = LoadCSV(imageRoot, trainCSV); err != nil {
		return nil, nil, err
	}
	if test, err = LoadCSV(imageRoot, testCSV); err != nil {
		return nil, nil, err
	}
	if err := checkDisjointNames(train, test); err != nil {
		return nil, nil, err
	}
	return train, test, nil
}

// checkDisjointNames errors, listing a few, when images appear in both.
func checkDisjointNames(a, b *Dataset) error {
	in := make(map[string]bool, len(a.Samples))
	for _, s := range a.Samples {
		in[s.Name] = true
	}
	var both []string
	for _, s := range b.Samples {
		if in[s.Name] {
			both = append(both, s.Name)
		}
	}
	if len(both) == 0 {
		return nil
	}
	shown := both[:min(len(both), maxListed)]
	msg := fmt.Sprintf("%d images are in both %s and %s: %s", len(both), a.Name, b.Name, strings.Join(shown, ", "))
	if len(both) > len(shown) {
		msg += fmt.Sprintf(" … and %d more", len(both)-len(shown))
	}
	return fmt.Errorf("train/test overlap: %s", msg)
}
