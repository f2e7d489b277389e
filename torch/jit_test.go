package torch

import (
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A closed Module refuses its methods with an error (its handle is read
// atomically: concurrent Closes free it once and run clean under -race).
func TestModuleClosedRefuses(t *testing.T) {
	m, err := LoadModule("../testdata/clip-agiqa-ref/tiny_clip_vit_fp16.pt")
	require.NoError(t, err)
	sd, err := m.NamedTensors()
	require.NoError(t, err)
	sd.Close()
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() { defer wg.Done(); m.Close() }()
	}
	wg.Wait()
	_, err = m.NamedTensors()
	assert.ErrorContains(t, err, "module is closed")
	_, err = m.RunMethod("encode_image")
	assert.ErrorContains(t, err, "module is closed")
	var nilModule *Module
	_, err = nilModule.RunMethod("encode_image")
	assert.ErrorContains(t, err, "module is nil")
}
