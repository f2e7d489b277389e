// Package ptfile reads and writes PyTorch checkpoint files in pure Go.
//
// It understands the zip container that torch.save has written since
// PyTorch 1.6 (a top folder holding data.pkl, data/<key> storages and a
// version record) and the data.pkl of TorchScript archives such as OpenAI's
// CLIP .pt files. Pickles are decoded by a small, bounds-checked unpickler
// of its own: unknown Python classes become opaque *Object values instead of
// errors, so training checkpoints that pickle optimizers or schedulers
// (Dassl, CLIP-AGIQA) load fine.
//
// Tensors come out as raw, contiguous little-endian bytes (see Tensor); the
// cgo torch package turns them into libtorch tensors. Save writes files that
// Python's torch.load reads back.
package ptfile
