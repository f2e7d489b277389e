package benchkit

import (
	"bufio"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const statusSample = `Name:	clipagiqa
VmPeak:	 2441784 kB
VmHWM:	  179092 kB
VmRSS:	  150000 kB
Threads:	9
`

func TestParseStatusKB(t *testing.T) {
	for _, tc := range []struct {
		field string
		want  int64
	}{{"VmHWM", 179092}, {"VmRSS", 150000}, {"VmPeak", 2441784}} {
		got, err := parseStatusKB(bufio.NewScanner(strings.NewReader(statusSample)), tc.field)
		require.NoError(t, err)
		assert.Equal(t, tc.want, got)
	}
	_, err := parseStatusKB(bufio.NewScanner(strings.NewReader(statusSample)), "VmSwap")
	assert.ErrorContains(t, err, "no VmSwap line")
	_, err = parseStatusKB(bufio.NewScanner(strings.NewReader("Threads:\t9\n")), "Threads")
	assert.ErrorContains(t, err, "want")
}

// Touching 64 MiB raises the peak by about that much after a reset.
func TestPeakRSSFollowsAllocation(t *testing.T) {
	debug.FreeOSMemory() // so the buffer below needs fresh pages, also with -count > 1
	if !ResetPeakRSS() {
		t.Skip("kernel does not allow resetting VmHWM")
	}
	before, err := PeakRSSKB()
	require.NoError(t, err)
	buf := make([]byte, 64<<20)
	for i := 0; i < len(buf); i += 4096 {
		buf[i] = 1
	}
	after, err := PeakRSSKB()
	require.NoError(t, err)
	assert.GreaterOrEqual(t, after-before, int64(60<<10), "peak grew by %d KiB", after-before)
	rss, err := RSSKB()
	require.NoError(t, err)
	// The kernel updates VmHWM lazily, so a later VmRSS reading may pass the
	// peak by a few pages; 1 MiB of slack is far below the 64 MiB tested.
	assert.LessOrEqual(t, rss, after+1024)
	assert.Equal(t, byte(1), buf[len(buf)-4096])
}
