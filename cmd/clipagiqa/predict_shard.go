package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"sort"

	"github.com/clipagiqa/clipagiqa/internal/shard"
	"github.com/urfave/cli/v2"
)

// shardInfo records which part of the inputs a predict output holds.
type shardInfo struct {
	shard.Spec
	TotalInputs int `json:"total_inputs"` // inputs before sharding
}

func predictShardFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "shard", Usage: "score only part `I/N`: every N-th input (I, I+N, ...) of the inputs sorted by path; " +
			"N independent runs (e.g. a Kubernetes Indexed Job with I=$JOB_COMPLETION_INDEX) cover every input once"},
		&cli.BoolFlag{Name: "merge", Usage: "join the JSON part files given as arguments (from --shard runs) into one output, " +
			"checking that parts 0..N-1 are all there once; nothing is scored"},
		&cli.StringFlag{Name: "output", Usage: "write the output to `FILE` (atomically: a temporary file renamed when complete) instead of stdout"},
	}
}

// shardInputs keeps this run's part of the inputs, in path order.
func shardInputs(c *cli.Context, inputs []imageInput) ([]imageInput, *shardInfo, error) {
	if c.String("shard") == "" {
		return inputs, nil, nil
	}
	sp, err := shard.Parse(c.String("shard"))
	if err != nil {
		return nil, nil, fmt.Errorf("--shard: %w", err)
	}
	sorted := append([]imageInput(nil), inputs...)
	sort.SliceStable(sorted, func(i, j int) bool { return sorted[i].Path < sorted[j].Path })
	picked := make([]imageInput, 0, sp.Size(len(sorted)))
	for _, i := range sp.Pick(len(sorted)) {
		picked = append(picked, sorted[i])
	}
	return picked, &shardInfo{Spec: sp, TotalInputs: len(sorted)}, nil
}

// predictWriter is stdout, or --output's temporary file; commit renames it
// into place once the output is complete, so an interrupted run leaves none.
func predictWriter(c *cli.Context) (w io.Writer, commit func() error, discard func(), err error) {
	path := c.String("output")
	if path == "" {
		return c.App.Writer, func() error { return nil }, func() {}, nil
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return nil, nil, nil, fmt.Errorf("--output: %w", err)
	}
	commit = func() error {
		if err := f.Sync(); err != nil {
			f.Close()
			os.Remove(f.Name())
			return fmt.Errorf("--output %s: %w", path, err)
		}
		if err := f.Close(); err != nil {
			os.Remove(f.Name())
			return fmt.Errorf("--output %s: %w", path, err)
		}
		if err := os.Rename(f.Name(), path); err != nil {
			os.Remove(f.Name())
			return fmt.Errorf("--output %s: %w", path, err)
		}
		return nil
	}
	discard = func() { f.Close(); os.Remove(f.Name()) }
	return f, commit, discard, nil
}

// runPredictMerge joins --shard outputs: results and errors of all parts,
// sorted by image path (the order --shard split them in).
func runPredictMerge(c *cli.Context) error {
	if c.NArg() == 0 {
		return fmt.Errorf("--merge: give the part files (JSON outputs of predict --shard)")
	}
	if c.String("format") != "json" {
		return fmt.Errorf("--merge reads and writes JSON; for CSV parts use: head -1 part0.csv; tail -q -n +2 part*.csv")
	}
	var merged predictOutput
	var specs []shard.Spec
	total := -1
	for k, path := range c.Args().Slice() {
		data, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("--merge: %w", err)
		}
		var part predictOutput
		if err := json.Unmarshal(data, &part); err != nil {
			return fmt.Errorf("--merge: %s is not a predict JSON output: %w", path, err)
		}
		if part.Shard == nil {
			return fmt.Errorf("--merge: %s has no \"shard\" field (not made with --shard)", path)
		}
		if k == 0 {
			merged.Model = part.Model
			total = part.Shard.TotalInputs
		} else if !reflect.DeepEqual(part.Model, merged.Model) {
			return fmt.Errorf("--merge: %s was scored by a different model (%+v) than %s (%+v)", path, part.Model, c.Args().First(), merged.Model)
		} else if part.Shard.TotalInputs != total {
			return fmt.Errorf("--merge: %s split %d inputs, %s split %d", path, part.Shard.TotalInputs, c.Args().First(), total)
		}
		specs = append(specs, part.Shard.Spec)
		merged.Results = append(merged.Results, part.Results...)
		merged.Errors = append(merged.Errors, part.Errors...)
	}
	if err := shard.CheckComplete(specs); err != nil {
		return fmt.Errorf("--merge: %w", err)
	}
	if got := len(merged.Results) + len(merged.Errors); got != total {
		return fmt.Errorf("--merge: parts hold %d inputs, the split had %d", got, total)
	}
	if merged.Results == nil {
		merged.Results = []predictResult{}
	}
	if merged.Errors == nil {
		merged.Errors = []inputError{}
	}
	sort.SliceStable(merged.Results, func(i, j int) bool { return merged.Results[i].Image < merged.Results[j].Image })
	sort.SliceStable(merged.Errors, func(i, j int) bool { return merged.Errors[i].Image < merged.Errors[j].Image })
	w, commit, discard, err := predictWriter(c)
	if err != nil {
		return err
	}
	if err := writeJSON(w, merged); err != nil {
		discard()
		return err
	}
	if err := commit(); err != nil {
		return err
	}
	if len(merged.Errors) > 0 {
		return fmt.Errorf("predict --merge: %d input(s) failed in the parts (listed under \"errors\")", len(merged.Errors))
	}
	return nil
}
