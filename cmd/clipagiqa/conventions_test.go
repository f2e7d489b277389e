package main

import (
	"strings"
	"testing"

	"github.com/clipagiqa/clipagiqa/clipagiqa/imageprep"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/urfave/cli/v2"
)

// Issue 12 item 7: walk every command's flags and check the CLI's rules.
func TestEveryCommandFollowsTheFlagRules(t *testing.T) {
	for _, cmd := range commands() {
		t.Run(cmd.Name, func(t *testing.T) {
			flags := map[string]cli.Flag{}
			var required []*cli.StringFlag
			for _, f := range cmd.Flags {
				flags[f.Names()[0]] = f
				if sf, ok := f.(*cli.StringFlag); ok && strings.HasPrefix(sf.Usage, requiredMark) {
					required = append(required, sf)
				}
				if rf, ok := f.(cli.RequiredFlag); ok {
					assert.False(t, rf.IsRequired(), "--%s: required flags are checked by applyConventions, with one message", f.Names()[0])
				}
			}
			// One output flag: --format; --json only as a hidden alias.
			if j, ok := flags["json"]; ok {
				bf, isBool := j.(*cli.BoolFlag)
				require.True(t, isBool)
				assert.True(t, bf.Hidden, "--json must be a hidden alias of --format json")
				assert.Contains(t, flags, "format", "--json without --format")
			}
			if f, ok := flags["format"].(*cli.StringFlag); ok && cmd.Name != "export" { // export's --format is a checkpoint layout
				assert.Contains(t, []string{formatJSON, formatCSV, formatTable}, f.Value)
				for _, w := range strings.Split(strings.TrimPrefix(f.Usage, "output format: "), ", ") {
					assert.Contains(t, []string{formatJSON, formatCSV, formatTable}, w, "--format usage %q", f.Usage)
				}
			}
			// --clip FILE spelled the same, and --no-fused accepted after the command name.
			if f, ok := flags["clip"].(*cli.StringFlag); ok {
				assert.Contains(t, f.Usage, "`FILE`", "--clip must show as --clip FILE")
				assert.Contains(t, flags, "no-fused")
				_, _, err := run(t, cmd.Name, "--no-fused", "--help")
				assert.NoError(t, err)
			}
			// One --max-pixels default: the library's.
			if f, ok := flags["max-pixels"]; ok {
				i64, isInt := f.(*cli.Int64Flag)
				require.True(t, isInt)
				assert.Equal(t, imageprep.DefaultMaxPixels, i64.Value)
			}
			// Required flags are marked in --help and reported by one message.
			if len(required) > 0 {
				help, _, err := run(t, cmd.Name, "--help")
				require.NoError(t, err)
				_, _, err = run(t, cmd.Name)
				require.Error(t, err)
				for _, f := range required {
					assert.Contains(t, help, "--"+f.Name)
					assert.Contains(t, err.Error(), requiredMessage(f.Name, f.Usage))
				}
				assert.Contains(t, help, "(required)")
			}
		})
	}
}
