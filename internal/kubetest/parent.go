package kubetest

import (
	"os/exec"
	"syscall"
)

// dieWithParent makes cmd end when the process that started it does: a
// test killed by go test's timeout does not leave its build running (with
// the build lock released, another run would start a second one).
func dieWithParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
