package cli

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/viper"
	"golang.org/x/term"
)

// settings resolves a command's configuration in one place: flags set on
// the command line win, then MESH_* environment variables, then the
// --config file, then flag defaults.
func settings(cmd *cobra.Command) (*viper.Viper, error) {
	v := viper.New()
	v.SetEnvPrefix("MESH")
	v.SetEnvKeyReplacer(strings.NewReplacer("-", "_"))
	v.AutomaticEnv()
	if err := v.BindPFlags(cmd.Flags()); err != nil {
		return nil, err
	}
	if err := v.BindPFlags(cmd.InheritedFlags()); err != nil {
		return nil, err
	}
	if path := v.GetString("config"); path != "" {
		v.SetConfigFile(path)
		v.SetConfigType("yaml")
		if err := v.ReadInConfig(); err != nil {
			return nil, fmt.Errorf("reading config file %s: %w", path, err)
		}
		for _, k := range configKeys(v) {
			if cmd.Flags().Lookup(k) == nil && cmd.InheritedFlags().Lookup(k) == nil {
				return nil, fmt.Errorf("config file %s: unknown key %q for %s", path, k, cmd.CommandPath())
			}
		}
	}
	return v, nil
}

// configKeys returns the top-level keys the config file itself set.
func configKeys(v *viper.Viper) []string {
	var keys []string
	for k := range v.AllSettings() {
		if v.InConfig(k) {
			keys = append(keys, k)
		}
	}
	return keys
}

// listOf reads a list setting: repeated flags, or a comma- or
// space-separated string from the environment.
func listOf(v *viper.Viper, key string) []string {
	var out []string
	for _, item := range v.GetStringSlice(key) {
		for f := range strings.FieldsFuncSeq(item, func(r rune) bool { return r == ',' || r == ' ' }) {
			out = append(out, f)
		}
	}
	return out
}

// newLogger builds the logger the settings ask for.
// settingsAndLogger is settings and newLogger, for the long-running
// commands that log.
func settingsAndLogger(cmd *cobra.Command, w io.Writer) (*viper.Viper, *slog.Logger, error) {
	v, err := settings(cmd)
	if err != nil {
		return nil, nil, err
	}
	log, err := newLogger(v, w)
	return v, log, err
}

// outputFormat reads --output and refuses a value not among formats ("" is
// a format of its own where a command allows it); hint says what to use.
func outputFormat(v *viper.Viper, hint string, formats ...string) (string, error) {
	format := v.GetString("output")
	if !slices.Contains(formats, format) {
		return "", usagef("--output %q: use %s", format, hint)
	}
	return format, nil
}

func newLogger(v *viper.Viper, w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(v.GetString("log-level"))); err != nil {
		return nil, usagef("--log-level %q: want debug, info, warn or error", v.GetString("log-level"))
	}
	opts := &slog.HandlerOptions{Level: level}
	switch format := v.GetString("log-format"); format {
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "auto", "":
		if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
			return slog.New(slog.NewTextHandler(w, opts)), nil
		}
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	default:
		return nil, usagef("--log-format %q: want text, json or auto", format)
	}
}

var errNoArgs = errors.New("this command takes no arguments")

func noArgs(_ *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usageError{fmt.Errorf("%w (got %q)", errNoArgs, args)}
	}
	return nil
}
