package benchkit

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
)

// Reference drives bench/reference.py --serve: the PyTorch eager reference,
// one JSON request and one JSON reply per line.
type Reference struct {
	cmd     *exec.Cmd
	in      io.WriteCloser
	out     *bufio.Reader
	stderr  *tailBuffer
	exitErr error // set once the process was waited for
	exited  bool
}

// RefReply holds the fields any reply may carry.
type RefReply struct {
	OK       bool               `json:"ok"`
	Error    string             `json:"error"`
	Times    []float64          `json:"times"`
	CPU      []float64          `json:"cpu"`
	Phases   map[string]float64 `json:"phases"` // process CPU seconds per timed call, where the script reports them
	HWMKB    int64              `json:"hwm_kb"`
	HWMReset bool               `json:"hwm_reset"`
	Flops    float64            `json:"flops"`
	Features []float64          `json:"features"`
	Images   int                `json:"images"`
	Threads  int                `json:"threads"`
	Torch    string             `json:"torch"`
	LoadS    float64            `json:"load_s"`
	Config   json.RawMessage    `json:"config"`
	RSSKB    int64              `json:"rss_kb"`
}

// StartReference starts `python script --serve` with extra environment
// variables (KEY=VALUE).
func StartReference(python, script string, env []string) (*Reference, error) {
	if _, err := os.Stat(script); err != nil {
		return nil, fmt.Errorf("reference script: %w", err)
	}
	return StartReferenceCommand([]string{python, script, "--serve"}, env)
}

// StartReferenceCommand starts any program that speaks reference.py's
// protocol on stdin/stdout (argv[0] is the program), with extra environment
// variables (KEY=VALUE).
func StartReferenceCommand(argv []string, env []string) (*Reference, error) {
	if len(argv) == 0 {
		return nil, errors.New("reference: empty command")
	}
	python, script := argv[0], strings.Join(argv[1:], " ")
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	tb := &tailBuffer{max: 8 << 10}
	cmd.Stderr = tb
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s %s: %w", python, script, err)
	}
	return &Reference{cmd: cmd, in: in, out: bufio.NewReaderSize(out, 1<<20), stderr: tb}, nil
}

// Call sends req and decodes the reply into RefReply; a reply with ok=false
// or a dead process is an error carrying the script's message.
func (r *Reference) Call(req map[string]any) (*RefReply, error) {
	line, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	if r.exited {
		return nil, fmt.Errorf("reference %v: the script has exited: %v", req["op"], r.exitErr)
	}
	if _, err := r.in.Write(append(line, '\n')); err != nil {
		r.wait()
		return nil, fmt.Errorf("reference %v: write: %w (stderr: %s)", req["op"], err, r.stderr.String())
	}
	resp, err := r.out.ReadBytes('\n')
	if err != nil {
		r.wait() // collects the whole stderr
		return nil, fmt.Errorf("reference %v: no reply: %w (stderr: %s)", req["op"], err, r.stderr.String())
	}
	var rep RefReply
	if err := json.Unmarshal(resp, &rep); err != nil {
		return nil, fmt.Errorf("reference %v: bad reply %.200q: %w", req["op"], resp, err)
	}
	if !rep.OK {
		return nil, fmt.Errorf("reference %v: %s", req["op"], rep.Error)
	}
	return &rep, nil
}

// wait closes stdin and reaps the process once.
func (r *Reference) wait() {
	if r.exited {
		return
	}
	_ = r.in.Close()
	r.exitErr = r.cmd.Wait()
	r.exited = true
}

// Close asks the script to quit and waits for it; an abnormal exit (now or
// earlier) is an error with the script's stderr. Closing twice is harmless.
func (r *Reference) Close() error {
	if r == nil || r.cmd == nil {
		return nil
	}
	if !r.exited {
		_, _ = r.in.Write([]byte(`{"op":"quit"}` + "\n"))
	}
	r.wait()
	err := r.exitErr
	r.cmd = nil
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return fmt.Errorf("reference exited: %w (stderr: %s)", err, r.stderr.String())
	}
	return err
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

// Write keeps the tail of what was written.
func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = append(t.b[:0], t.b[len(t.b)-t.max:]...)
	}
	return len(p), nil
}

// String is the kept tail, trimmed.
func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.TrimSpace(string(t.b))
}
