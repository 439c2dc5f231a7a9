package stat

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"

	"github.com/charmbracelet/lipgloss"
	"github.com/charmbracelet/lipgloss/table"
)

// Formats Render knows.
const (
	Table = "table"
	Wide  = "wide"
	JSON  = "json"
)

// Render writes rows as a table (colour when color is true), a wide table
// or JSON.
func Render(w io.Writer, rows []Row, format string, color bool) error {
	switch format {
	case JSON:
		return writeJSON(w, rows)
	case Table, Wide, "":
	default:
		return fmt.Errorf("unknown output format %q: use table, wide or json", format)
	}
	wide := format == Wide
	header := []string{"NAME", "MESHED", "SUCCESS", "RPS", "LATENCY_P50", "LATENCY_P95", "LATENCY_P99", "TCP_CONN"}
	if wide {
		header = append(header, "REQUESTS", "IDENTITY")
	}
	var cells [][]string
	for _, r := range rows {
		line := []string{r.Name, fmt.Sprintf("%d/%d", r.MeshedReady, r.Instances), percent(r.SuccessRate),
			rps(r), latency(r.P50MS), latency(r.P95MS), latency(r.P99MS), strconv.FormatInt(r.TCPConn, 10)}
		if wide {
			identity := r.Identity
			if identity == "" {
				identity = "-"
			}
			line = append(line, strconv.FormatUint(r.Requests, 10), identity)
		}
		cells = append(cells, line)
	}
	if len(rows) == 0 {
		_, err := fmt.Fprintln(w, "No traffic found.")
		return err
	}
	if color {
		return renderColor(w, header, cells, rows)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
	for _, line := range append([][]string{header}, cells...) {
		for i, c := range line {
			if i > 0 {
				fmt.Fprint(tw, "\t")
			}
			fmt.Fprint(tw, c)
		}
		fmt.Fprintln(tw)
	}
	return tw.Flush()
}

func renderColor(w io.Writer, header []string, cells [][]string, rows []Row) error {
	good := lipgloss.NewStyle().Foreground(lipgloss.Color("2"))
	warn := lipgloss.NewStyle().Foreground(lipgloss.Color("3"))
	bad := lipgloss.NewStyle().Foreground(lipgloss.Color("1"))
	bold := lipgloss.NewStyle().Bold(true)
	pad := lipgloss.NewStyle().PaddingRight(3)
	t := table.New().Headers(header...).Rows(cells...).Border(lipgloss.HiddenBorder()).
		BorderTop(false).BorderBottom(false).BorderLeft(false).BorderRight(false).BorderColumn(false).BorderHeader(false).
		StyleFunc(func(row, col int) lipgloss.Style {
			s := pad
			if row == table.HeaderRow {
				return bold.Inherit(pad)
			}
			if col == 2 && row >= 0 && row < len(rows) && rows[row].SuccessRate != nil {
				switch sr := *rows[row].SuccessRate; {
				case sr >= 0.99:
					return good.Inherit(s)
				case sr >= 0.95:
					return warn.Inherit(s)
				default:
					return bad.Inherit(s)
				}
			}
			return s
		})
	_, err := fmt.Fprintln(w, t.Render())
	return err
}

func percent(v *float64) string {
	if v == nil {
		return "-"
	}
	return strconv.FormatFloat(*v*100, 'f', 2, 64) + "%"
}

func rps(r Row) string {
	if r.Requests == 0 {
		return "-"
	}
	return strconv.FormatFloat(r.RPS, 'f', 1, 64) + "rps"
}

func latency(v *float64) string {
	if v == nil {
		return "-"
	}
	if *v < 10 {
		return strconv.FormatFloat(*v, 'f', 1, 64) + "ms"
	}
	return strconv.FormatFloat(*v, 'f', 0, 64) + "ms"
}

// asJSON writes items as JSON when format asks for it, and reports
// whether it did (or the format is unknown: err says so); otherwise the
// caller writes its table.
func asJSON[T any](w io.Writer, items []T, format string) (bool, error) {
	switch format {
	case JSON:
		return true, writeJSON(w, items)
	case Table, "":
		return false, nil
	}
	return true, fmt.Errorf("unknown output format %q: use table or json", format)
}

// writeJSON writes a list as indented JSON, [] when empty (never null).
func writeJSON[T any](w io.Writer, items []T) error {
	if items == nil {
		items = []T{}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(items)
}
