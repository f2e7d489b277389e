package nn_test

import (
	"fmt"

	"github.com/clipagiqa/clipagiqa/torch"
	"github.com/clipagiqa/clipagiqa/torch/nn"
)

// A two-tower model as IP-IQA trains it: the image tower learns, the text
// tower is frozen and stays in eval mode across model.train() calls.
func Example() {
	store := nn.NewStore()
	defer store.Close()
	visual, text := store.Sub("visual"), store.Sub("text")
	conv, _ := nn.NewConv2d(visual.Sub("conv1"), 3, 8, nn.Conv2dConfig{Kernel: torch.Sq(3), Stride: torch.Sq(2), Padding: torch.Sq(1)})
	bn, _ := nn.NewBatchNorm2d(visual.Sub("bn1"), 8, nn.BatchNormDefaults)
	drop, _ := nn.NewDropout(text.Sub("dropout"), 0.1)
	if _, err := nn.NewLinear(text.Sub("proj"), 8, 4, false); err != nil {
		fmt.Println(err)
		return
	}
	if err := text.Freeze(); err != nil { // frozen and pinned to eval mode
		fmt.Println(err)
		return
	}
	store.Train(true)

	for _, p := range store.Trainable() { // what an optimizer gets
		fmt.Println(p.Name)
	}
	fmt.Println("text training:", text.Training(), "visual training:", visual.Training())

	s := torch.NewScope()
	defer s.Close()
	y := bn.Forward(s, conv.Forward(s, s.Randn(torch.Float32, 2, 3, 16, 16)))
	y = drop.Forward(s, y) // identity: its tower is pinned to eval
	fmt.Println(y.Shape(), s.Err())
	// Output:
	// visual.conv1.weight
	// visual.bn1.weight
	// visual.bn1.bias
	// text training: false visual training: true
	// [2 8 8 8] <nil>
}
