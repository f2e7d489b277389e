package data

import (
	"fmt"
	"math"
	"sort"
)

// rng is SplitMix64, written out here so that splits depend only on the
// seed and never on the Go version's math/rand internals.
type rng struct{ state uint64 }

func (r *rng) next() uint64 {
	r.state += 0x9e3779b97f4a7c15
	z := r.state
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// intn returns a uniform integer in [0, n) by rejection, without modulo
// bias.
func (r *rng) intn(n int) int {
	bound := uint64(n)
	limit := math.MaxUint64 - math.MaxUint64%bound
	for {
		v := r.next()
		if v < limit {
			return int(v % bound)
		}
	}
}

// shuffle is a Fisher–Yates shuffle of x.
func (r *rng) shuffle(x []int) {
	for i := len(x) - 1; i > 0; i-- {
		j := r.intn(i + 1)
		x[i], x[j] = x[j], x[i]
	}
}

// RandomSplit shuffles ds with seed and puts round(trainFrac·n) samples in
// train and the rest in test, each kept in the original sample order. It
// ignores groups; see GroupSplits for prompt-disjoint splits.
func RandomSplit(ds *Dataset, trainFrac float64, seed uint64) (train, test *Dataset, err error) {
	n := len(ds.Samples)
	if !(trainFrac > 0 && trainFrac < 1) {
		return nil, nil, fmt.Errorf("random split of %s: train fraction %v not in (0, 1)", ds.Name, trainFrac)
	}
	nTrain := int(math.Round(trainFrac * float64(n)))
	if nTrain < 1 || nTrain > n-1 {
		return nil, nil, fmt.Errorf("random split of %s: %d samples cannot give a non-empty train and test side at fraction %v", ds.Name, n, trainFrac)
	}
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	r := &rng{state: seed}
	r.shuffle(idx)
	tr, te := idx[:nTrain], idx[nTrain:]
	sort.Ints(tr)
	sort.Ints(te)
	return ds.Subset("train", tr), ds.Subset("test", te), nil
}

// Split is one train/validation/test partition. Val is empty (never nil)
// when no validation part was requested.
type Split struct {
	Train, Val, Test *Dataset
}

// group is the sample indices sharing one Group value.
type group struct{ idx []int }

// groupsOf collects groups in order of first appearance; samples with an
// empty Group each form their own.
func groupsOf(ds *Dataset) []group {
	var gs []group
	pos := map[string]int{}
	for i, s := range ds.Samples {
		if s.Group == "" {
			gs = append(gs, group{idx: []int{i}})
			continue
		}
		k, ok := pos[s.Group]
		if !ok {
			k = len(gs)
			pos[s.Group] = k
			gs = append(gs, group{})
		}
		gs[k].idx = append(gs[k].idx, i)
	}
	return gs
}

// pick walks groups in the given order and takes a group whenever doing so
// brings the taken count closer to target (ties favour taking, so the
// first group is taken when target > 0). It returns the taken and left
// group positions.
func pick(gs []group, order []int, target int) (taken, left []int, count int) {
	for _, g := range order {
		size := len(gs[g].idx)
		if count < target && abs(count+size-target) <= abs(count-target) {
			taken = append(taken, g)
			count += size
			continue
		}
		left = append(left, g)
	}
	return taken, left, count
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}

// indices flattens groups into sorted sample indices.
func indices(gs []group, which []int) []int {
	var out []int
	for _, g := range which {
		out = append(out, gs[g].idx...)
	}
	sort.Ints(out)
	return out
}

// GroupSplits makes k random splits in which no Group (prompt) has samples
// on two sides. Each split puts about (1-trainFrac) of the samples in test,
// then carves about valFrac of the train side (not of the whole set) into
// validation, again by whole groups; sizes can miss their targets by up to
// one group. valFrac may be 0. Split i is the same for any k > i with the
// same seed, and parts keep the original sample order.
func GroupSplits(ds *Dataset, k int, trainFrac, valFrac float64, seed uint64) ([]Split, error) {
	if k < 1 {
		return nil, fmt.Errorf("group splits of %s: need k >= 1, got %d", ds.Name, k)
	}
	if !(trainFrac > 0 && trainFrac < 1) {
		return nil, fmt.Errorf("group splits of %s: train fraction %v not in (0, 1)", ds.Name, trainFrac)
	}
	if !(valFrac >= 0 && valFrac < 1) {
		return nil, fmt.Errorf("group splits of %s: validation fraction %v not in [0, 1)", ds.Name, valFrac)
	}
	gs := groupsOf(ds)
	if len(gs) < 2 || (valFrac > 0 && len(gs) < 3) {
		return nil, fmt.Errorf("group splits of %s: only %d group(s), too few to split", ds.Name, len(gs))
	}
	n := len(ds.Samples)
	r := &rng{state: seed}
	splits := make([]Split, 0, k)
	for s := 0; s < k; s++ {
		order := make([]int, len(gs))
		for i := range order {
			order[i] = i
		}
		r.shuffle(order)
		nTest := n - int(math.Round(trainFrac*float64(n)))
		testG, trainG, _ := pick(gs, order, nTest)
		var valG []int
		if valFrac > 0 {
			nTrainSide := 0
			for _, g := range trainG {
				nTrainSide += len(gs[g].idx)
			}
			valG, trainG, _ = pick(gs, trainG, int(math.Round(valFrac*float64(nTrainSide))))
		}
		if len(testG) == 0 || len(trainG) == 0 || (valFrac > 0 && len(valG) == 0) {
			return nil, fmt.Errorf("group splits of %s: split %d leaves a part empty (%d train, %d validation, %d test groups of %d)",
				ds.Name, s, len(trainG), len(valG), len(testG), len(gs))
		}
		tag := fmt.Sprintf("split%d/", s)
		splits = append(splits, Split{
			Train: ds.Subset(tag+"train", indices(gs, trainG)),
			Val:   ds.Subset(tag+"val", indices(gs, valG)),
			Test:  ds.Subset(tag+"test", indices(gs, testG)),
		})
	}
	return splits, nil
}
