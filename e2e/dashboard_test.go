package e2e

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/meshproj/mesh/stat"
)

var screenshot = flag.String("screenshot", "", "write the dashboard's topology, as the browser test sees it, to this PNG (the README's picture: -screenshot ../docs/dashboard.png)")

// browser starts headless Chromium (Debian's chromium) for a test; on
// failure the test's artifacts hold a screenshot of the page it was on.
func browser(t *testing.T) context.Context {
	t.Helper()
	bin := ""
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			bin = p
			break
		}
	}
	if bin == "" {
		t.Skip("skipped: no Chromium (apt-get install chromium)")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(bin), chromedp.WindowSize(1280, 900),
		chromedp.Flag("headless", "new"), chromedp.NoSandbox, chromedp.UserDataDir(t.TempDir()))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	if err := chromedp.Do(ctx); err != nil { // starts the browser, for as long as ctx
		cancel()
		cancelAlloc()
		t.Fatalf("starting %s: %v", bin, err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			sctx, scancel := context.WithTimeout(ctx, 10*time.Second)
			if png, err := chromedp.Run(sctx, chromedp.FullScreenshot(90)); err == nil {
				path := filepath.Join(t.ArtifactDir(), "dashboard-failure.png")
				if os.WriteFile(path, png, 0o644) == nil {
					t.Logf("the page when the test failed: %s", path)
				}
			}
			scancel()
		}
		cancel()
		cancelAlloc()
	})
	return ctx
}

// evaluate runs a JavaScript expression in the page.
func evaluate[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	c, cancel := context.WithTimeout(ctx, 45*time.Second)
	defer cancel()
	v, err := chromedp.Run(c, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("%s: %v", expr, err)
	}
	return v
}

// TestDashboardInABrowser: `mesh dashboard` beside `mesh demo`, in a real
// browser: the workloads fill with live numbers, the topology has the
// demo's edges with the failing one marked, a workload's tap shows its
// requests, the checks pass; and what the page reads is mesh stat's JSON.
func TestDashboardInABrowser(t *testing.T) {
	ctx := browser(t)
	state := filepath.Join(t.TempDir(), "demo.json")
	startMesh(t, "demo", "--duration", "3m", "--state-file", state, "--rate", "30")
	waitFor(t, "the demo's state file", func() bool { _, err := os.Stat(state); return err == nil })
	d := startMesh(t, "dashboard", "--show", "url", "--state-file", state)
	var base string
	waitFor(t, "the dashboard's address", func() bool {
		for _, line := range strings.Split(d.out.String(), "\n") {
			if strings.HasPrefix(line, "http://127.0.0.1:") {
				base = strings.TrimSpace(line)
				return true
			}
		}
		return false
	})

	// The API is mesh stat -o json: the same workloads, the same fields
	// (once the demo's workloads all have a window to show).
	names := func(rows []stat.Row) (out []string) {
		for _, r := range rows {
			out = append(out, r.Namespace+" "+r.Name)
		}
		return out
	}
	var fromCLI, fromAPI []stat.Row
	waitForWithin(t, 30*time.Second, "/api/stat and mesh stat -o json to list the demo's workloads", func() bool {
		out, code := meshCmd(t, "stat", "--state-file", state, "-o", "json")
		if code != 0 || json.Unmarshal([]byte(out), &fromCLI) != nil {
			t.Fatalf("mesh stat -o json: exit %d\n%s", code, out)
		}
		resp, err := http.Get(base + "api/stat")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err := json.Unmarshal(body, &fromAPI); err != nil {
			t.Fatalf("/api/stat: %v\n%s", err, body)
		}
		traffic := 0
		for _, r := range fromAPI {
			if r.Requests > 0 {
				traffic++
			}
		}
		return slices.Equal(names(fromCLI), names(fromAPI)) && len(fromAPI) >= 4 && traffic >= 3
	})

	// within limits one step of the test; value reads what it names.
	within := func() (context.Context, context.CancelFunc) { return context.WithTimeout(ctx, 45*time.Second) }
	do := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		c, cancel := within()
		defer cancel()
		if err := chromedp.Do(c, steps...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	text := func(sel string) string {
		t.Helper()
		c, cancel := within()
		defer cancel()
		v, err := chromedp.Run(c, chromedp.Text(sel))
		if err != nil {
			t.Fatalf("the text of %s: %v", sel, err)
		}
		return v
	}
	count := func(sel string) int {
		t.Helper()
		return evaluate[int](t, ctx, fmt.Sprintf("document.querySelectorAll(%q).length", sel))
	}
	attr := func(sel, name string) string {
		t.Helper()
		c, cancel := within()
		defer cancel()
		v, err := chromedp.Run(c, chromedp.AttributeValue(sel, name))
		if err != nil {
			t.Fatalf("%s of %s: %v", name, sel, err)
		}
		return v.Value
	}

	// Workloads: every demo workload, with numbers that move.
	do("the workloads table", chromedp.Navigate(base), chromedp.WaitVisible(`tr[data-workload="deploy/api"] td[data-health="ok"]`))
	success, rps := text(`tr[data-workload="deploy/api"] td:nth-child(3)`), text(`tr[data-workload="deploy/api"] td:nth-child(4)`)
	if !strings.Contains(success, "%") || rps == "" || rps == "–" || rps == "0.0" {
		t.Errorf("api's row reads success %q, rps %q", success, rps)
	}
	if n := count(`tr[data-workload]`); n < 4 {
		t.Errorf("%d workloads in the table, want the demo's 4 or more", n)
	}
	first := text("#status")
	waitForWithin(t, 15*time.Second, "the page to refresh itself (every 2 s)", func() bool { return text("#status") != first })

	// The keyboard alone gets around: Tab from the top reaches the
	// navigation, Enter follows it.
	evaluate[bool](t, ctx, `document.activeElement.blur(), true`)
	do("tabbing to the navigation", chromedp.KeyEvent("\t\t\t\t"))
	if focused := evaluate[string](t, ctx, `document.activeElement.textContent`); focused != "Topology" {
		t.Errorf("four tabs from the top focus %q, want the Topology link (skip link, mesh, Workloads, Topology)", focused)
	}

	// Topology: the demo's edges; web -> auth fails now and then, and says
	// so in colour, mark and words.
	do("the topology, by the keyboard", chromedp.KeyEvent("\r"),
		chromedp.WaitVisible(`g.edge[data-src="deploy/web"][data-dst="deploy/api"]`),
		chromedp.WaitVisible(`g.edge[data-src="deploy/web"][data-dst="deploy/auth"]`))
	if n := count(`g.edge`); n < 3 || count(`g.edge > title`) != n {
		t.Errorf("%d edges drawn, %d with a text alternative; want the demo's traffic -> web -> api and auth, each with one", n, count(`g.edge > title`))
	}
	authHealth := attr(`g.edge[data-src="deploy/web"][data-dst="deploy/auth"]`, "data-health")
	authLabel := text(`tr[data-edge="deploy/web -> deploy/auth"] td:nth-child(3)`)
	if authHealth == "ok" || !(strings.Contains(authLabel, "degraded") || strings.Contains(authLabel, "failing")) {
		t.Errorf("the failing edge web -> auth is marked %q and reads %q", authHealth, authLabel)
	}
	if *screenshot != "" {
		c, cancel := within()
		png, err := chromedp.Run(c, chromedp.CaptureScreenshot())
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(*screenshot, png, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// A workload's page: its edges, and its live requests.
	do("api's page and tap", chromedp.Navigate(base+"#/workload/demo/deploy%2Fapi"),
		chromedp.WaitVisible(`tr[data-edge="deploy/web -> deploy/api"]`),
		chromedp.WaitVisible(`ol.tap li`),
		chromedp.Sleep(time.Second))
	items := evaluate[int](t, ctx, `[...document.querySelectorAll("ol.tap li")].filter(li => /GET api\/items/.test(li.textContent)).length`)
	if n := count(`ol.tap li`); n < 2 || items == 0 {
		t.Errorf("%d requests tapped, %d of them web's GETs of /items; the newest %q", n, items, text(`ol.tap li`))
	}

	// The checks, with their results.
	do("the checks", chromedp.Navigate(base+"#/check"), chromedp.WaitVisible(`p[data-success]`))
	if verdict := attr(`p[data-success]`, "data-success"); verdict != "true" {
		t.Errorf("mesh check in the dashboard failed:\n%s", text("main"))
	}

	// Another site's page cannot read the dashboard, even by rebinding
	// its name to loopback: the Host is not localhost.
	req, _ := http.NewRequest("GET", base+"api/stat", nil)
	req.Host = "attacker.example"
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("a request for Host attacker.example: %s", resp.Status)
	}
}
