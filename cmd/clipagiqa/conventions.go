package main

import (
	"fmt"
	"slices"
	"strings"

	"github.com/urfave/cli/v2"
)

// Output formats; every command that prints results takes --format with a
// subset of these.
const (
	formatJSON  = "json"
	formatCSV   = "csv"
	formatTable = "table"
)

// formatFlag is the one output flag: --format, default first.
func formatFlag(formats ...string) *cli.StringFlag {
	return &cli.StringFlag{Name: "format", Value: formats[0],
		Usage: "output format: " + strings.Join(formats, ", ")}
}

// jsonAliasFlag keeps the old --json working without advertising it.
func jsonAliasFlag() *cli.BoolFlag {
	return &cli.BoolFlag{Name: "json", Hidden: true, Usage: "same as --format json"}
}

// outputFormat reads --format (or the hidden --json) and checks it.
func outputFormat(c *cli.Context, formats ...string) (string, error) {
	f := c.String("format")
	if c.Bool("json") {
		f = formatJSON
	}
	if !slices.Contains(formats, f) {
		return "", fmt.Errorf("--format %q: want %s", f, strings.Join(formats, " or "))
	}
	return f, nil
}

// noFusedFlag lets every model command take --no-fused after its name, not
// only before it.
func noFusedFlag() *cli.BoolFlag {
	return &cli.BoolFlag{Name: "no-fused",
		Usage: "run CLIP op by op instead of its fused native CPU paths (same numbers to float32 rounding, slower)"}
}

const requiredMark = "(required) "

// applyConventions makes every command follow the same rules: required flags
// are marked in --help and reported by one message ("--clip FILE is
// required"); every command with --clip also takes --no-fused.
func applyConventions(cmds []*cli.Command) []*cli.Command {
	for _, cmd := range cmds {
		var required []requiredFlag
		hasCLIP, hasNoFused := false, false
		for _, f := range cmd.Flags {
			names := f.Names()
			hasCLIP = hasCLIP || names[0] == "clip"
			hasNoFused = hasNoFused || names[0] == "no-fused"
			switch rf := f.(type) { // checked below, with our message
			case *cli.StringFlag:
				if rf.Required {
					rf.Required, rf.Usage = false, requiredMark+rf.Usage
					required = append(required, requiredFlag{rf.Name, rf.Usage})
				}
			case *cli.IntFlag:
				if rf.Required {
					rf.Required, rf.Usage = false, requiredMark+rf.Usage
					required = append(required, requiredFlag{rf.Name, rf.Usage})
				}
			}
		}
		if hasCLIP && !hasNoFused {
			cmd.Flags = append(cmd.Flags, noFusedFlag())
		}
		if len(required) == 0 {
			continue
		}
		before := cmd.Before
		cmd.Before = func(c *cli.Context) error {
			if c.Bool("help") {
				return nil
			}
			var missing []string
			for _, f := range required {
				if !c.IsSet(f.name) {
					missing = append(missing, requiredMessage(f.name, f.usage))
				}
			}
			if len(missing) > 0 {
				return fmt.Errorf("%s (see clipagiqa %s --help)", strings.Join(missing, "; "), cmd.Name)
			}
			if before != nil {
				return before(c)
			}
			return nil
		}
	}
	return cmds
}

// requiredFlag is a flag whose presence applyConventions checks.
type requiredFlag struct{ name, usage string }

// requiredMessage is "--NAME PLACEHOLDER is required", the form every
// missing-flag error takes (flags required only with some options too).
func requiredMessage(name, usage string) string {
	placeholder := "VALUE"
	if _, rest, ok := strings.Cut(usage, "`"); ok {
		if name, _, ok := strings.Cut(rest, "`"); ok {
			placeholder = name
		}
	}
	return fmt.Sprintf("--%s %s is required", name, placeholder)
}
