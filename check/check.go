// Package check runs `mesh check`: declarative checks, each with a
// category, a description, a hint that says how to fix a failure, and a
// function that looks. Checks run in order; a category stops at its first
// failure when later checks depend on it.
package check

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/charmbracelet/lipgloss"
)

// Status of a check.
type Status string

// Statuses.
const (
	OK   Status = "ok"
	Warn Status = "warning"
	Fail Status = "error"
)

// Check is one thing to verify.
type Check struct {
	Category    string
	Description string
	// Hint says what to do when the check does not pass.
	Hint string
	// Fatal checks stop the rest of their category when they fail.
	Fatal bool
	Run   func(ctx context.Context) (Status, string)
}

// Result is a check's outcome.
type Result struct {
	Category    string `json:"category"`
	Description string `json:"description"`
	Status      Status `json:"status"`
	Detail      string `json:"detail,omitempty"`
	Hint        string `json:"hint,omitempty"`
}

// Run runs the checks in order.
func Run(ctx context.Context, checks []Check) []Result {
	var out []Result
	skip := map[string]bool{}
	for _, c := range checks {
		if skip[c.Category] {
			continue
		}
		st, detail := c.Run(ctx)
		r := Result{Category: c.Category, Description: c.Description, Status: st, Detail: detail}
		if st != OK {
			r.Hint = c.Hint
			if st == Fail && c.Fatal {
				skip[c.Category] = true
			}
		}
		out = append(out, r)
	}
	return out
}

// Failed reports whether any check failed.
func Failed(rs []Result) bool {
	for _, r := range rs {
		if r.Status == Fail {
			return true
		}
	}
	return false
}

// Render writes results for people (color on a terminal) or as JSON.
func Render(w io.Writer, rs []Result, format string, color bool) error {
	switch format {
	case "json":
		if rs == nil {
			rs = []Result{}
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(struct {
			Success bool     `json:"success"`
			Checks  []Result `json:"checks"`
		}{!Failed(rs), rs})
	case "", "table":
	default:
		return fmt.Errorf("unknown output format %q: use table or json", format)
	}
	style := func(c string) lipgloss.Style { return lipgloss.NewStyle().Foreground(lipgloss.Color(c)) }
	paint := func(s lipgloss.Style, text string) string {
		if color {
			return s.Render(text)
		}
		return text
	}
	marks := map[Status]string{OK: paint(style("2"), "✓"), Warn: paint(style("3"), "‼"), Fail: paint(style("1"), "×")}
	category := ""
	warnings, failures := 0, 0
	for _, r := range rs {
		if r.Category != category {
			if category != "" {
				fmt.Fprintln(w)
			}
			category = r.Category
			fmt.Fprintln(w, paint(lipgloss.NewStyle().Bold(true), category))
			fmt.Fprintln(w, strings.Repeat("-", len(category)))
		}
		fmt.Fprintf(w, "%s %s\n", marks[r.Status], r.Description)
		for _, line := range strings.Split(r.Detail, "\n") {
			if line != "" {
				fmt.Fprintf(w, "    %s\n", line)
			}
		}
		if r.Status != OK {
			if r.Hint != "" {
				fmt.Fprintf(w, "    hint: %s\n", r.Hint)
			}
		}
		switch r.Status {
		case Warn:
			warnings++
		case Fail:
			failures++
		}
	}
	fmt.Fprintln(w)
	switch {
	case failures > 0:
		_, err := fmt.Fprintf(w, "Status check results are %s (%s failed, %s)\n", marks[Fail], count(failures, "check"), count(warnings, "warning"))
		return err
	case warnings > 0:
		_, err := fmt.Fprintf(w, "Status check results are %s (%s)\n", marks[Warn], count(warnings, "warning"))
		return err
	}
	_, err := fmt.Fprintf(w, "Status check results are %s\n", marks[OK])
	return err
}

func count(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
