// Package dist binds libtorch's distributed engine, c10d: a process group
// (Gloo for CPU tensors, NCCL for CUDA tensors where libtorch has it) joined
// from the environment torchrun sets, and the collectives data-parallel
// training needs. Every collective is bounded by the group's timeout, so a
// dead peer yields an error (naming the lost rank when its heartbeat tells)
// instead of a hang.
package dist

// #cgo CFLAGS: -I${SRCDIR}/../../cpp
// #cgo pkg-config: clipagiqa
// #include <stdlib.h>
// #include "dist.h"
import "C"

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync"
	"time"
	"unsafe"

	"github.com/clipagiqa/clipagiqa/torch"
)

// Backend selects the c10d process group implementation.
type Backend int

const (
	// Gloo reduces CPU tensors over TCP.
	Gloo Backend = C.CT_DIST_GLOO
	// NCCL reduces CUDA tensors; only in builds against a CUDA libtorch.
	NCCL Backend = C.CT_DIST_NCCL
)

// String names the backend as torch.distributed does.
func (b Backend) String() string {
	switch b {
	case Gloo:
		return "gloo"
	case NCCL:
		return "nccl"
	}
	return "backend(" + strconv.Itoa(int(b)) + ")"
}

// HasGloo reports whether the native library was compiled with Gloo (CPU).
func HasGloo() bool { return C.ct_dist_has_gloo() != 0 }

// HasNCCL reports whether the native library was compiled with NCCL.
func HasNCCL() bool { return C.ct_dist_has_nccl() != 0 }

// ReduceOp is the reduction of AllReduce.
type ReduceOp int

const (
	// Sum adds the tensors of all ranks.
	Sum ReduceOp = C.CT_DIST_SUM
	// Avg adds them and divides by the world size (floor for integers).
	Avg ReduceOp = C.CT_DIST_AVG
	// Max keeps the element-wise maximum.
	Max ReduceOp = C.CT_DIST_MAX
	// Min keeps the element-wise minimum.
	Min ReduceOp = C.CT_DIST_MIN
)

// DefaultTimeout bounds the rendezvous and each collective unless
// Options.Timeout or CLIPAGIQA_DIST_TIMEOUT says otherwise.
const DefaultTimeout = 5 * time.Minute

// DefaultHeartbeat is how often each rank marks itself alive in the store.
const DefaultHeartbeat = 500 * time.Millisecond

// Env is the launch contract of torchrun (and of Kubernetes PyTorchJob).
type Env struct {
	Rank       int    // RANK: this process's index in [0, WorldSize)
	WorldSize  int    // WORLD_SIZE: number of processes
	LocalRank  int    // LOCAL_RANK: index on this machine (picks the GPU)
	MasterAddr string // MASTER_ADDR: host of rank 0, which hosts the store
	MasterPort int    // MASTER_PORT: TCP port of the store
	// AgentStore is set when the launcher hosts the store itself
	// (TORCHELASTIC_USE_AGENT_STORE=True, torchrun's static rendezvous): every
	// rank connects as a client, under the prefix /worker/attempt_<restart>.
	AgentStore   bool
	RestartCount int // TORCHELASTIC_RESTART_COUNT
}

// Distributed reports whether the environment asks for more than one process.
func (e Env) Distributed() bool { return e.WorldSize > 1 }

// EnvFromOS reads the torchrun variables. Without WORLD_SIZE it returns a
// single-process Env; a WORLD_SIZE > 1 with a missing or malformed variable
// is an error naming it.
func EnvFromOS() (Env, error) { return envFrom(os.Getenv) }

func envFrom(get func(string) string) (Env, error) {
	e := Env{WorldSize: 1, MasterAddr: "127.0.0.1", MasterPort: 29500}
	num := func(name string, dst *int, required bool) error {
		v := get(name)
		if v == "" {
			if required {
				return fmt.Errorf("dist: WORLD_SIZE=%d but %s is not set", e.WorldSize, name)
			}
			return nil
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return fmt.Errorf("dist: %s=%q is not a non-negative integer", name, v)
		}
		*dst = n
		return nil
	}
	if err := num("WORLD_SIZE", &e.WorldSize, false); err != nil {
		return Env{}, err
	}
	if e.WorldSize < 1 {
		return Env{}, fmt.Errorf("dist: WORLD_SIZE must be at least 1, got %d", e.WorldSize)
	}
	multi := e.WorldSize > 1
	if err := num("RANK", &e.Rank, multi); err != nil {
		return Env{}, err
	}
	if err := num("LOCAL_RANK", &e.LocalRank, false); err != nil {
		return Env{}, err
	}
	if err := num("MASTER_PORT", &e.MasterPort, false); err != nil {
		return Env{}, err
	}
	if a := get("MASTER_ADDR"); a != "" {
		e.MasterAddr = a
	} else if multi && e.Rank != 0 {
		return Env{}, fmt.Errorf("dist: WORLD_SIZE=%d but MASTER_ADDR is not set", e.WorldSize)
	}
	e.AgentStore = get("TORCHELASTIC_USE_AGENT_STORE") == "True"
	if err := num("TORCHELASTIC_RESTART_COUNT", &e.RestartCount, e.AgentStore && multi); err != nil {
		return Env{}, err
	}
	if e.Rank >= e.WorldSize {
		return Env{}, fmt.Errorf("dist: RANK=%d is outside [0, WORLD_SIZE=%d)", e.Rank, e.WorldSize)
	}
	if e.MasterPort < 1 || e.MasterPort > 65535 {
		return Env{}, fmt.Errorf("dist: MASTER_PORT=%d is not a TCP port", e.MasterPort)
	}
	return e, nil
}

// Options tune a process group.
type Options struct {
	Backend   Backend       // Gloo unless NCCL is asked for
	Timeout   time.Duration // rendezvous and per-collective bound; 0: DefaultTimeout or CLIPAGIQA_DIST_TIMEOUT
	Heartbeat time.Duration // liveness beat used to name lost ranks; 0: DefaultHeartbeat, < 0: off
}

// TimeoutFromOS reads CLIPAGIQA_DIST_TIMEOUT (a Go duration, e.g. "90s"),
// returning DefaultTimeout when it is unset.
func TimeoutFromOS() (time.Duration, error) {
	v := os.Getenv("CLIPAGIQA_DIST_TIMEOUT")
	if v == "" {
		return DefaultTimeout, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("dist: CLIPAGIQA_DIST_TIMEOUT=%q is not a positive duration", v)
	}
	return d, nil
}

// Group is a joined process group. A Group of world size 1 made by Local
// has no native side: its collectives return their input unchanged.
type Group struct {
	mu      sync.Mutex
	h       C.ct_dist_group
	rank    int
	world   int
	timeout time.Duration
	closed  bool
}

// Local is the single-process group: rank 0 of 1, collectives are identities.
func Local() *Group { return &Group{world: 1} }

// Init joins the process group described by env. With env.WorldSize == 1 it
// returns Local() without opening any socket.
func Init(env Env, opts Options) (*Group, error) {
	if env.WorldSize <= 1 {
		return Local(), nil
	}
	if err := torch.CheckRuntime(); err != nil {
		return nil, err
	}
	if opts.Timeout == 0 {
		d, err := TimeoutFromOS()
		if err != nil {
			return nil, err
		}
		opts.Timeout = d
	}
	hb := opts.Heartbeat
	if hb == 0 {
		hb = DefaultHeartbeat
	}
	if hb < 0 {
		hb = 0
	}
	addr := C.CString(env.MasterAddr)
	defer C.free(unsafe.Pointer(addr))
	prefix, agent := "", C.int32_t(0)
	if env.AgentStore {
		prefix, agent = fmt.Sprintf("/worker/attempt_%d", env.RestartCount), 1
	}
	cprefix := C.CString(prefix)
	defer C.free(unsafe.Pointer(cprefix))
	var h C.ct_dist_group
	if err := cErr(C.ct_dist_init(addr, C.int32_t(env.MasterPort), C.int32_t(env.Rank), C.int32_t(env.WorldSize),
		C.int32_t(opts.Backend), C.int64_t(opts.Timeout.Milliseconds()), C.int64_t(hb.Milliseconds()), agent, cprefix, &h)); err != nil {
		return nil, err
	}
	return &Group{h: h, rank: env.Rank, world: env.WorldSize, timeout: opts.Timeout}, nil
}

// InitFromOS joins the group the torchrun variables describe (Local when
// WORLD_SIZE is unset or 1).
func InitFromOS(opts Options) (*Group, error) {
	env, err := EnvFromOS()
	if err != nil {
		return nil, err
	}
	return Init(env, opts)
}

// Rank is this process's index in the group.
func (g *Group) Rank() int { return g.rank }

// WorldSize is the number of processes in the group.
func (g *Group) WorldSize() int { return g.world }

// IsMain reports whether this is rank 0, the one that writes shared files.
func (g *Group) IsMain() bool { return g.rank == 0 }

// Timeout is the bound on each collective (0 for Local).
func (g *Group) Timeout() time.Duration { return g.timeout }

// Close leaves the group and frees its sockets and threads. Closing twice, or
// closing Local, is harmless.
func (g *Group) Close() error {
	if g == nil {
		return nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return nil
	}
	g.closed = true
	if g.h != nil {
		C.ct_dist_free(g.h)
		g.h = nil
	}
	return nil
}

func cErr(e *C.char) error {
	if e == nil {
		return nil
	}
	msg := C.GoString(e)
	C.free(unsafe.Pointer(e))
	return errors.New(msg)
}

// native returns the group handle, or nil for Local, or an error once closed.
func (g *Group) native() (C.ct_dist_group, error) {
	if g == nil {
		return nil, errors.New("dist: nil group")
	}
	if g.closed {
		return nil, errors.New("dist: process group is closed")
	}
	return g.h, nil
}

func handles(ts []*torch.Tensor) ([]C.ct_tensor, error) {
	hs := make([]C.ct_tensor, len(ts))
	for i, t := range ts {
		p, err := t.NativeHandle()
		if err != nil {
			return nil, fmt.Errorf("dist: tensor %d: %w", i, err)
		}
		hs[i] = C.ct_tensor(p)
	}
	return hs, nil
}

func first(hs []C.ct_tensor) *C.ct_tensor {
	if len(hs) == 0 {
		return nil
	}
	return &hs[0]
}

// AllReduce reduces each tensor in place across all ranks. Tensors must be
// dense and contiguous; Avg divides the sum by the world size.
func (g *Group) AllReduce(op ReduceOp, ts ...*torch.Tensor) error {
	h, err := g.native()
	if err != nil || h == nil {
		return err
	}
	hs, err := handles(ts)
	if err != nil {
		return err
	}
	err = cErr(C.ct_dist_all_reduce(h, first(hs), C.int64_t(len(hs)), C.int32_t(op)))
	runtime.KeepAlive(ts)
	return err
}

// Broadcast overwrites each tensor with root's copy.
func (g *Group) Broadcast(root int, ts ...*torch.Tensor) error {
	h, err := g.native()
	if err != nil {
		return err
	}
	if root < 0 || root >= g.world {
		return fmt.Errorf("dist: broadcast root %d outside [0, %d)", root, g.world)
	}
	if h == nil {
		return nil
	}
	hs, err := handles(ts)
	if err != nil {
		return err
	}
	err = cErr(C.ct_dist_broadcast(h, first(hs), C.int64_t(len(hs)), C.int32_t(root)))
	runtime.KeepAlive(ts)
	return err
}

// AllGather writes every rank's input into out, whose first dimension is
// WorldSize times input's: rank r's rows are [r*n, (r+1)*n).
func (g *Group) AllGather(input, out *torch.Tensor) error {
	h, err := g.native()
	if err != nil {
		return err
	}
	if h == nil {
		return out.CopyFrom(input)
	}
	hs, err := handles([]*torch.Tensor{input, out})
	if err != nil {
		return err
	}
	err = cErr(C.ct_dist_all_gather(h, hs[0], hs[1]))
	runtime.KeepAlive(input)
	runtime.KeepAlive(out)
	return err
}

// Barrier returns once every rank has called it (or the timeout passed).
func (g *Group) Barrier() error {
	h, err := g.native()
	if err != nil || h == nil {
		return err
	}
	return cErr(C.ct_dist_barrier(h))
}

// LostPeers probes the heartbeats for about three beats and returns the ranks
// that stopped beating; storeLost is true when rank 0's store is unreachable.
func (g *Group) LostPeers() (lost []int, storeLost bool, err error) {
	h, err := g.native()
	if err != nil || h == nil {
		return nil, false, err
	}
	var mask C.uint64_t
	var sl C.int32_t
	if err := cErr(C.ct_dist_probe_peers(h, &mask, &sl)); err != nil {
		return nil, false, err
	}
	for r := 0; r < 64 && r < g.world; r++ {
		if uint64(mask)>>r&1 == 1 {
			lost = append(lost, r)
		}
	}
	return lost, sl != 0, nil
}
