// Package clip is OpenAI's CLIP in Go on libtorch: the model is built from a
// checkpoint alone (hyper-parameters inferred from tensor names and shapes, as
// OpenAI's build_model does) and computes the same features as the Python
// reference to float32 rounding.
package clip

import (
	"fmt"
	"math"
	"regexp"
	"strconv"

	"github.com/clipagiqa/clipagiqa/torch"
)

// Config holds CLIP's hyper-parameters.
type Config struct {
	EmbedDim          int    `json:"embed_dim"`
	ImageResolution   int    `json:"image_resolution"`
	VisionLayers      int    `json:"vision_layers"` // ViT blocks; for a ResNet, the sum of VisionStages
	VisionWidth       int    `json:"vision_width"`
	VisionHeads       int    `json:"vision_heads"`
	VisionPatchSize   int    `json:"vision_patch_size"`
	ContextLength     int    `json:"context_length"`
	VocabSize         int    `json:"vocab_size"`
	TransformerWidth  int    `json:"transformer_width"`
	TransformerHeads  int    `json:"transformer_heads"`
	TransformerLayers int    `json:"transformer_layers"`
	Backbone          string `json:"backbone"` // BackboneViT or BackboneResNet
	// VisionStages is a ModifiedResNet's Bottleneck count per stage (RN50:
	// 3 4 6 3); empty for a ViT.
	VisionStages []int `json:"vision_stages,omitempty"`
}

// Image tower kinds (Config.Backbone).
const (
	BackboneViT    = "ViT"
	BackboneResNet = "ModifiedResNet"
)

// IsResNet reports whether the image tower is OpenAI's ModifiedResNet.
func (c Config) IsResNet() bool { return c.Backbone == BackboneResNet }

var (
	visionBlockRe = regexp.MustCompile(`^visual\.transformer\.resblocks\.(\d+)\.attn\.in_proj_weight$`)
	resnetBlockRe = regexp.MustCompile(`^visual\.layer([1-4])\.(\d+)\.`)
	textBlockRe   = regexp.MustCompile(`^transformer\.resblocks\.(\d+)\.`)
)

func shapeOf(sd *torch.StateDict, name string, dims int) ([]int64, error) {
	t := sd.Get(name)
	if t == nil {
		return nil, fmt.Errorf("missing tensor %s", name)
	}
	s := t.Shape()
	if len(s) != dims {
		return nil, fmt.Errorf("tensor %s has shape %v, want %d dimensions", name, s, dims)
	}
	return s, nil
}

// InferConfig derives the hyper-parameters from tensor names and shapes, for
// both image towers, as OpenAI's build_model does.
func InferConfig(sd *torch.StateDict) (Config, error) {
	var c Config
	var err error
	switch {
	case sd.Get("visual.proj") != nil:
		err = inferViT(sd, &c)
	case sd.Get("visual.attnpool.positional_embedding") != nil || sd.Get("visual.layer1.0.conv1.weight") != nil:
		err = inferResNet(sd, &c)
	default:
		return c, fmt.Errorf("not a CLIP checkpoint: neither visual.proj (ViT) nor visual.attnpool.positional_embedding (ResNet)")
	}
	if err != nil {
		return c, err
	}
	if err := inferText(sd, &c); err != nil {
		return c, err
	}
	return c, nil
}

func inferViT(sd *torch.StateDict, c *Config) error {
	c.Backbone = BackboneViT
	conv, err := shapeOf(sd, "visual.conv1.weight", 4)
	if err != nil {
		return err
	}
	c.VisionWidth = int(conv[0])
	c.VisionPatchSize = int(conv[3])
	pos, err := shapeOf(sd, "visual.positional_embedding", 2)
	if err != nil {
		return err
	}
	grid, err := squareGrid("visual.positional_embedding", pos[0])
	if err != nil {
		return err
	}
	c.ImageResolution = grid * c.VisionPatchSize
	blocks := map[int]bool{}
	for _, n := range sd.Names {
		if m := visionBlockRe.FindStringSubmatch(n); m != nil {
			i, _ := strconv.Atoi(m[1])
			blocks[i] = true
		}
	}
	c.VisionLayers = len(blocks)
	for i := range c.VisionLayers {
		if !blocks[i] {
			return fmt.Errorf("vision block %d missing (found %d blocks)", i, c.VisionLayers)
		}
	}
	if c.VisionLayers == 0 {
		return fmt.Errorf("no vision transformer blocks found")
	}
	// OpenAI's build_model: heads = width // 64.
	c.VisionHeads = max(1, c.VisionWidth/64)
	if c.VisionWidth%c.VisionHeads != 0 {
		return fmt.Errorf("vision width %d not divisible by %d heads", c.VisionWidth, c.VisionHeads)
	}
	return nil
}

// inferResNet reads a ModifiedResNet's shape: Bottlenecks per stage from the
// visual.layerN.<i> indices, width from layer1.0.conv1, resolution =
// 32·sqrt(rows−1) of the attnpool positional embedding, heads = 32·width/64.
func inferResNet(sd *torch.StateDict, c *Config) error {
	c.Backbone = BackboneResNet
	conv, err := shapeOf(sd, "visual.layer1.0.conv1.weight", 4)
	if err != nil {
		return err
	}
	c.VisionWidth = int(conv[0])
	pos, err := shapeOf(sd, "visual.attnpool.positional_embedding", 2)
	if err != nil {
		return err
	}
	grid, err := squareGrid("visual.attnpool.positional_embedding", pos[0])
	if err != nil {
		return err
	}
	c.ImageResolution = grid * 32
	blocks := [4]map[int]bool{{}, {}, {}, {}}
	for _, n := range sd.Names {
		if m := resnetBlockRe.FindStringSubmatch(n); m != nil {
			stage, _ := strconv.Atoi(m[1])
			i, _ := strconv.Atoi(m[2])
			blocks[stage-1][i] = true
		}
	}
	c.VisionStages = make([]int, 4)
	for st, b := range blocks {
		c.VisionStages[st] = len(b)
		if len(b) == 0 {
			return fmt.Errorf("ResNet stage visual.layer%d has no blocks", st+1)
		}
		for i := range len(b) {
			if !b[i] {
				return fmt.Errorf("ResNet block visual.layer%d.%d missing (found %d blocks)", st+1, i, len(b))
			}
		}
		c.VisionLayers += len(b)
	}
	// The attnpool works on the last stage's 32·width channels.
	c.VisionHeads = c.VisionWidth * 32 / 64
	if c.VisionHeads < 1 {
		return fmt.Errorf("ResNet width %d gives no attention heads (need width ≥ 2)", c.VisionWidth)
	}
	return nil
}

func squareGrid(name string, rows int64) (int, error) {
	grid := int(math.Round(math.Sqrt(float64(rows - 1))))
	if grid < 1 || int64(grid*grid+1) != rows {
		return 0, fmt.Errorf("%s has %d rows, not a square grid plus one", name, rows)
	}
	return grid, nil
}

func inferText(sd *torch.StateDict, c *Config) error {
	tp, err := shapeOf(sd, "text_projection", 2)
	if err != nil {
		return err
	}
	c.EmbedDim = int(tp[1])
	tpos, err := shapeOf(sd, "positional_embedding", 2)
	if err != nil {
		return err
	}
	c.ContextLength = int(tpos[0])
	tok, err := shapeOf(sd, "token_embedding.weight", 2)
	if err != nil {
		return err
	}
	c.VocabSize = int(tok[0])
	lnf, err := shapeOf(sd, "ln_final.weight", 1)
	if err != nil {
		return err
	}
	c.TransformerWidth = int(lnf[0])
	blocks := map[int]bool{}
	for _, n := range sd.Names {
		if m := textBlockRe.FindStringSubmatch(n); m != nil {
			i, _ := strconv.Atoi(m[1])
			blocks[i] = true
		}
	}
	c.TransformerLayers = len(blocks)
	for i := range c.TransformerLayers {
		if !blocks[i] {
			return fmt.Errorf("text block %d missing (found %d blocks)", i, c.TransformerLayers)
		}
	}
	if c.TransformerLayers == 0 {
		return fmt.Errorf("no text transformer blocks found")
	}
	// OpenAI's build_model: heads = width // 64.
	c.TransformerHeads = max(1, c.TransformerWidth/64)
	if c.TransformerWidth%c.TransformerHeads != 0 {
		return fmt.Errorf("text width %d not divisible by %d heads", c.TransformerWidth, c.TransformerHeads)
	}
	return nil
}

// FLOPsPerImage estimates the image encoder's multiply-adds ×2 for one image.
func (c Config) FLOPsPerImage() float64 {
	if c.IsResNet() {
		return c.resnetFLOPs(c.ImageResolution)
	}
	g := c.ImageResolution / c.VisionPatchSize
	l := float64(g*g + 1)
	w := float64(c.VisionWidth)
	patch := 2 * float64(g*g) * w * 3 * float64(c.VisionPatchSize*c.VisionPatchSize)
	perBlock := 2*l*w*3*w + 2*l*l*w*2 + 2*l*w*w + 2*l*w*4*w*2
	return patch + float64(c.VisionLayers)*perBlock + 2*w*float64(c.EmbedDim)
}

// resnetFLOPs counts the convolutions and the attnpool of a ModifiedResNet
// at input side r (pooling and BatchNorm are negligible).
func (c Config) resnetFLOPs(r int) float64 {
	macs := 0.0
	conv := func(in, out, k, side int) { macs += float64(in*out*k*k) * float64(side*side) }
	w, side := c.VisionWidth, r/2
	conv(3, w/2, 3, side)
	conv(w/2, w/2, 3, side)
	conv(w/2, w, 3, side)
	side /= 2
	in := w
	for st, n := range c.VisionStages {
		planes := w << st
		for b := range n {
			stride := 1
			if st > 0 && b == 0 {
				stride = 2
			}
			conv(in, planes, 1, side)
			conv(planes, planes, 3, side)
			side /= stride
			conv(planes, 4*planes, 1, side)
			if stride > 1 || in != 4*planes {
				conv(in, 4*planes, 1, side)
			}
			in = 4 * planes
		}
	}
	l, d := float64(side*side+1), float64(in)
	macs += 2*l*d*d + d*d + 2*l*d + d*float64(c.EmbedDim) // k, v over all tokens; q for the mean token
	return 2 * macs
}
