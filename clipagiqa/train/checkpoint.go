package train

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/clipagiqa/clipagiqa/torch/ptfile"
)

// Checkpoint files in Config.OutDir, in the official IP-IQA layout:
// checkpoint_N.pth after 0-based epoch N (only the newest is kept) and
// checkpoint_best.pth for the chosen epoch.
const BestCheckpoint = "checkpoint_best.pth"

// CheckpointName is the file of the checkpoint after 0-based epoch n.
func CheckpointName(n int) string { return fmt.Sprintf("checkpoint_%d.pth", n) }

var checkpointRE = regexp.MustCompile(`^checkpoint_(\d+)\.pth$`)

// LatestCheckpoint is the newest checkpoint_N.pth in dir ("" when none).
func LatestCheckpoint(dir string) (string, error) {
	ents, err := os.ReadDir(dir)
	if os.IsNotExist(err) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	best, path := -1, ""
	for _, e := range ents {
		if m := checkpointRE.FindStringSubmatch(e.Name()); m != nil && e.Type().IsRegular() {
			if n, err := strconv.Atoi(m[1]); err == nil && n > best {
				best, path = n, filepath.Join(dir, e.Name())
			}
		}
	}
	return path, nil
}

// StateKey is the "config" entry holding the trainer's State as JSON.
const StateKey = "trainer"

// StateScheme names how randomness is derived, so a checkpoint of another
// scheme is not resumed as if it were bit-identical.
const StateScheme = "train/v1: order EpochOrder(seed,epoch); torch seed EpochSeed(seed,epoch); augmentation SampleSeed(seed,epoch,sample)"

// State is the trainer's resumable state, stored in every checkpoint's
// config under StateKey. The sampler is a pure function of (Seed, Epoch).
type State struct {
	Scheme     string             `json:"scheme"`
	Epoch      int                `json:"epoch"` // completed epochs
	Epochs     int                `json:"epochs"`
	BatchSize  int                `json:"batch_size"`
	Seed       uint64             `json:"seed"`
	BestEpoch  int                `json:"best_epoch"` // 1-based; 0: none
	BestScore  float64            `json:"best_score"`
	BestBy     string             `json:"best_by"`
	Hyper      map[string]float64 `json:"hyper,omitempty"`
	ScheduleAt int                `json:"schedule_at"` // schedule ticks done
}

// checkpointConfig is the "config" dict of a checkpoint: the model's
// entries, then the trainer's state.
func checkpointConfig(model *ptfile.Dict, st State) (*ptfile.Dict, error) {
	b, err := json.Marshal(st)
	if err != nil {
		return nil, err
	}
	d := ptfile.NewDict(ptfile.KindDict)
	if model != nil {
		for i, k := range model.Keys {
			if k != StateKey {
				d.Set(k, model.Values[i])
			}
		}
	}
	d.Set(StateKey, string(b))
	return d, nil
}

// stateOf reads the trainer state of a loaded checkpoint's config; ok is
// false for a checkpoint without one (an official IP-IQA file).
func stateOf(config any) (State, bool, error) {
	var st State
	d, _ := config.(*ptfile.Dict)
	if d == nil {
		return st, false, nil
	}
	v, ok := d.Get(StateKey)
	if !ok {
		return st, false, nil
	}
	s, isStr := v.(string)
	if !isStr {
		return st, false, fmt.Errorf("config.%s is a %T, want a JSON string", StateKey, v)
	}
	if err := json.Unmarshal([]byte(s), &st); err != nil {
		return st, false, fmt.Errorf("config.%s: %w", StateKey, err)
	}
	return st, true, nil
}

// hyperChanges lists the settings that differ from the saved run's.
func hyperChanges(saved, now State) []string {
	var d []string
	diff := func(name string, a, b float64) {
		if a != b {
			d = append(d, fmt.Sprintf("%s %v → %v", name, a, b))
		}
	}
	diff("epochs", float64(saved.Epochs), float64(now.Epochs))
	keys := map[string]bool{}
	for k := range saved.Hyper {
		keys[k] = true
	}
	for k := range now.Hyper {
		keys[k] = true
	}
	names := make([]string, 0, len(keys))
	for k := range keys {
		names = append(names, k)
	}
	slices.Sort(names)
	for _, k := range names {
		a, okA := saved.Hyper[k]
		b, okB := now.Hyper[k]
		if okA != okB {
			d = append(d, fmt.Sprintf("%s %s → %s", k, present(okA, a), present(okB, b)))
			continue
		}
		diff(k, a, b)
	}
	return d
}

func present(ok bool, v float64) string {
	if !ok {
		return "unset"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

// removeOrphanTemps deletes temporaries that killed writes left in dir
// (".checkpoint_*.pth.tmp-*", ".metrics.*.tmp*", plots) and names them.
func removeOrphanTemps(dir string) []string {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var removed []string
	for _, e := range ents {
		n := e.Name()
		if !strings.HasPrefix(n, ".") || !strings.Contains(n, ".tmp") || !e.Type().IsRegular() {
			continue
		}
		base := strings.TrimPrefix(n, ".")
		if !(strings.HasPrefix(base, "checkpoint_") || strings.HasPrefix(base, "metrics.") || strings.HasSuffix(strings.SplitN(base, ".tmp", 2)[0], ".png")) {
			continue
		}
		if os.Remove(filepath.Join(dir, n)) == nil {
			removed = append(removed, n)
		}
	}
	return removed
}
