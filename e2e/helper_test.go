package e2e

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"time"
)

// The test binary doubles as a small client that the tests run inside
// network namespaces (`ip netns exec NS <test binary> mesh-e2e-helper ...`),
// for what curl cannot do.
const helperArg = "mesh-e2e-helper"

// helper is the command line that runs the helper with args.
func helper(t interface{ Fatal(...any) }, args ...string) []string {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return append([]string{self, helperArg}, args...)
}

func runHelper(args []string) int {
	var err error
	switch {
	case len(args) == 3 && args[0] == "dial":
		err = helperDial(args[1], args[2])
	case len(args) == 4 && args[0] == "slow":
		err = helperSlow(args[1], args[2], args[3])
	case len(args) == 4 && args[0] == "interop":
		err = helperInterop(args[1], args[2], args[3])
	default:
		err = fmt.Errorf("unknown helper command %q", args)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// helperDial connects, sends the (Go-quoted) data and prints, quoted, what
// came back before the connection closed or 3 s passed.
func helperDial(addr, quoted string) error {
	data, err := strconv.Unquote(quoted)
	if err != nil {
		return err
	}
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.Write([]byte(data)) // a connection closed at once may refuse it
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	got, err := io.ReadAll(c)
	var ne net.Error
	if err != nil && !(errors.As(err, &ne) && ne.Timeout()) && !errors.Is(err, io.EOF) {
		// A reset is a close too.
		fmt.Fprintf(os.Stderr, "read ended: %v\n", err)
	}
	fmt.Println(strconv.Quote(string(got)))
	return nil
}

// helperSlow opens n connections that each send half a request head, holds
// them for the given time, then closes them; it prints how many it opened.
func helperSlow(addr, count, hold string) error {
	n, err := strconv.Atoi(count)
	if err != nil {
		return err
	}
	d, err := time.ParseDuration(hold)
	if err != nil {
		return err
	}
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	start := time.Now()
	var failed int
	var last error
	for i := 0; i < n && time.Since(start) < 60*time.Second; i++ {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			failed++
			last = err
			continue
		}
		c.Write([]byte("GET /slow HTTP/1.1\r\nHost: app\r\nX-Slow: "))
		conns = append(conns, c)
	}
	fmt.Printf("opened %d in %s (%d failed, last: %v)\n", len(conns), time.Since(start).Round(time.Millisecond), failed, last)
	time.Sleep(d)
	return nil
}
