package cli

import (
	"io"
	"os"

	"golang.org/x/term"
)

// colorFor says whether output to w gets colour: only on a terminal, and
// never when NO_COLOR is set (https://no-color.org).
func colorFor(w io.Writer) bool {
	if _, set := os.LookupEnv("NO_COLOR"); set {
		return false
	}
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}
