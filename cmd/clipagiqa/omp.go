package main

import (
	"os"
	"syscall"
)

// ompWaitPolicy is the OpenMP wait policy the CLI runs libtorch's thread
// pool with unless OMP_WAIT_POLICY is set. libgomp's default lets idle
// workers spin after every parallel region; with small batches (hundreds of
// short regions per image) the spinning threads take the cores from the ones
// doing the work. In probes on a 2-core machine (two processes alternating,
// 10 calls each) passive made RN50 IP-IQA scoring at batch 1 1.08–1.31×
// faster and left a batch-8 training step unchanged (README, Speed).
const ompWaitPolicy = "PASSIVE"

// keepOMPDefaultEnv, set to 1, keeps libgomp's own default (the benchmark's
// like-for-like process uses it).
const keepOMPDefaultEnv = "CLIPAGIQA_OMP_DEFAULT"

// withOMPWaitPolicy re-executes this program with OMP_WAIT_POLICY set when
// the environment does not choose one: libgomp reads it only while it loads,
// before main runs. It returns only when it did not re-execute.
func withOMPWaitPolicy() {
	if _, set := os.LookupEnv("OMP_WAIT_POLICY"); set || os.Getenv(keepOMPDefaultEnv) == "1" {
		return
	}
	self, err := os.Executable()
	if err != nil {
		return // run with libgomp's default rather than not at all
	}
	env := append(os.Environ(), "OMP_WAIT_POLICY="+ompWaitPolicy)
	_ = syscall.Exec(self, os.Args, env) // returns only on failure
}
