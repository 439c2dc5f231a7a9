// Package cli holds mesh's cobra commands: flags become an options struct,
// the options call a package that does the work, and a printer writes the
// result. No business logic lives here.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/spf13/viper"
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
	return runRoot(ctx, NewRootCommand(s), args, s)
}

// Main runs a binary of its own whose command tree root builds (the
// controller's: cmd/mesh-controller), with mesh's configuration flags,
// logging and exit codes, and returns the exit code.
func Main(root func(Streams) *cobra.Command) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	s := Streams{In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr}
	cmd := root(s)
	setUp(cmd, s)
	return runRoot(ctx, cmd, os.Args[1:], s)
}

func runRoot(ctx context.Context, cmd *cobra.Command, args []string, s Streams) int {
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
	}
	setUp(root, s)
	root.AddCommand(newVersionCommand(s), newProxyCommand(s), newIdentityCommand(s),
		newDemoCommand(s), newStatCommand(s), newRoutesCommand(s), newEdgesCommand(s), newAuthzCommand(s), newTapCommand(s), newTopCommand(s), newCheckCommand(s), newDashboardCommand(s),
		newDiagnosticsCommand(s),
		newInjectCommand(s), newUninjectCommand(s), newAwaitCommand(s), newInitCommand(s),
		newInstallCommand(s), newUninstallCommand(s), newControllerMovedCommand(s))
	root.CompletionOptions.HiddenDefaultCmd = false
	return root
}

// setUp gives a root command mesh's streams, usage errors and the flags
// every command shares.
func setUp(root *cobra.Command, s Streams) {
	root.SilenceUsage, root.SilenceErrors = true, true
	root.SetIn(s.In)
	root.SetOut(s.Out)
	root.SetErr(s.ErrOut)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.PersistentFlags().String("config", "", "configuration file (YAML; keys are flag names)")
	root.PersistentFlags().String("log-level", "info", "log level: debug, info, warn or error")
	root.PersistentFlags().String("log-format", "auto", "log format: text, json, or auto (text on a terminal, JSON otherwise)")
}

// UsageError marks err as a mistake in how a command was called (exit
// code 2, and a pointer to --help).
func UsageError(err error) error { return usageError{err} }

// SettingsAndLogger resolves a command's configuration (flags, MESH_*
// variables, --config) and builds its logger, for the commands of other
// binaries (cmd/mesh-controller).
func SettingsAndLogger(cmd *cobra.Command, w io.Writer) (*viper.Viper, *slog.Logger, error) {
	return settingsAndLogger(cmd, w)
}

// NoArgs refuses arguments, as a usage error.
func NoArgs(cmd *cobra.Command, args []string) error { return noArgs(cmd, args) }

// ProxyVersion is the proxy version a flag names, else this binary's.
func ProxyVersion(flag string) string { return proxyVersion(flag) }

// newControllerMovedCommand says where the controller went: it is a
// binary of its own, so that every sidecar running this one does not load
// it.
func newControllerMovedCommand(Streams) *cobra.Command {
	return &cobra.Command{
		Use:                "controller",
		Short:              "The control plane is the mesh-controller binary (in the image beside this one)",
		Hidden:             true,
		DisableFlagParsing: true,
		RunE: func(*cobra.Command, []string) error {
			return errors.New("the controller is a binary of its own: mesh-controller, at /mesh-controller in the image (go build ./cmd/mesh-controller); it takes the flags mesh controller took")
		},
	}
}
