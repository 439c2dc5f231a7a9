package cli

import (
	"encoding/json"
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// Version is set at build time with -ldflags "-X github.com/meshproj/mesh/cli.Version=v1.2.3".
var Version = ""

// VersionInfo describes this build.
type VersionInfo struct {
	Version  string `json:"version"`
	Commit   string `json:"commit,omitempty"`
	Go       string `json:"go"`
	Platform string `json:"platform"`
}

// BuildVersion returns what is known about this binary.
func BuildVersion() VersionInfo {
	v := VersionInfo{Version: Version, Go: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if bi, ok := debug.ReadBuildInfo(); ok {
		if v.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			v.Version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				v.Commit = s.Value
			}
		}
	}
	if v.Version == "" {
		v.Version = "dev"
	}
	return v
}

func newVersionCommand(s Streams) *cobra.Command {
	var output string
	var short bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the version of this mesh binary",
		Args:  noArgs,
		RunE: func(*cobra.Command, []string) error {
			v := BuildVersion()
			switch {
			case output == "json":
				enc := json.NewEncoder(s.Out)
				enc.SetIndent("", "  ")
				return enc.Encode(v)
			case output != "":
				return usagef("--output %q: want json, or nothing for text", output)
			case short:
				fmt.Fprintln(s.Out, v.Version)
			default:
				fmt.Fprintf(s.Out, "mesh %s (%s, %s)\n", v.Version, v.Go, v.Platform)
				if v.Commit != "" {
					fmt.Fprintf(s.Out, "commit %s\n", v.Commit)
				}
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "output format: json")
	cmd.Flags().BoolVar(&short, "short", false, "print the version alone")
	return cmd
}
