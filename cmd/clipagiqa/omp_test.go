package main

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const ompProbeEnv = "CLIPAGIQA_OMP_PROBE"

// The probe half: the test binary re-run by TestOMPWaitPolicy calls
// withOMPWaitPolicy (which may re-execute it with the same arguments, so the
// probe runs again) and prints the policy it ends with.
func TestOMPWaitPolicyProbe(t *testing.T) {
	if os.Getenv(ompProbeEnv) != "1" {
		t.Skip("runs only as TestOMPWaitPolicy's child")
	}
	withOMPWaitPolicy()
	os.Stdout.WriteString("policy=" + os.Getenv("OMP_WAIT_POLICY") + ";args=" + strings.Join(os.Args[1:], " ") + "\n")
}

// withOMPWaitPolicy re-executes the program with OMP_WAIT_POLICY=PASSIVE
// only when the environment chose no policy and did not ask for libgomp's
// default.
func TestOMPWaitPolicy(t *testing.T) {
	self, err := os.Executable()
	require.NoError(t, err)
	base := []string{ompProbeEnv + "=1", "PATH=" + os.Getenv("PATH")}
	for _, c := range []struct {
		name string
		env  []string
		want string
	}{
		{"unset: re-executed passive", nil, "policy=PASSIVE;"},
		{"set by the user: kept", []string{"OMP_WAIT_POLICY=ACTIVE"}, "policy=ACTIVE;"},
		{"libgomp's default asked for", []string{keepOMPDefaultEnv + "=1"}, "policy=;"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cmd := exec.Command(self, "-test.run=^TestOMPWaitPolicyProbe$", "-test.count=1")
			cmd.Env = append(append([]string(nil), base...), c.env...)
			out, err := cmd.CombinedOutput()
			require.NoError(t, err, "%s", out)
			assert.Contains(t, string(out), c.want)
			assert.Contains(t, string(out), "-test.run=^TestOMPWaitPolicyProbe$", "the arguments survive the re-execution")
			assert.Equal(t, 1, strings.Count(string(out), "policy="), "one probe output: a re-executed process does not re-execute again")
		})
	}
}
