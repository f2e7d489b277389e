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
	n := walkNet{Layers: []*walkBlock{{BN: &walkBN{}}, {BN: &walkBN{}}}}
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

func TestWalkTaggedSkipsNilStructPointers(t *testing.T) {
	n := walkNet{Layers: []*walkBlock{nil, {}}}
	var got []string
	require.NoError(t, WalkTagged(&n, "", func(f TaggedField) error {
		got = append(got, f.Name)
		return nil
	}))
	require.Equal(t, []string{"stem.weight", "stem.running_mean", "stem.num_batches_tracked", "layer1.1.conv1.weight"}, got)
	require.Nil(t, n.Layers[0], "the walk does not allocate")
	require.Nil(t, n.Layers[1].BN)
}

// Bind allocates nil struct pointers, but leaves an optional one nil when the
// checkpoint has nothing under its prefix.
func TestBindOptionalStructPointer(t *testing.T) {
	type head struct {
		W *Tensor `torch:"weight"`
	}
	type model struct {
		Body *head `torch:"body"`
		Head *head `torch:"head,optional"`
	}
	mk := func() *Tensor {
		x, err := FromFloat32([]float32{1}, 1)
		require.NoError(t, err)
		return x
	}
	sd := NewStateDict()
	sd.Set("body.weight", mk())
	var m model
	rep, err := Bind(&m, sd, "", nil)
	require.NoError(t, err)
	require.NoError(t, rep.Err())
	require.NotNil(t, m.Body.W)
	require.Nil(t, m.Head)
	CloseAll(&m)
	sd.Close()

	sd = NewStateDict()
	sd.Set("body.weight", mk())
	sd.Set("head.weight", mk())
	var m2 model
	_, err = Bind(&m2, sd, "", nil)
	require.NoError(t, err)
	require.NotNil(t, m2.Head.W)
	CloseAll(&m2)
	sd.Close()
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
