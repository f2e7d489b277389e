package benchkit

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fakeReference is a shell stand-in for bench/reference.py --serve: it
// answers "encoder" with fixed times, "bad" with an error and echoes the
// environment variable FAKE_ENV in "env".
const fakeReference = `
while read -r line; do
  case "$line" in
    *'"quit"'*) echo '{"ok": true}'; exit 0 ;;
    *'"encoder"'*) echo '{"ok": true, "times": [0.5, 0.25], "hwm_kb": 1234, "hwm_reset": true}' ;;
    *'"env"'*) echo "{\"ok\": true, \"torch\": \"$FAKE_ENV\"}" ;;
    *'"die"'*) echo "dying" >&2; exit 3 ;;
    *) echo '{"ok": false, "error": "ValueError: unknown op"}' ;;
  esac
done
`

func startFake(t *testing.T) *Reference {
	t.Helper()
	script := filepath.Join(t.TempDir(), "fake.sh")
	require.NoError(t, os.WriteFile(script, []byte(fakeReference), 0o755))
	r, err := StartReference("/bin/sh", script, []string{"FAKE_ENV=passive"})
	require.NoError(t, err)
	return r
}

func TestReferenceProtocol(t *testing.T) {
	r := startFake(t)
	rep, err := r.Call(map[string]any{"op": "encoder", "batch": 8})
	require.NoError(t, err)
	assert.Equal(t, []float64{0.5, 0.25}, rep.Times)
	assert.Equal(t, int64(1234), rep.HWMKB)
	assert.True(t, rep.HWMReset)

	rep, err = r.Call(map[string]any{"op": "env"})
	require.NoError(t, err)
	assert.Equal(t, "passive", rep.Torch, "extra environment reaches the script")

	_, err = r.Call(map[string]any{"op": "bogus"})
	require.ErrorContains(t, err, "reference bogus: ValueError: unknown op")
	require.NoError(t, r.Close())
	require.NoError(t, r.Close(), "closing twice is harmless")
}

func TestReferenceDeath(t *testing.T) {
	r := startFake(t)
	_, err := r.Call(map[string]any{"op": "die"})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "dying", "the script's stderr is in the error")
	assert.Error(t, r.Close())

	_, err = StartReference("/bin/sh", filepath.Join(t.TempDir(), "missing.py"), nil)
	assert.ErrorContains(t, err, "reference script")
}

func TestTailBuffer(t *testing.T) {
	tb := &tailBuffer{max: 5}
	_, _ = tb.Write([]byte("abc"))
	_, _ = tb.Write([]byte("defg"))
	assert.Equal(t, "cdefg", tb.String())
}
