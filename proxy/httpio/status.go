package httpio

import (
	"strconv"
	"strings"
)

// MaxIdlePerEndpoint bounds the idle connections kept per endpoint.
const MaxIdlePerEndpoint = 256

// statusTexts caches status code strings so that counting does not allocate.
var statusTexts = func() []string {
	s := make([]string, 600)
	for i := range s {
		s[i] = strconv.Itoa(i)
	}
	return s
}()

// StatusText is a status code in decimal, without allocating.
func StatusText(code int) string {
	if code >= 0 && code < len(statusTexts) {
		return statusTexts[code]
	}
	return strconv.Itoa(code)
}

// oneLine folds an error message onto one line, for a header or a status.
func oneLine(s string) string { return strings.ReplaceAll(strings.ReplaceAll(s, "\r", " "), "\n", " ") }
