package install

import (
	"strings"
	"testing"
)

func TestExpand(t *testing.T) {
	vars := map[string]string{"name": "web", "on": "true", "off": "false", "pem": "a\nb\n"}
	got, err := expand("t", "name: {{name}}\n#if on\nyes: {{b64 name}}\n#if !off\nnested: true\n#end\n#else\nno: true\n#end\ndata: |\n{{indent 2 pem}}", vars)
	if err != nil {
		t.Fatal(err)
	}
	want := "name: web\nyes: d2Vi\nnested: true\ndata: |\n  a\n  b\n"
	if got != want {
		t.Errorf("got %q\nwant %q", got, want)
	}
	for in, msg := range map[string]string{
		"x: {{nope}}":    `t:1: unknown value "nope"`,
		"#if nope\n#end": `t:1: unknown condition "nope"`,
		"#if on\nx: 1":   "#if without #end",
		"#end":           "#end without #if",
		"#else\nx: 1\n":  "#else without #if",
	} {
		if _, err := expand("t", in, vars); err == nil || !strings.Contains(err.Error(), msg) {
			t.Errorf("%q: error %v, want %q", in, err, msg)
		}
	}
}
