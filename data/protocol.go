package data

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
)

// Source names a dataset to open: a built-in set under Root or a CSV table.
type Source struct {
	Name   string // agiqa3k, agiqa1k, aigciqa2023 or csv (case-insensitive)
	Root   string // image root; csv defaults to TrainCSV's directory
	Table  string // score table of a built-in set ("" = its default file)
	Target string // score column (quality, alignment, authenticity, correspondence)
	// TrainCSV is the csv table to split, or the training side when TestCSV
	// is given; TestCSV is a fixed test table.
	TrainCSV, TestCSV string
}

// SourceNames are the values Source.Name takes.
var SourceNames = []string{"agiqa3k", "agiqa1k", "aigciqa2023", "csv"}

// Open reads src: the whole set, and the fixed test table for csv with
// TestCSV (nil otherwise). An empty set is an error.
func Open(src Source) (all, fixedTest *Dataset, err error) {
	root, table, target := src.Root, src.Table, src.Target
	name := strings.ToLower(src.Name)
	if name != "csv" && root == "" {
		return nil, nil, fmt.Errorf("dataset %s needs its image root directory", name)
	}
	switch name {
	case "agiqa3k":
		all, err = LoadAGIQA3K(root, table, target)
	case "agiqa1k":
		all, err = LoadAGIQA1K(root, table)
	case "aigciqa2023":
		if table == "" {
			f, ferr := AIGCIQA2023MatFile(target)
			if ferr != nil {
				return nil, nil, ferr
			}
			table = filepath.Join(root, f)
		}
		if strings.EqualFold(filepath.Ext(table), ".mat") {
			all, err = LoadAIGCIQA2023Mat(root, table)
		} else {
			all, err = LoadAIGCIQA2023CSV(root, table, target)
		}
	case "csv":
		tr, te := src.TrainCSV, src.TestCSV
		if tr == "" {
			return nil, nil, errors.New("dataset csv needs a training table (and optionally a test table)")
		}
		if root == "" {
			root = filepath.Dir(tr)
		}
		if te != "" {
			return trainTestCSV(root, tr, te)
		}
		all, err = LoadCSV(root, tr)
	default:
		return nil, nil, fmt.Errorf("dataset %q: want %s", src.Name, strings.Join(SourceNames, ", "))
	}
	if err != nil {
		return nil, nil, err
	}
	if all.Len() == 0 {
		return nil, nil, fmt.Errorf("dataset %s is empty", all.Name)
	}
	return all, nil, nil
}

func trainTestCSV(root, tr, te string) (*Dataset, *Dataset, error) {
	train, test, err := LoadTrainTestCSV(root, tr, te)
	if err != nil {
		return nil, nil, err
	}
	if train.Len() == 0 || test.Len() == 0 {
		return nil, nil, fmt.Errorf("empty table: %s has %d rows, %s has %d", tr, train.Len(), te, test.Len())
	}
	return train, test, nil
}

// Evaluation protocols.
const (
	// ProtocolPaper is the official AGIQA-3K split (or a given test table);
	// no validation part.
	ProtocolPaper = "paper"
	// ProtocolPromptDisjoint splits by prompt (no prompt on two sides) and
	// holds out a validation part for choosing the epoch.
	ProtocolPromptDisjoint = "prompt-disjoint"
	// ProtocolRandom splits images at random (prompts leak).
	ProtocolRandom = "random"
)

// ProtocolIPIQAOfficial (declared with the folds) is the official IP-IQA
// cross-validation: Splits of its 10 folds of seed 42 (the first ones), each
// trained on its train part and evaluated on its test part; no validation
// part (the official code chooses the epoch on the test part).

// Protocol is how to partition a dataset.
type Protocol struct {
	Name         string  // ProtocolPaper, ProtocolPromptDisjoint or ProtocolRandom
	Splits       int     // number of partitions (prompt-disjoint, random)
	TestFraction float64 // share of the data in the test part
	ValFraction  float64 // share of the training side held out for validation
	Seed         uint64
}

// Partition is one train/validation/test split of a protocol; Val is nil
// for the paper protocol.
type Partition struct {
	Name             string // "paper", "given", "split0", ...
	Train, Val, Test *Dataset
}

// Plan partitions all per p; fixedTest (a given test table, or nil) is the
// test part of every partition.
func Plan(p Protocol, all, fixedTest *Dataset) ([]Partition, error) {
	k, testFrac, valFrac, seed := p.Splits, p.TestFraction, p.ValFraction, p.Seed
	if k < 1 {
		return nil, fmt.Errorf("splits %d must be at least 1", k)
	}
	switch p.Name {
	case ProtocolPaper:
		if k != 1 {
			return nil, errors.New("protocol paper has one fixed split; splits must be 1")
		}
		if fixedTest != nil {
			return []Partition{{Name: "given", Train: all, Test: fixedTest}}, nil
		}
		if !strings.HasPrefix(all.Name, "agiqa3k") {
			return nil, fmt.Errorf("protocol paper is the official AGIQA-3K split; %s has none (give a test table or use another protocol)", all.Name)
		}
		train, test, err := PaperSplit(all)
		if err != nil {
			return nil, err
		}
		return []Partition{{Name: "paper", Train: train, Test: test}}, nil
	case ProtocolIPIQAOfficial:
		return planIPIQAOfficial(k, all, fixedTest)
	case ProtocolPromptDisjoint, ProtocolRandom:
	default:
		return nil, fmt.Errorf("protocol %q: want prompt-disjoint, paper or random (or %s for IP-IQA)", p.Name, ProtocolIPIQAOfficial)
	}
	if fixedTest != nil {
		if k != 1 {
			return nil, errors.New("with a given test table the test part is fixed; splits must be 1")
		}
		var train, val *Dataset
		if p.Name == ProtocolRandom {
			var err error
			if train, val, err = RandomSplit(all, 1-valFrac, seed); err != nil {
				return nil, err
			}
		} else {
			s, err := GroupSplits(all, 1, 1-valFrac, 0, seed)
			if err != nil {
				return nil, err
			}
			train, val = s[0].Train, s[0].Test
		}
		return []Partition{{Name: "given", Train: train, Val: val, Test: fixedTest}}, nil
	}
	var plans []Partition
	if p.Name == ProtocolRandom {
		for i := range k {
			s := seed + uint64(i)*0x9e3779b9
			rest, test, err := RandomSplit(all, 1-testFrac, s)
			if err != nil {
				return nil, err
			}
			train, val, err := RandomSplit(rest, 1-valFrac, s+1)
			if err != nil {
				return nil, err
			}
			plans = append(plans, Partition{Name: fmt.Sprintf("split%d", i), Train: train, Val: val, Test: test})
		}
		return plans, nil
	}
	splits, err := GroupSplits(all, k, 1-testFrac, valFrac, seed)
	if err != nil {
		return nil, err
	}
	for i, s := range splits {
		plans = append(plans, Partition{Name: fmt.Sprintf("split%d", i), Train: s.Train, Val: s.Val, Test: s.Test})
	}
	return plans, nil
}

// planIPIQAOfficial is the first k official IP-IQA folds (see
// IPIQAOfficialSplits), named fold0, fold1, ...
func planIPIQAOfficial(k int, all, fixedTest *Dataset) ([]Partition, error) {
	if fixedTest != nil {
		return nil, fmt.Errorf("protocol %s has its own test folds; a given test table does not fit it", ProtocolIPIQAOfficial)
	}
	if k > IPIQAOfficialNumFolds {
		return nil, fmt.Errorf("protocol %s has %d folds; splits %d is too many", ProtocolIPIQAOfficial, IPIQAOfficialNumFolds, k)
	}
	splits, err := IPIQAOfficialSplits(all)
	if err != nil {
		return nil, err
	}
	plans := make([]Partition, k)
	for i := range k {
		plans[i] = Partition{Name: fmt.Sprintf("fold%d", i), Train: splits[i].Train, Test: splits[i].Test}
	}
	return plans, nil
}
