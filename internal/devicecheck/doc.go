// Package devicecheck holds the checks of `make gpu-check`: CLIP and
// CLIP-AGIQA parity, training and memory on the device named by
// $CLIPAGIQA_TEST_DEVICE (default cpu), and encoder/training throughput
// benchmarks. Its tests are skipped when that device is CUDA and CUDA is
// absent; `make gpu-check DEVICE=cpu` runs them all on the CPU.
package devicecheck

// DeviceEnv names the device the checks run on: cpu, cuda or cuda:N.
const DeviceEnv = "CLIPAGIQA_TEST_DEVICE"
