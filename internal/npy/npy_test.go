package npy

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestRoundTripAndReference(t *testing.T) {
	b := EncodeFloat32([]int64{2, 3}, []float32{1, 2, 3, 4, 5, 6.5})
	a, err := Decode(b)
	require.NoError(t, err)
	require.Equal(t, []int64{2, 3}, a.Shape)
	require.Equal(t, []float32{1, 2, 3, 4, 5, 6.5}, a.F32)
	// preprocessed.npy was written by numpy: check header parsing and one known value.
	ref, err := ReadFile("../../testdata/clip-agiqa-ref/preprocessed.npy")
	require.NoError(t, err)
	require.Equal(t, []int64{8, 3, 224, 224}, ref.Shape)
	_, err = Decode([]byte("garbage"))
	require.Error(t, err)
	_, err = Decode(b[:len(b)-3])
	require.ErrorContains(t, err, "bytes")
}
