// Package cli holds mesh's cobra commands: flags become an options struct,
// the options call a package that does the work, and a printer writes the
// result. No business logic lives here.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

// Streams are a command's input and outputs; tests pass buffers.
type Streams struct {
	In     io.Reader
	Out    io.Writer
	ErrOut io.Writer
}

// usageError marks errors in how the command was called (exit code 2).
type usageError struct{ error }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// Execute runs mesh with os.Args and returns the process exit code: 0 on
// success, 1 on failure, 2 on bad usage.
func Execute() int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	return Run(ctx, os.Args[1:], Streams{In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr})
}

// Run runs mesh with the given arguments and streams.
func Run(ctx context.Context, args []string, s Streams) int {
	cmd := NewRootCommand(s)
	cmd.SetArgs(args)
	ran, err := cmd.ExecuteContextC(ctx)
	if err == nil {
		return 0
	}
	if errors.Is(err, errChecksFailed) {
		return 1 // the results say what failed
	}
	fmt.Fprintf(s.ErrOut, "Error: %v\n", err)
	var ue usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(s.ErrOut, "Run '%s --help' for usage.\n", ran.CommandPath())
		return 2
	}
	return 1
}

// NewRootCommand builds the command tree.
func NewRootCommand(s Streams) *cobra.Command {
	root := &cobra.Command{
		Use:   "mesh",
		Short: "A service mesh in one binary",
		Long: `mesh gives services discovery, load balancing, failure handling, mutual TLS
and metrics without changing their code, through a sidecar proxy beside each
workload. One binary is the installer, the injector, the proxy, the control
plane and the diagnostics.

Configuration comes from flags, then MESH_* environment variables (the flag
name in upper case with - as _, for example MESH_LOG_LEVEL), then the file
named by --config (YAML keys are flag names).`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetIn(s.In)
	root.SetOut(s.Out)
	root.SetErr(s.ErrOut)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.PersistentFlags().String("config", "", "configuration file (YAML; keys are flag names)")
	root.PersistentFlags().String("log-level", "info", "log level: debug, info, warn or error")
	root.PersistentFlags().String("log-format", "auto", "log format: text, json, or auto (text on a terminal, JSON otherwise)")
	root.AddCommand(newVersionCommand(s), newProxyCommand(s), newIdentityCommand(s),
		newDemoCommand(s), newStatCommand(s), newEdgesCommand(s), newTapCommand(s), newTopCommand(s), newCheckCommand(s),
		newDiagnosticsCommand(s),
		newInjectCommand(s), newUninjectCommand(s), newAwaitCommand(s), newInitCommand(s),
		newInstallCommand(s), newUninstallCommand(s), newControllerCommand(s))
	root.CompletionOptions.HiddenDefaultCmd = false
	return root
}
