package data

import (
	_ "embed"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
)

// ProtocolIPIQAOfficial names the official IP-IQA cross-validation folds.
const ProtocolIPIQAOfficial = "ipiqa-official"

// The official IP-IQA scripts run 10 folds after seed_everything(42).
const (
	IPIQAOfficialSeed     = 42
	IPIQAOfficialNumFolds = 10
)

// agiqa3kPrompts is the number of AGIQA-3K prompts; the official split
// trains on the prompts among the first 240 of a permutation of them.
const (
	agiqa3kPrompts      = 300
	agiqa3kTrainPrompts = 240
)

// ipiqaCodeOrder lists the AGIQA-1K prompt codes in the order the official
// split meets them in AIGC_MOS_Zscore.xlsx (testdata/gen/ipiqa_code_order.py).
// Embedding the order makes the folds independent of the loaded table's
// row order (AIGC_all.csv is ordered differently).
//
//go:embed splits/agiqa1k/ipiqa_code_order.txt
var ipiqaCodeOrder string

// IPIQAOfficialSplits reproduces the official IP-IQA 10-fold splits
// (Coobiw/IP-IQA, train_agiqa3k.py / train_agiqa1k.py, --num_cv 10 after
// seed_everything(42)) for an AGIQA-3K or AGIQA-1K dataset, chosen by
// ds.Name. The official code trains on Train and validates and tests on the
// same held-out part, so Test is that part and Val is empty. Parts keep the
// dataset's sample order.
//
// AGIQA-3K: fold k draws the k-th numpy RandomState(42).permutation(300); an
// image trains when its prompt index (the name's last "_" field) is among
// the first 240 entries. AGIQA-1K: codes ("main_second", with the
// dreamStudio renumbering) are visited in the official table order and each
// new code trains when Python's random.random() (seeded 42) is below 0.8;
// the stream continues across folds.
func IPIQAOfficialSplits(ds *Dataset) ([]Split, error) {
	var testOf func(fold int) (func(name string) (bool, error), error)
	switch base := strings.SplitN(ds.Name, "/", 2)[0]; {
	case strings.HasPrefix(base, "agiqa3k"):
		testOf = agiqa3kOfficialFolds()
	case base == "agiqa1k":
		testOf = agiqa1kOfficialFolds()
	default:
		return nil, fmt.Errorf("%s splits of %s: only AGIQA-3K and AGIQA-1K have official folds", ProtocolIPIQAOfficial, ds.Name)
	}
	splits := make([]Split, 0, IPIQAOfficialNumFolds)
	for k := 0; k < IPIQAOfficialNumFolds; k++ {
		isTest, err := testOf(k)
		if err != nil {
			return nil, fmt.Errorf("%s splits of %s: %w", ProtocolIPIQAOfficial, ds.Name, err)
		}
		var train, test []int
		for i, s := range ds.Samples {
			t, err := isTest(s.Name)
			if err != nil {
				return nil, fmt.Errorf("%s splits of %s: %w", ProtocolIPIQAOfficial, ds.Name, err)
			}
			if t {
				test = append(test, i)
			} else {
				train = append(train, i)
			}
		}
		if len(train) == 0 || len(test) == 0 {
			return nil, fmt.Errorf("%s splits of %s: fold %d leaves a part empty (%d train, %d test)",
				ProtocolIPIQAOfficial, ds.Name, k, len(train), len(test))
		}
		tag := fmt.Sprintf("fold%d/", k)
		splits = append(splits, Split{
			Train: ds.Subset(tag+"train", train),
			Val:   ds.Subset(tag+"val", nil),
			Test:  ds.Subset(tag+"test", test),
		})
	}
	return splits, nil
}

// agiqa3kOfficialFolds returns, per fold (called for 0, 1, ... in order),
// the official AGIQA-3K test membership by image name.
func agiqa3kOfficialFolds() func(int) (func(string) (bool, error), error) {
	var r mt19937
	r.seedInt(IPIQAOfficialSeed)
	return func(int) (func(string) (bool, error), error) {
		perm := r.npPermutation(agiqa3kPrompts)
		train := make([]bool, agiqa3kPrompts)
		for _, p := range perm[:agiqa3kTrainPrompts] {
			train[p] = true
		}
		return func(name string) (bool, error) {
			p, err := AGIQA3KPromptIndex(name)
			if err != nil {
				return false, err
			}
			return !train[p], nil
		}, nil
	}
}

// AGIQA3KPromptIndex is the prompt index (0-299) the official IP-IQA split
// reads from an AGIQA-3K image name: its last "_" field, e.g. 12 for
// "midjourney_lowstep_012.jpg".
func AGIQA3KPromptIndex(name string) (int, error) {
	base := strings.TrimSuffix(filepath.Base(name), filepath.Ext(name))
	f := strings.Split(base, "_")
	p, err := strconv.Atoi(f[len(f)-1])
	if err != nil || p < 0 || p >= agiqa3kPrompts {
		return 0, fmt.Errorf("image name %q: want a prompt index 0-%d as the last _ field", name, agiqa3kPrompts-1)
	}
	return p, nil
}

// agiqa1kOfficialFolds returns, per fold (called for 0, 1, ... in order),
// the official AGIQA-1K test membership by image name.
func agiqa1kOfficialFolds() func(int) (func(string) (bool, error), error) {
	var r mt19937
	r.pySeed(IPIQAOfficialSeed)
	codes := strings.Fields(ipiqaCodeOrder)
	return func(int) (func(string) (bool, error), error) {
		test := make(map[string]bool, len(codes))
		for _, c := range codes {
			test[c] = !(r.pyRandom() < 0.8)
		}
		return func(name string) (bool, error) {
			c, err := AGIQA1KPromptCode(name)
			if err != nil {
				return false, err
			}
			t, ok := test[c]
			if !ok {
				return false, fmt.Errorf("image name %q: prompt code %s is not in the official AIGC_MOS_Zscore table", name, c)
			}
			return t, nil
		}, nil
	}
}

// AGIQA1KPromptCode is the prompt code the official IP-IQA split reads from
// an AGIQA-1K image name: "main_second", where dreamStudio images shift
// main indices above 5 up by one and second indices up by five (e.g.
// "dreamStudio_6_2_0_1.jpg" -> "7_7").
func AGIQA1KPromptCode(name string) (string, error) {
	base := strings.TrimSuffix(filepath.Base(name), filepath.Ext(name))
	f := strings.Split(base, "_")
	if len(f) < 3 {
		return "", fmt.Errorf("image name %q: want model_main_second_...", name)
	}
	c1, err1 := strconv.Atoi(f[1])
	c2, err2 := strconv.Atoi(f[2])
	if err1 != nil || err2 != nil {
		return "", fmt.Errorf("image name %q: main and second fields must be integers", name)
	}
	if strings.HasPrefix(base, "dream") {
		if c1 > 5 {
			c1++
		}
		c2 += 5
	}
	return strconv.Itoa(c1) + "_" + strconv.Itoa(c2), nil
}

// IPIQAOfficialFold returns fold k (0-9) of IPIQAOfficialSplits. Folds draw
// from one generator in turn, so fold k needs folds 0..k-1 drawn first;
// this computes them all.
func IPIQAOfficialFold(ds *Dataset, k int) (Split, error) {
	if k < 0 || k >= IPIQAOfficialNumFolds {
		return Split{}, fmt.Errorf("%s fold %d of %s: want a fold index 0-%d", ProtocolIPIQAOfficial, k, ds.Name, IPIQAOfficialNumFolds-1)
	}
	splits, err := IPIQAOfficialSplits(ds)
	if err != nil {
		return Split{}, err
	}
	return splits[k], nil
}
