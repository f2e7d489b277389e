// Command clipagiqa trains, evaluates and serves CLIP-based image quality
// models (CLIP-AGIQA, CLIP-IQA) on libtorch. Run `clipagiqa --help`.
package main

import (
	"fmt"
	"os"

	"github.com/urfave/cli/v2"
)

// version is set at link time (-ldflags "-X main.version=...").
var version = "0.1.0-dev"

func main() {
	withOMPWaitPolicy()
	app := newApp()
	if err := app.Run(os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "clipagiqa:", err)
		os.Exit(1)
	}
}

func newApp() *cli.App {
	cli.VersionPrinter = func(c *cli.Context) {
		info := runtimeInfo()
		fmt.Fprintf(c.App.Writer, "clipagiqa %s (go %s, libtorch %s, shim %s, cuda %v)\n",
			version, info.Go, info.Torch, info.Shim, info.CUDA)
	}
	return &cli.App{
		Name:    "clipagiqa",
		Usage:   "judge the quality of AI-generated images with CLIP (CLIP-AGIQA, CLIP-IQA) on libtorch",
		Version: version,
		Description: "Loads OpenAI CLIP TorchScript weights, trains the CLIP-AGIQA prompt learner and\n" +
			"regressor on MOS tables, evaluates (PLCC/SRCC/KRCC/RMSE) and scores images.\n" +
			"Every command takes --help.",
		Flags:    []cli.Flag{noFusedFlag()},
		Commands: commands(),
	}
}
