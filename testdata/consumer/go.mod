// A separate module that uses clipagiqa the way a Go user would: through the
// module path, linking the native libraries only via pkg-config (clipagiqa.pc).
// `make test-package` builds it inside a clean Debian root with the .debs.
module example.com/clipagiqa-consumer

go 1.26.8

require github.com/clipagiqa/clipagiqa v0.0.0-00010101000000-000000000000

require (
	github.com/wangkuiyi/gotorch v0.0.0-20201028015551-9afed2f3ad7b // indirect
	golang.org/x/image v0.47.0 // indirect
)

replace github.com/clipagiqa/clipagiqa => ../..
