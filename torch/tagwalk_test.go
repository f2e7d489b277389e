package torch

import (
	"testing"

	"github.com/stretchr/testify/require"
)

type walkBN struct {
	Weight      *Tensor `torch:"weight"`
	RunningMean *Tensor `torch:"running_mean,buffer"`
	Tracked     *Tensor `torch:"num_batches_tracked,buffer,optional"`
}

type walkBlock struct {
	Conv *Tensor `torch:"conv1.weight"`
	BN   *walkBN `torch:"bn1"`
	Skip int
}

type walkNet struct {
	Stem   walkBN       `torch:"stem"`
	Layers []*walkBlock `torch:"layer1"`
	Note   string       `torch:"-"`
}

func TestWalkTaggedNamesAndOptions(t *testing.T) {
	n := walkNet{Layers: make([]*walkBlock, 2)}
	var got []TaggedField
	require.NoError(t, WalkTagged(&n, "visual", func(f TaggedField) error {
		got = append(got, f)
		return nil
	}))
	names := make([]string, len(got))
	for i, f := range got {
		names[i] = f.Name
	}
	require.Equal(t, []string{
		"visual.stem.weight", "visual.stem.running_mean", "visual.stem.num_batches_tracked",
		"visual.layer1.0.conv1.weight", "visual.layer1.0.bn1.weight", "visual.layer1.0.bn1.running_mean", "visual.layer1.0.bn1.num_batches_tracked",
		"visual.layer1.1.conv1.weight", "visual.layer1.1.bn1.weight", "visual.layer1.1.bn1.running_mean", "visual.layer1.1.bn1.num_batches_tracked",
	}, names)
	require.False(t, got[0].Buffer)
	require.True(t, got[1].Buffer)
	require.False(t, got[1].Optional)
	require.True(t, got[2].Buffer && got[2].Optional)
	// Ptr is the field itself.
	x, err := FromFloat32([]float32{1}, 1)
	require.NoError(t, err)
	defer x.Close()
	*got[4].Ptr = x
	require.Same(t, x, n.Layers[0].BN.Weight)
}

// A nil struct pointer tagged ",optional" is an absent sub-module: skipped
// and left nil; a non-nil one is walked.
func TestWalkTaggedOptionalSubmodule(t *testing.T) {
	type block struct {
		Conv *Tensor `torch:"conv1.weight"`
		Down *walkBN `torch:"downsample,optional"`
	}
	blocks := []*block{{}, {Down: &walkBN{}}}
	for i, b := range blocks {
		var names []string
		require.NoError(t, WalkTagged(b, "b", func(f TaggedField) error {
			names = append(names, f.Name)
			return nil
		}))
		if i == 0 {
			require.Equal(t, []string{"b.conv1.weight"}, names)
			require.Nil(t, b.Down)
		} else {
			require.Equal(t, []string{"b.conv1.weight", "b.downsample.weight", "b.downsample.running_mean",
				"b.downsample.num_batches_tracked"}, names)
		}
	}
}

func TestWalkTaggedErrors(t *testing.T) {
	type badOption struct {
		W *Tensor `torch:"w,bogus"`
	}
	type badKind struct {
		N int `torch:"n"`
	}
	noop := func(TaggedField) error { return nil }
	require.ErrorContains(t, WalkTagged(&badOption{}, "", noop), `unknown torch tag option "bogus"`)
	require.ErrorContains(t, WalkTagged(&badKind{}, "", noop), "not a tensor, struct or slice")
	require.ErrorContains(t, WalkTagged(badKind{}, "", noop), "pointer to a struct")
}
