package inject

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Input is one source of manifests.
type Input struct {
	Name string
	Data []byte
}

// document is one decoded object and where it came from.
type document struct {
	obj   obj
	index int // 1-based within its input
	line  int
}

// InputError is bad input, named by file, document and line.
type InputError struct {
	Name     string
	Document int
	Line     int
	Msg      string
}

func (e *InputError) Error() string {
	var where []string
	if e.Document > 0 {
		where = append(where, "document "+strconv.Itoa(e.Document))
	}
	if e.Line > 0 {
		where = append(where, "line "+strconv.Itoa(e.Line))
	}
	if len(where) == 0 {
		return fmt.Sprintf("%s: %s", e.Name, e.Msg)
	}
	return fmt.Sprintf("%s: %s: %s", e.Name, strings.Join(where, ", "), e.Msg)
}

var yamlLine = regexp.MustCompile(`line (\d+): `)

// isJSON says whether data is JSON rather than YAML.
func isJSON(data []byte) bool {
	t := bytes.TrimLeft(data, " \t\r\n")
	return len(t) > 0 && (t[0] == '{' || t[0] == '[')
}

func decode(in Input) ([]document, error) {
	if isJSON(in.Data) {
		return decodeJSON(in)
	}
	dec := yaml.NewDecoder(bytes.NewReader(in.Data))
	var docs []document
	for i := 1; ; i++ {
		var node yaml.Node
		err := dec.Decode(&node)
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			e := &InputError{Name: in.Name, Document: i, Msg: strings.TrimPrefix(err.Error(), "yaml: ")}
			if m := yamlLine.FindStringSubmatch(e.Msg); m != nil {
				e.Line, _ = strconv.Atoi(m[1])
				e.Msg = yamlLine.ReplaceAllString(e.Msg, "")
			}
			return nil, e
		}
		if len(node.Content) == 0 || (node.Content[0].Kind == yaml.ScalarNode && node.Content[0].Tag == "!!null") {
			i-- // an empty document, as between two '---'
			continue
		}
		var v any
		if err := node.Decode(&v); err != nil {
			return nil, &InputError{Name: in.Name, Document: i, Line: node.Line, Msg: err.Error()}
		}
		o, err := checkObject(v)
		if err != nil {
			return nil, &InputError{Name: in.Name, Document: i, Line: node.Content[0].Line, Msg: err.Error()}
		}
		docs = append(docs, document{obj: o, index: i, line: node.Content[0].Line})
	}
}

func decodeJSON(in Input) ([]document, error) {
	dec := json.NewDecoder(bytes.NewReader(in.Data))
	dec.UseNumber()
	var docs []document
	for i := 1; ; i++ {
		var v any
		err := dec.Decode(&v)
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			line := lineAt(in.Data, dec.InputOffset())
			var se *json.SyntaxError
			if errors.As(err, &se) {
				line = lineAt(in.Data, se.Offset)
			}
			return nil, &InputError{Name: in.Name, Document: i, Line: line, Msg: err.Error()}
		}
		o, err := checkObject(v)
		if err != nil {
			return nil, &InputError{Name: in.Name, Document: i, Line: lineAt(in.Data, dec.InputOffset()), Msg: err.Error()}
		}
		docs = append(docs, document{obj: o, index: i})
	}
}

func lineAt(data []byte, off int64) int {
	off = min(max(off, 0), int64(len(data)))
	return bytes.Count(data[:off], []byte("\n")) + 1
}

// checkObject accepts a Kubernetes object: a map with kind and apiVersion.
func checkObject(v any) (obj, error) {
	o, ok := v.(obj)
	if !ok {
		return nil, fmt.Errorf("not a Kubernetes object (a %T)", v)
	}
	if str(o["kind"]) == "" {
		return nil, errors.New("object has no kind")
	}
	if str(o["apiVersion"]) == "" {
		return nil, fmt.Errorf("%s object has no apiVersion", o["kind"])
	}
	if o["kind"] == "List" {
		items, ok := o["items"].([]any)
		if !ok && o["items"] != nil {
			return nil, errors.New("the items of the List are not a list")
		}
		for i, it := range items {
			if _, err := checkObject(it); err != nil {
				return nil, fmt.Errorf("item %d of the List: %w", i, err)
			}
		}
	}
	return o, nil
}

// Transform applies f to every object of every input and returns the
// output (same format as the input: YAML documents, or JSON) and a report.
// On any error it returns no output at all.
func Transform(inputs []Input, f func(obj) ([]Result, error)) ([]byte, []Result, error) {
	var out bytes.Buffer
	var report []Result
	allJSON := len(inputs) > 0
	for _, in := range inputs {
		allJSON = allJSON && isJSON(in.Data)
	}
	first := true
	for _, in := range inputs {
		docs, err := decode(in)
		if err != nil {
			return nil, nil, err
		}
		for _, d := range docs {
			rs, err := f(d.obj)
			if err != nil {
				return nil, nil, &InputError{Name: in.Name, Document: d.index, Line: d.line, Msg: err.Error()}
			}
			report = append(report, rs...)
			if allJSON {
				b, err := json.MarshalIndent(d.obj, "", "  ")
				if err != nil {
					return nil, nil, err
				}
				out.Write(b)
				out.WriteByte('\n')
				continue
			}
			if !first {
				out.WriteString("---\n")
			}
			first = false
			enc := yaml.NewEncoder(&out)
			enc.SetIndent(2)
			if err := enc.Encode(d.obj); err != nil {
				return nil, nil, &InputError{Name: in.Name, Document: d.index, Line: d.line, Msg: err.Error()}
			}
			enc.Close()
		}
	}
	return out.Bytes(), report, nil
}
