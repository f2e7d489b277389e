//go:build !cgo

package torch

// This package calls libtorch through cgo, so it cannot build with
// CGO_ENABLED=0. The identifier below is undefined on purpose: the compiler
// prints its name, which says what to do. The file name sorts first so that
// this error is printed before the undefined names it causes elsewhere.
var _ = clipagiqa_needs_cgo__set_CGO_ENABLED_1_and_install_gcc_pkg_config_and_clipagiqa_pc__see_README_Use_from_Go
