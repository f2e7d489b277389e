package method

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestRegisterExport: RegisterExport attaches an export to a registered
// method, once, and Lookup returns it; unknown names and nil exports fail.
func TestRegisterExport(t *testing.T) {
	export := func(req ExportRequest) (string, error) { return "exported " + req.Out, nil }
	require.NoError(t, Register(Method{Name: "x-export-a", Open: openNothing}))
	m, err := Lookup("x-export-a")
	require.NoError(t, err)
	assert.Nil(t, m.Export, "no export before RegisterExport")

	require.ErrorContains(t, RegisterExport("x-export-missing", export), "no such method registered")
	require.ErrorContains(t, RegisterExport("x-export-a", nil), "nil export")
	require.NoError(t, RegisterExport("x-export-a", export))
	require.ErrorContains(t, RegisterExport("x-export-a", export), "already has one")

	m, err = Lookup("x-export-a")
	require.NoError(t, err)
	require.NotNil(t, m.Export)
	got, err := m.Export(ExportRequest{Out: "dir"})
	require.NoError(t, err)
	assert.Equal(t, "exported dir", got)

	// An export given at Register counts as one.
	require.NoError(t, Register(Method{Name: "x-export-b", Open: openNothing, Export: export}))
	require.ErrorContains(t, RegisterExport("x-export-b", export), "already has one")
}
