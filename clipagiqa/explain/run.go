package explain

import "errors"

// Input is one image to explain.
type Input struct {
	Image string // path as given
	// Err, when set, is why the image cannot be read (it is recorded as an
	// error entry, as a failing image is).
	Err string
	// Prompt is the image's prompt; HasPrompt tells an empty prompt from a
	// missing one.
	Prompt    string
	HasPrompt bool
}

// ErrNoPrompt is the per-image error of a prompt-aware model's image
// without a prompt.
var ErrNoPrompt = errors.New("no prompt for this image (give --prompt TEXT, or a row in --prompts TABLE)")

// Run explains every input in order into w: a failing image becomes an
// error entry and the others go on. progress, when not nil, is called after
// each image. It returns the number of failed images; err is set only when
// the output cannot be written.
func Run(m Model, w *Writer, inputs []Input, progress func(done, total int)) (failed int, err error) {
	for i, in := range inputs {
		ex, e := explainInput(m, in)
		if e != nil {
			failed++
			err = w.AddError(in.Image, e)
		} else {
			err = w.Add(ex)
		}
		if err != nil {
			return failed, err
		}
		if progress != nil {
			progress(i+1, len(inputs))
		}
	}
	return failed, nil
}

func explainInput(m Model, in Input) (*Explanation, error) {
	switch {
	case in.Err != "":
		return nil, errors.New(in.Err)
	case m.NeedsPrompt() && !in.HasPrompt:
		return nil, ErrNoPrompt
	}
	px, err := m.Preprocess(in.Image)
	if err != nil {
		return nil, err
	}
	ex, err := m.Explain(px, in.Prompt)
	if err != nil {
		return nil, err
	}
	ex.Image = in.Image
	if m.NeedsPrompt() {
		ex.Prompt = in.Prompt
	}
	return ex, nil
}
