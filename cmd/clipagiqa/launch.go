package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/clipagiqa/clipagiqa/torch/dist/launch"
	"github.com/urfave/cli/v2"
)

func launchCommand() *cli.Command {
	return &cli.Command{
		Name:      "launch",
		Usage:     "run N processes of a clipagiqa command as one data-parallel group on this machine (like torchrun)",
		ArgsUsage: "-- COMMAND [FLAGS...]",
		Description: "Starts --nproc-per-node copies of this binary running COMMAND (e.g. `train ...`), each with\n" +
			"torchrun's variables RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT.\n" +
			"Rank 0 hosts the rendezvous store on --master-port. SIGINT/SIGTERM are forwarded to every\n" +
			"child; when one child fails the others are stopped and launch exits with the first failure's\n" +
			"status. Collectives time out after CLIPAGIQA_DIST_TIMEOUT (default 5m).\n" +
			"Example: clipagiqa launch --nproc-per-node 2 -- train --batch-size 32 ...",
		Flags: []cli.Flag{
			&cli.IntFlag{Name: "nproc-per-node", Usage: "processes to start (the world size), `N`", Required: true},
			&cli.StringFlag{Name: "master-addr", Value: "127.0.0.1", Usage: "address rank 0's store listens on, given to children as MASTER_ADDR"},
			&cli.IntFlag{Name: "master-port", Value: launch.DefaultMasterPort, Usage: "store port (MASTER_PORT); 0 picks a free one"},
			&cli.DurationFlag{Name: "grace", Value: launch.DefaultGrace, Usage: "time stopped children get between SIGTERM and SIGKILL"},
		},
		Action: func(c *cli.Context) error {
			args := c.Args().Slice()
			if len(args) == 0 {
				return fmt.Errorf("launch: no command given; usage: clipagiqa launch --nproc-per-node N -- train ...")
			}
			if args[0] == "launch" {
				return fmt.Errorf("launch: refusing to launch `launch` itself")
			}
			self, err := os.Executable()
			if err != nil {
				return fmt.Errorf("launch: locating this executable: %w", err)
			}
			sigs := make(chan os.Signal, 4)
			signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
			defer signal.Stop(sigs)
			res, err := launch.Run(context.Background(), launch.Config{
				NProc: c.Int("nproc-per-node"), MasterAddr: c.String("master-addr"), MasterPort: c.Int("master-port"),
				Program: self, Args: args, Stdout: c.App.Writer, Stderr: c.App.ErrWriter, Grace: c.Duration("grace"),
			}, sigs)
			if err != nil {
				return err
			}
			if res.ExitCode != 0 {
				return cli.Exit(fmt.Sprintf("launch: rank %d failed with status %d", res.FailedRank, res.ExitCode), res.ExitCode)
			}
			return nil
		},
	}
}
