package kubetest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// procs are the processes a test environment started, each logging to
// DIR/logs/NAME.log, stopped by PID in the reverse order.
type procs struct {
	dir  string
	list []*proc
}

type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	log  string
}

func (p *procs) start(name, bin string, args ...string) error {
	return p.startEnv(name, nil, bin, args...)
}

// startEnv starts bin with extra environment variables.
func (p *procs) startEnv(name string, env []string, bin string, args ...string) error {
	logs := filepath.Join(p.dir, "logs")
	if err := os.MkdirAll(logs, 0o755); err != nil {
		return err
	}
	path := filepath.Join(logs, name+".log")
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), env...)
	// Its own process group, so a ^C to the tests reaches us, not it: we
	// stop it in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", name, err)
	}
	pr := &proc{name: name, cmd: cmd, done: make(chan struct{}), log: path}
	go func() { cmd.Wait(); close(pr.done) }()
	p.list = append(p.list, pr)
	return nil
}

// stop stops the named process, by its PID, and forgets it.
func (p *procs) stop(name string) {
	for i := len(p.list) - 1; i >= 0; i-- {
		if p.list[i].name == name {
			p.list[i].stop()
			p.list = append(p.list[:i], p.list[i+1:]...)
			return
		}
	}
}

// exited says whether the named process has exited, and how.
func (p *procs) exited(name string) (bool, string) {
	for _, pr := range p.list {
		if pr.name == name {
			select {
			case <-pr.done:
				return true, pr.cmd.ProcessState.String()
			default:
				return false, ""
			}
		}
	}
	return true, "never started"
}

func (pr *proc) stop() {
	pr.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-pr.done:
	case <-time.After(15 * time.Second):
		pr.cmd.Process.Kill()
		<-pr.done
	}
}

func (p *procs) stopAll() {
	for i := len(p.list) - 1; i >= 0; i-- {
		p.list[i].stop()
	}
	p.list = nil
}

// tails is the end of every process's log, n bytes at most each.
func (p *procs) tails(n int) string {
	var b strings.Builder
	for _, pr := range p.list {
		fmt.Fprintf(&b, "--- %s (%s)\n%s\n", pr.name, pr.log, tailFile(pr.log, n))
	}
	return b.String()
}

func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	return tail(b, n)
}
