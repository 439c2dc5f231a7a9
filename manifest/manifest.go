// Package manifest reads the manifests a command is given: files,
// directories (recursively: *.yaml, *.yml, *.json), http(s) URLs, and "-"
// for standard input. It only reads; what the documents mean is for the
// package that takes them (inject, for one, which stays free of I/O so
// that the admission webhook links no file or HTTP reader).
package manifest

import (
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Source is one source's name (path, URL or "stdin") and contents.
type Source struct {
	Name string
	Data []byte
}

// maxFetch bounds what one URL may send.
const maxFetch = 64 << 20

// Read gathers sources: files, directories (recursively, *.yaml, *.yml,
// *.json), http(s) URLs, and "-" for stdin.
func Read(args []string, stdin io.Reader) ([]Source, error) {
	var out []Source
	for _, a := range args {
		switch {
		case a == "-":
			data, err := io.ReadAll(stdin)
			if err != nil {
				return nil, fmt.Errorf("reading stdin: %w", err)
			}
			out = append(out, Source{Name: "stdin", Data: data})
		case strings.HasPrefix(a, "http://") || strings.HasPrefix(a, "https://"):
			data, err := fetch(a)
			if err != nil {
				return nil, err
			}
			out = append(out, Source{Name: a, Data: data})
		default:
			st, err := os.Stat(a)
			if err != nil {
				return nil, err
			}
			if !st.IsDir() {
				data, err := os.ReadFile(a)
				if err != nil {
					return nil, err
				}
				out = append(out, Source{Name: a, Data: data})
				continue
			}
			err = filepath.WalkDir(a, func(p string, d fs.DirEntry, err error) error {
				if err != nil {
					return err
				}
				switch strings.ToLower(filepath.Ext(p)) {
				case ".yaml", ".yml", ".json":
					if d.Type().IsRegular() {
						data, err := os.ReadFile(p)
						if err != nil {
							return err
						}
						out = append(out, Source{Name: p, Data: data})
					}
				}
				return nil
			})
			if err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

func fetch(url string) ([]byte, error) {
	c := &http.Client{Timeout: 30 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return nil, fmt.Errorf("fetching %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetching %s: %s", url, resp.Status)
	}
	return io.ReadAll(io.LimitReader(resp.Body, maxFetch))
}
