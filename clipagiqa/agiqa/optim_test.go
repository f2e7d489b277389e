package agiqa

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/clipagiqa/clipagiqa/internal/reffix"
	"github.com/clipagiqa/clipagiqa/torch/ptfile"
)

// officialOptimizerStates reads the "optimizer" entries of the official
// epoch-100 checkpoints.
func officialOptimizerStates(t *testing.T) map[string]*ptfile.Dict {
	t.Helper()
	out := map[string]*ptfile.Dict{}
	for _, sub := range []string{"prompt_learner", "regression"} {
		f, err := ptfile.Load(reffix.Path(fmt.Sprintf("%s/model.pth.tar-100", sub)))
		require.NoError(t, err)
		v, err := ptfile.Get(f.Root, "optimizer")
		require.NoError(t, err)
		d, ok := v.(*ptfile.Dict)
		require.True(t, ok, "%s optimizer is a %T", sub, v)
		out[sub] = d
	}
	return out
}

// The fixture's resumed step: both official optimizers load_state_dict the
// checkpoint's optimizer entry, the lr is overwritten with 0.002, one step.
// Loading the same entries through torch/optim must give the same step.
func TestOfficialOptimizerStateDictResumesStep(t *testing.T) {
	f := loadFixture(t)
	m, _ := officialModel(t, f, reffix.Dir())
	opt, err := NewOptimizer(m, 0.1, 0.5, 0) // hyper-parameters come from the files
	require.NoError(t, err)
	defer opt.Close()
	require.NoError(t, opt.LoadStateDicts(officialOptimizerStates(t)))
	for _, sgd := range []interface {
		LR(int) float64
		InitialLR(int) float64
	}{opt.ctx, opt.reg} {
		assert.Equal(t, 4.934396342684e-07, sgd.LR(0), "lr of the saved epoch")
		assert.Equal(t, 0.002, sgd.InitialLR(0), "initial_lr of the saved scheduler")
	}
	assert.Equal(t, 0.9, opt.ctx.Groups()[0].Momentum)
	assert.Equal(t, 5e-4, opt.reg.Groups()[0].WeightDecay)
	opt.SetLR(f.exp.TrainStepResume.LR)
	want := f.exp.TrainStepResume.TrainStep
	want.MOS = f.exp.TrainStep.MOS // recorded once, same images and MOS
	checkStep(t, f, m, opt, want)

	// What we write back has the official layout and names.
	sds, err := opt.StateDicts()
	require.NoError(t, err)
	g, _ := sds["regression"].Get("param_groups")
	names, _ := g.([]any)[0].(*ptfile.Dict).Get("param_names")
	assert.Equal(t, []any{"regression.1.weight", "regression.1.bias", "regression.4.weight", "regression.4.bias"}, names)
}

func TestLoadStateDictsRefusesAndKeepsState(t *testing.T) {
	f := loadFixture(t)
	m, _ := officialModel(t, f, reffix.Dir())
	opt, err := NewOptimizer(m, 0.002, 0.9, 5e-4)
	require.NoError(t, err)
	defer opt.Close()
	sds := officialOptimizerStates(t)
	// The regressor's file given for both: the prompt learner has 1 parameter.
	err = opt.LoadStateDicts(map[string]*ptfile.Dict{"prompt_learner": sds["regression"], "regression": sds["regression"]})
	require.ErrorContains(t, err, "prompt_learner optimiser")
	// A good prompt learner, a bad regressor: the prompt learner is rolled back.
	err = opt.LoadStateDicts(map[string]*ptfile.Dict{"prompt_learner": sds["prompt_learner"], "regression": sds["prompt_learner"]})
	require.ErrorContains(t, err, "regression optimiser")
	assert.Equal(t, 0.002, opt.LR())
	buf, err := opt.MomentumBuffer("prompt_learner.ctx")
	require.NoError(t, err)
	assert.Nil(t, buf, "no momentum before the first step")
	require.ErrorContains(t, opt.LoadStateDicts(map[string]*ptfile.Dict{"visual": sds["regression"]}), "unknown module")
}
