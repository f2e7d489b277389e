package main

import (
	"encoding/json"
	"testing"

	"github.com/clipagiqa/clipagiqa/torch"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// --host-cache-mib: the compute commands install torch's host cache by
// default, -1 runs on libtorch's allocator, and the results are the same.
func TestHostCacheFlag(t *testing.T) {
	t.Cleanup(func() { require.NoError(t, torch.DisableHostCache()) })
	embed := func(extra ...string) embedOutput {
		args := append([]string{"embed", "--clip", tinyCLIPPath, "--text", "Good photo."}, extra...)
		out, _, err := run(t, append(args, fixtureImage(1), fixtureImage(2))...)
		require.NoError(t, err)
		var got embedOutput
		require.NoError(t, json.Unmarshal([]byte(out), &got))
		return got
	}
	off := embed("--host-cache-mib", "-1")
	st, err := torch.ReadHostCacheStats()
	require.NoError(t, err)
	assert.False(t, st.Enabled)

	on := embed()
	st, err = torch.ReadHostCacheStats()
	require.NoError(t, err)
	assert.True(t, st.Enabled, "on by default")
	assert.Equal(t, off.Images, on.Images, "the allocator does not change a value")
	assert.Equal(t, off.Texts, on.Texts)

	_, _, err = run(t, "embed", "--clip", tinyCLIPPath, "--host-cache-mib", "9000000000", fixtureImage(1))
	assert.ErrorContains(t, err, "--host-cache-mib")
}
