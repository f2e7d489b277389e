package main

import "github.com/urfave/cli/v2"

func commands() []*cli.Command {
	return applyConventions([]*cli.Command{
		infoCommand(),
		embedCommand(),
		trainCommand(),
		evalCommand(),
		predictCommand(),
		explainCommand(),
		exportCommand(),
		demoCommand(),
		pretrainCommand(),
		serveCommand(),
		benchCommand(),
		benchServeCommand(),
		launchCommand(),
	})
}
