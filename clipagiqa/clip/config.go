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
	VisionLayers      int    `json:"vision_layers"`
	VisionWidth       int    `json:"vision_width"`
	VisionHeads       int    `json:"vision_heads"`
	VisionPatchSize   int    `json:"vision_patch_size"`
	ContextLength     int    `json:"context_length"`
	VocabSize         int    `json:"vocab_size"`
	TransformerWidth  int    `json:"transformer_width"`
	TransformerHeads  int    `json:"transformer_heads"`
	TransformerLayers int    `json:"transformer_layers"`
	Backbone          string `json:"backbone"`
}

var (
	visionBlockRe = regexp.MustCompile(`^visual\.transformer\.resblocks\.(\d+)\.attn\.in_proj_weight$`)
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

// InferConfig derives the hyper-parameters from tensor names and shapes.
func InferConfig(sd *torch.StateDict) (Config, error) {
	var c Config
	if sd.Get("visual.proj") == nil {
		if sd.Get("visual.attnpool.c_proj.weight") != nil || sd.Get("visual.layer1.0.conv1.weight") != nil {
			return c, fmt.Errorf("ModifiedResNet CLIP backbones (RN50 family) are not supported yet; use a ViT model")
		}
		return c, fmt.Errorf("not a CLIP checkpoint: no visual.proj tensor")
	}
	c.Backbone = "ViT"
	conv, err := shapeOf(sd, "visual.conv1.weight", 4)
	if err != nil {
		return c, err
	}
	c.VisionWidth = int(conv[0])
	c.VisionPatchSize = int(conv[3])
	pos, err := shapeOf(sd, "visual.positional_embedding", 2)
	if err != nil {
		return c, err
	}
	grid := int(math.Round(math.Sqrt(float64(pos[0] - 1))))
	if grid*grid+1 != int(pos[0]) {
		return c, fmt.Errorf("visual.positional_embedding has %d rows, not a square grid plus one", pos[0])
	}
	c.ImageResolution = grid * c.VisionPatchSize
	tp, err := shapeOf(sd, "text_projection", 2)
	if err != nil {
		return c, err
	}
	c.EmbedDim = int(tp[1])
	tpos, err := shapeOf(sd, "positional_embedding", 2)
	if err != nil {
		return c, err
	}
	c.ContextLength = int(tpos[0])
	tok, err := shapeOf(sd, "token_embedding.weight", 2)
	if err != nil {
		return c, err
	}
	c.VocabSize = int(tok[0])
	lnf, err := shapeOf(sd, "ln_final.weight", 1)
	if err != nil {
		return c, err
	}
	c.TransformerWidth = int(lnf[0])
	vLayers, tLayers := map[int]bool{}, map[int]bool{}
	for _, n := range sd.Names {
		if m := visionBlockRe.FindStringSubmatch(n); m != nil {
			i, _ := strconv.Atoi(m[1])
			vLayers[i] = true
		}
		if m := textBlockRe.FindStringSubmatch(n); m != nil {
			i, _ := strconv.Atoi(m[1])
			tLayers[i] = true
		}
	}
	c.VisionLayers, c.TransformerLayers = len(vLayers), len(tLayers)
	for i := range c.VisionLayers {
		if !vLayers[i] {
			return c, fmt.Errorf("vision block %d missing (found %d blocks)", i, c.VisionLayers)
		}
	}
	for i := range c.TransformerLayers {
		if !tLayers[i] {
			return c, fmt.Errorf("text block %d missing (found %d blocks)", i, c.TransformerLayers)
		}
	}
	if c.VisionLayers == 0 || c.TransformerLayers == 0 {
		return c, fmt.Errorf("no transformer blocks found (vision %d, text %d)", c.VisionLayers, c.TransformerLayers)
	}
	// OpenAI's build_model: heads = width // 64.
	c.VisionHeads = max(1, c.VisionWidth/64)
	c.TransformerHeads = max(1, c.TransformerWidth/64)
	if c.VisionWidth%c.VisionHeads != 0 || c.TransformerWidth%c.TransformerHeads != 0 {
		return c, fmt.Errorf("width not divisible by heads (vision %d/%d, text %d/%d)",
			c.VisionWidth, c.VisionHeads, c.TransformerWidth, c.TransformerHeads)
	}
	return c, nil
}

// FLOPsPerImage estimates the image encoder's multiply-adds ×2 for one image.
func (c Config) FLOPsPerImage() float64 {
	g := c.ImageResolution / c.VisionPatchSize
	l := float64(g*g + 1)
	w := float64(c.VisionWidth)
	patch := 2 * float64(g*g) * w * 3 * float64(c.VisionPatchSize*c.VisionPatchSize)
	perBlock := 2*l*w*3*w + 2*l*l*w*2 + 2*l*w*w + 2*l*w*4*w*2
	return patch + float64(c.VisionLayers)*perBlock + 2*w*float64(c.EmbedDim)
}
