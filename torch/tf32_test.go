package torch

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestSetAllowTF32RoundTrip(t *testing.T) {
	cublas0, cudnn0 := AllowTF32()
	t.Cleanup(func() { _ = SetAllowTF32(cublas0, cudnn0) })
	for _, c := range []struct{ cublas, cudnn bool }{{false, false}, {true, false}, {false, true}, {true, true}} {
		require.NoError(t, SetAllowTF32(c.cublas, c.cudnn))
		cublas, cudnn := AllowTF32()
		assert.Equal(t, c.cublas, cublas, "cuBLAS")
		assert.Equal(t, c.cudnn, cudnn, "cuDNN")
	}
}
