package optim

import (
	"encoding/json"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/clipagiqa/clipagiqa/torch"
	"github.com/clipagiqa/clipagiqa/torch/ptfile"
)

const pythonPath = "/usr/bin/python3"

// resumeFile reads a {"optimizer": state_dict, "params": {name: tensor}}
// file.
func resumeFile(t *testing.T, path string) (*ptfile.Dict, map[string][]float64) {
	t.Helper()
	f, err := ptfile.Load(path)
	require.NoError(t, err)
	raw, err := ptfile.Get(f.Root, "optimizer")
	require.NoError(t, err)
	sd, ok := raw.(*ptfile.Dict)
	require.True(t, ok, "optimizer is a %T", raw)
	params := map[string][]float64{}
	for _, n := range names {
		pt, err := ptfile.GetTensor(f.Root, "params", n)
		require.NoError(t, err)
		v, err := pt.Float32s()
		require.NoError(t, err)
		params[n] = make([]float64, len(v))
		for i, x := range v {
			params[n][i] = float64(x)
		}
	}
	return sd, params
}

// Python ran ResumeAt steps and saved optimizer and parameters; we load both
// and continue: every later step must equal Python's uninterrupted run.
func TestResumesPythonStateDict(t *testing.T) {
	r := loadRef(t)
	for _, name := range caseNames {
		t.Run(name, func(t *testing.T) {
			c := r.Cases[name]
			sd, params := resumeFile(t, filepath.Join("testdata", "resume_"+name+".pt"))
			ps := newParams(t, r, params)
			opt, sched := build(t, c, ps)
			require.NoError(t, opt.LoadStateDict(sd))
			d := runSteps(t, r, c, opt, sched, ps, r.ResumeAt, r.Steps)
			t.Logf("%s resumed at %d: %v", name, r.ResumeAt, d)
			d.check(t, "resumed parameters")
			if sched != nil {
				Apply(opt, sched, r.Steps)
			}
			checkStateDict(t, c.FinalStateDict, opt)
		})
	}
}

// We run ResumeAt steps and save; a fresh optimizer of ours and Python's
// torch.optim both load the file and continue exactly.
func TestStateDictResumesHereAndInPython(t *testing.T) {
	r := loadRef(t)
	dir := t.TempDir()
	for _, name := range caseNames {
		t.Run(name, func(t *testing.T) {
			c := r.Cases[name]
			ps := newParams(t, r, r.Initial)
			opt, sched := build(t, c, ps)
			runSteps(t, r, c, opt, sched, ps, 0, r.ResumeAt)
			sd, err := opt.StateDict()
			require.NoError(t, err)
			root := ptfile.NewDict(ptfile.KindDict)
			root.Set("optimizer", sd)
			pd := ptfile.NewDict(ptfile.KindOrderedDict)
			for _, p := range ps {
				raw, err := torch.ToRaw(p.T)
				require.NoError(t, err)
				pd.Set(p.Name, raw)
			}
			root.Set("params", pd)
			path := filepath.Join(dir, name+".pt")
			require.NoError(t, ptfile.SaveValue(path, root))

			// Here: a fresh optimizer over the saved parameters.
			sd2, params := resumeFile(t, path)
			ps2 := newParams(t, r, params)
			opt2, sched2 := build(t, c, ps2)
			require.NoError(t, opt2.LoadStateDict(sd2))
			d := runSteps(t, r, c, opt2, sched2, ps2, r.ResumeAt, r.Steps)
			d.check(t, "Go resumed")
		})
	}
	if exec.Command(pythonPath, "-c", "import torch").Run() != nil {
		t.Skip("python3-torch not installed: checked the Go round trip only")
	}
	out, err := exec.Command(pythonPath, filepath.Join("testdata", "gen", "make_ref.py"), "continue", dir).Output()
	if ee, ok := err.(*exec.ExitError); ok {
		t.Fatalf("make_ref.py continue: %v\n%s", err, ee.Stderr)
	}
	require.NoError(t, err)
	var py map[string]struct {
		Steps []refStep `json:"steps"`
	}
	require.NoError(t, json.Unmarshal(out, &py))
	require.Len(t, py, len(caseNames), "Python resumed every case")
	for _, name := range caseNames {
		c := r.Cases[name]
		require.Len(t, py[name].Steps, r.Steps-r.ResumeAt, name)
		var d diff
		for i, st := range py[name].Steps {
			want := c.Steps[r.ResumeAt+i]
			for _, n := range names {
				d.add(want.Params[n], f32(st.Params[n]))
			}
		}
		t.Logf("%s: Python resumed our state dict at %d: %v", name, r.ResumeAt, d)
		d.check(t, name+": Python resumed")
	}
}
