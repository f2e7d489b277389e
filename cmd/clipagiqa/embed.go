package main

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/clipagiqa/clipagiqa/clipagiqa/clip"
	"github.com/clipagiqa/clipagiqa/clipagiqa/imageprep"
	"github.com/clipagiqa/clipagiqa/clipagiqa/tokenizer"
	"github.com/clipagiqa/clipagiqa/torch"
	"github.com/urfave/cli/v2"
)

type imageEmbedding struct {
	Image     string    `json:"image"`
	Embedding []float32 `json:"embedding"`
}

type textEmbedding struct {
	Text      string    `json:"text"`
	Tokens    []int64   `json:"tokens"`
	Embedding []float32 `json:"embedding"`
}

type embedOutput struct {
	Model  clip.Config      `json:"model"`
	Images []imageEmbedding `json:"images"`
	Texts  []textEmbedding  `json:"texts"`
	Errors []inputError     `json:"errors"`
}

func embedCommand() *cli.Command {
	return &cli.Command{
		Name:      "embed",
		Usage:     "print raw CLIP image and text embeddings",
		ArgsUsage: "[IMAGE|DIR...]",
		Description: "Loads CLIP and prints each image's raw (un-normalised) image embedding, as\n" +
			"OpenAI's encode_image returns it after CLIP's test preprocessing (bicubic resize\n" +
			"of the shorter side, centre crop, normalisation). --text (repeatable) embeds texts\n" +
			"with encode_text; \"tokens\" are the ids from SOT to EOT, without padding.\n\n" +
			"JSON: {\"model\": {CLIP hyper-parameters}, \"images\": [{\"image\", \"embedding\"}],\n" +
			"       \"texts\": [{\"text\", \"tokens\", \"embedding\"}], \"errors\": [{\"image\", \"error\"}]}\n" +
			"CSV:  kind,input,0,1,...,E-1 with one row per image (kind image) or text (kind text).\n\n" +
			"Directories are expanded to their image files. An image that cannot be read is\n" +
			"listed under \"errors\" and on stderr, the others are still embedded, and the exit\n" +
			"status is 1.",
		Flags: []cli.Flag{
			clipFlag(true), deviceFlag(), precisionFlag(),
			formatFlag(formatJSON, formatCSV),
			&cli.GenericFlag{Name: "text", Value: &repeatable{}, Usage: "a `TEXT` to embed (repeat the flag for more; commas are kept)"},
			&cli.BoolFlag{Name: "truncate", Usage: "cut texts longer than the context length (77 tokens) instead of failing"},
			batchFlag(32), maxPixelsFlag(), threadsFlag, hostCacheFlag,
		},
		Action: runEmbed,
	}
}

func runEmbed(c *cli.Context) error {
	format, err := outputFormat(c, formatJSON, formatCSV)
	if err != nil {
		return err
	}
	texts := repeatableValues(c, "text")
	if c.NArg() == 0 && len(texts) == 0 {
		return fmt.Errorf("nothing to embed: give image files or directories, or --text")
	}
	batch := c.Int("batch-size")
	if batch <= 0 {
		return fmt.Errorf("--batch-size must be positive (got %d)", batch)
	}
	inputs := expandImages(c.Args().Slice())
	m, err := loadCLIP(c)
	if err != nil {
		return err
	}
	defer m.Close()
	out := embedOutput{Model: m.Config, Images: []imageEmbedding{}, Texts: []textEmbedding{}, Errors: []inputError{}}

	opts := imageprep.DefaultOptions(m.Config.ImageResolution)
	opts.MaxPixels = c.Int64("max-pixels")
	for start := 0; start < len(inputs); start += batch {
		chunk := inputs[start:min(start+batch, len(inputs))]
		paths := make([]string, 0, len(chunk))
		for _, in := range chunk {
			if in.Err == "" {
				paths = append(paths, in.Path)
			}
		}
		pixels, perr := preprocess(paths, opts)
		var flat []float32
		var ok []string
		for i, p := range pixels {
			if perr[i] == nil {
				ok = append(ok, paths[i])
				flat = append(flat, p...)
			}
		}
		var rows [][]float32
		if len(ok) > 0 {
			if rows, err = embedImages(m, flat, len(ok)); err != nil {
				return err // a model failure is not an input error: stop
			}
		}
		// Walk the chunk in order so results and errors keep the inputs' order.
		k, j := 0, 0
		for _, in := range chunk {
			switch {
			case in.Err != "":
				out.Errors = append(out.Errors, inputError{in.Path, in.Err})
			case perr[k] != nil:
				out.Errors = append(out.Errors, inputError{in.Path, perr[k].Error()})
				k++
			default:
				out.Images = append(out.Images, imageEmbedding{Image: in.Path, Embedding: rows[j]})
				k++
				j++
			}
		}
	}
	if len(texts) > 0 {
		tok, err := tokenizer.Default()
		if err != nil {
			return err
		}
		ids, err := tok.Tokenize(texts, m.Config.ContextLength, c.Bool("truncate"))
		if err != nil {
			return err
		}
		rows, err := embedTexts(m, ids)
		if err != nil {
			return err
		}
		for i, t := range texts {
			eot := tokenizer.EOTIndex(ids[i])
			out.Texts = append(out.Texts, textEmbedding{Text: t, Tokens: ids[i][:eot+1], Embedding: rows[i]})
		}
	}

	if format == "json" {
		// One line: indenting would put every number of every embedding on its own.
		if err := json.NewEncoder(c.App.Writer).Encode(out); err != nil {
			return err
		}
	} else if err := writeEmbedCSV(c, out); err != nil {
		return err
	}
	for _, e := range out.Errors {
		fmt.Fprintf(c.App.ErrWriter, "clipagiqa embed: %s: %s\n", e.Image, e.Error)
	}
	if len(out.Errors) > 0 {
		where := `listed under "errors" and on stderr`
		if format == formatCSV {
			where = "listed on stderr"
		}
		return fmt.Errorf("embed: %d input(s) failed (%s)", len(out.Errors), where)
	}
	return nil
}

// embedImages runs encode_image on n preprocessed images and returns rows.
func embedImages(m *clip.Model, pixels []float32, n int) ([][]float32, error) {
	r := int64(m.Config.ImageResolution)
	s := torch.NewScope().WithGrad(torch.InferenceMode).WithDevice(m.Device())
	defer s.Close()
	f := s.Cast(m.EncodeImage(s, s.FromFloat32On(m.Device(), pixels, int64(n), 3, r, r)), torch.Float32)
	if err := s.Err(); err != nil {
		return nil, fmt.Errorf("encode images: %w", err)
	}
	return rowsOf(f, n)
}

// embedTexts runs encode_text on token rows.
func embedTexts(m *clip.Model, ids [][]int64) ([][]float32, error) {
	s := torch.NewScope().WithGrad(torch.InferenceMode).WithDevice(m.Device())
	defer s.Close()
	f := s.Cast(m.EncodeText(s, ids), torch.Float32)
	if err := s.Err(); err != nil {
		return nil, fmt.Errorf("encode texts: %w", err)
	}
	return rowsOf(f, len(ids))
}

func rowsOf(t *torch.Tensor, n int) ([][]float32, error) {
	vals, err := t.Float32s()
	if err != nil {
		return nil, err
	}
	e := len(vals) / n
	rows := make([][]float32, n)
	for i := range rows {
		rows[i] = vals[i*e : (i+1)*e]
	}
	return rows, nil
}

func writeEmbedCSV(c *cli.Context, out embedOutput) error {
	w := csv.NewWriter(c.App.Writer)
	header := []string{"kind", "input"}
	for i := range out.Model.EmbedDim {
		header = append(header, strconv.Itoa(i))
	}
	if err := w.Write(header); err != nil {
		return err
	}
	row := func(kind, input string, emb []float32) error {
		rec := append(make([]string, 0, 2+len(emb)), kind, input)
		for _, v := range emb {
			rec = append(rec, strconv.FormatFloat(float64(v), 'g', -1, 32))
		}
		return w.Write(rec)
	}
	for _, im := range out.Images {
		if err := row("image", im.Image, im.Embedding); err != nil {
			return err
		}
	}
	for _, t := range out.Texts {
		if err := row("text", t.Text, t.Embedding); err != nil {
			return err
		}
	}
	w.Flush()
	return w.Error()
}
