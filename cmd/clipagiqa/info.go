package main

import (
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"strconv"

	"github.com/clipagiqa/clipagiqa/torch"
	"github.com/urfave/cli/v2"
)

type info struct {
	Version     string `json:"version"`
	Go          string `json:"go"`
	Torch       string `json:"libtorch"`
	Shim        string `json:"shim"`
	ShimOK      bool   `json:"shim_ok"`
	CUDA        bool   `json:"cuda_available"`
	CUDADevices int    `json:"cuda_devices"`
	FusedAttn   bool   `json:"fused_attention"`
	Threads     int    `json:"threads"`
}

func runtimeInfo() info {
	return info{
		Version: version, Go: runtime.Version(), Torch: torch.TorchVersion(),
		Shim: torch.NativeShimVersion(), ShimOK: torch.CheckRuntime() == nil,
		CUDA: torch.CUDAAvailable(), CUDADevices: torch.CUDADeviceCount(),
		FusedAttn: torch.HasFusedAttention(), Threads: torch.NumThreads(),
	}
}

var threadsFlag = &cli.IntFlag{Name: "threads", Usage: "CPU threads for libtorch (0: one per core)"}

var hostCacheFlag = &cli.Int64Flag{Name: "host-cache-mib",
	Usage: "cap in `MiB` on the freed large CPU tensor blocks kept for reuse (glibc would unmap them and fault them in again on the next step); " +
		"the cache never holds more than the gap below the peak in use, so it does not raise peak memory. 0: no further cap; -1: off (libtorch's own allocator)"}

// applyHostCache sets up torch's host cache from --host-cache-mib, on the
// commands that have the flag.
func applyHostCache(c *cli.Context) error {
	if !definesFlag(c, hostCacheFlag.Name) {
		return nil
	}
	n := c.Int64(hostCacheFlag.Name)
	if n < 0 {
		return torch.DisableHostCache()
	}
	if n > 1<<30 {
		return fmt.Errorf("--%s %d: too large", hostCacheFlag.Name, n)
	}
	return torch.EnableHostCache(torch.HostCache{IdleLimitBytes: n << 20})
}

func definesFlag(c *cli.Context, name string) bool {
	if c.Command == nil {
		return false
	}
	for _, f := range c.Command.Flags {
		for _, n := range f.Names() {
			if n == name {
				return true
			}
		}
	}
	return false
}

// applyThreads sets libtorch's thread count: --threads, else one per core
// (libtorch's own default can be a single thread on small VMs), and the host
// cache where the command has --host-cache-mib.
func applyThreads(c *cli.Context) error {
	if err := applyHostCache(c); err != nil {
		return err
	}
	n := c.Int("threads")
	if n <= 0 {
		// Processes sharing this machine (launch, torchrun) split its cores.
		n = runtime.NumCPU()
		if local, err := strconv.Atoi(os.Getenv("LOCAL_WORLD_SIZE")); err == nil && local > 1 {
			n = max(1, n/local)
		}
	}
	return torch.SetNumThreads(n)
}

func infoCommand() *cli.Command {
	return &cli.Command{
		Name:  "info",
		Usage: "print Go, libtorch and shim versions, CUDA availability and thread count",
		Flags: []cli.Flag{
			formatFlag(formatTable, formatJSON), jsonAliasFlag(),
			threadsFlag,
		},
		Action: func(c *cli.Context) error {
			if err := applyThreads(c); err != nil {
				return err
			}
			format, err := outputFormat(c, formatTable, formatJSON)
			if err != nil {
				return err
			}
			in := runtimeInfo()
			if format == formatJSON {
				enc := json.NewEncoder(c.App.Writer)
				enc.SetIndent("", "  ")
				return enc.Encode(in)
			}
			w := c.App.Writer
			fmt.Fprintf(w, "clipagiqa       %s\n", in.Version)
			fmt.Fprintf(w, "go              %s\n", in.Go)
			fmt.Fprintf(w, "libtorch        %s\n", in.Torch)
			fmt.Fprintf(w, "shim            %s (expected %s, ok=%v)\n", in.Shim, torch.ShimVersion, in.ShimOK)
			fmt.Fprintf(w, "cuda            %v (%d devices)\n", in.CUDA, in.CUDADevices)
			fmt.Fprintf(w, "fused attention %v\n", in.FusedAttn)
			fmt.Fprintf(w, "threads         %d\n", in.Threads)
			if !in.ShimOK {
				return torch.CheckRuntime()
			}
			return nil
		},
	}
}
