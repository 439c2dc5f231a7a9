package e2e

import (
	"regexp"
	"strconv"
	"strings"
)

var labelPair = regexp.MustCompile(`(\w+)="((?:[^"\\]|\\.)*)"`)

// metricSum adds up the series of a metric whose labels include want
// (name=value pairs). ok is false when no series matches.
func metricSum(text, name string, want ...string) (sum float64, ok bool) {
	for _, line := range strings.Split(text, "\n") {
		labels := map[string]string{}
		var end int
		switch {
		case strings.HasPrefix(line, name+" "):
			end = len(name) - 1 // no labels; the value follows the name
		case strings.HasPrefix(line, name+"{"):
			end = strings.LastIndexByte(line, '}')
			if end < 0 {
				continue
			}
			for _, m := range labelPair.FindAllStringSubmatch(line[len(name)+1:end], -1) {
				labels[m[1]] = m[2]
			}
		default:
			continue
		}
		match := true
		for i := 0; i+1 < len(want); i += 2 {
			if labels[want[i]] != want[i+1] {
				match = false
				break
			}
		}
		if !match {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(line[end+1:]), 64)
		if err == nil {
			sum += v
			ok = true
		}
	}
	return sum, ok
}

// has reports whether a metric has a non-zero series with the labels.
func has(text, name string, want ...string) bool {
	n, ok := metricSum(text, name, want...)
	return ok && n > 0
}
