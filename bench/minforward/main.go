// Command minforward measures how fast a Go HTTP/1.1 forwarder can be on
// this machine: the floor under `mesh proxy`, not a proxy anyone should
// use. It takes requests without bodies and answers with Content-Length
// responses only (what fortio's load and echo server exchange), gives each
// client connection one goroutine and one upstream connection of its own,
// and copies heads and bodies through reused buffers, so a request costs a
// read and a write on each side and no allocation.
//
//	go run ./bench/minforward 127.0.0.1:18082 127.0.0.1:8080
package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strconv"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: minforward LISTEN-ADDR UPSTREAM-ADDR")
		os.Exit(2)
	}
	runtime.GOMAXPROCS(1) // as mesh proxy runs by default
	ln, err := net.Listen("tcp", os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		go forward(c, os.Args[2])
	}
}

var contentLength = []byte("content-length:")

// readHead appends one message head (up to the blank line) to buf and
// returns it with the head's Content-Length.
func readHead(r *bufio.Reader, buf []byte) ([]byte, int, error) {
	buf = buf[:0]
	n := 0
	for {
		line, err := r.ReadSlice('\n')
		if err != nil {
			return nil, 0, err
		}
		buf = append(buf, line...)
		if len(line) <= 2 {
			return buf, n, nil
		}
		if len(line) > len(contentLength) && bytes.EqualFold(line[:len(contentLength)], contentLength) {
			if n, err = strconv.Atoi(string(bytes.TrimSpace(line[len(contentLength):]))); err != nil {
				return nil, 0, err
			}
		}
	}
}

func forward(c net.Conn, upstream string) {
	defer c.Close()
	u, err := net.Dial("tcp", upstream)
	if err != nil {
		return
	}
	defer u.Close()
	cr, ur := bufio.NewReader(c), bufio.NewReader(u)
	var req, resp []byte
	for {
		var err error
		if req, _, err = readHead(cr, req); err != nil {
			return
		}
		if _, err = u.Write(req); err != nil {
			return
		}
		var n int
		if resp, n, err = readHead(ur, resp); err != nil {
			return
		}
		head := len(resp)
		resp = append(resp, make([]byte, n)...)[:head+n]
		if _, err = io.ReadFull(ur, resp[head:]); err != nil {
			return
		}
		if _, err = c.Write(resp); err != nil {
			return
		}
	}
}
