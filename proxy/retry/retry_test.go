package retry

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"time"
)

func TestBudgetAllowsRatioPlusFloor(t *testing.T) {
	clock := int64(0)
	b := NewBudget(BudgetConfig{Ratio: 0.2, MinPerSecond: 1, TTL: 10 * time.Second})
	b.now = func() int64 { return clock }
	for range 100 {
		b.Deposit()
	}
	allowed := 0
	for range 1000 {
		if b.Withdraw() {
			allowed++
		}
	}
	if allowed != 30 { // 20% of 100, plus 1/s over 10s
		t.Fatalf("allowed %d retries, want 30", allowed)
	}
	// After the window passes, old deposits and retries are forgotten.
	clock += int64(11 * time.Second)
	b.Deposit()
	allowed = 0
	for range 1000 {
		if b.Withdraw() {
			allowed++
		}
	}
	if allowed != 10 {
		t.Fatalf("after the window: allowed %d retries, want 10", allowed)
	}
}

func TestBodyReplaysToEachAttempt(t *testing.T) {
	b := NewBody(io.NopCloser(strings.NewReader("hello world")), 64)
	first := b.Attempt()
	buf := make([]byte, 5)
	if n, _ := io.ReadFull(first, buf); n != 5 {
		t.Fatal("short read")
	}
	second := b.Attempt()
	if _, err := first.Read(buf); !errors.Is(err, ErrReplaced) {
		t.Fatalf("old attempt read after a retry: %v", err)
	}
	got, err := io.ReadAll(second)
	if err != nil || string(got) != "hello world" {
		t.Fatalf("second attempt read %q, %v", got, err)
	}
	third, _ := io.ReadAll(b.Attempt())
	if string(third) != "hello world" {
		t.Fatalf("third attempt read %q", third)
	}
}

func TestBodyGivesUpReplayPastLimit(t *testing.T) {
	big := bytes.Repeat([]byte("x"), 100)
	b := NewBody(io.NopCloser(bytes.NewReader(big)), 64)
	got, err := io.ReadAll(b.Attempt())
	if err != nil || len(got) != 100 {
		t.Fatalf("first attempt read %d bytes, %v", len(got), err)
	}
	if b.Replayable() {
		t.Fatal("a body past the limit claims to be replayable")
	}
}

func TestBodyDoesNotReadAhead(t *testing.T) {
	r, w := io.Pipe()
	b := NewBody(r, 64)
	a := b.Attempt()
	go w.Write([]byte("part one"))
	buf := make([]byte, 64)
	n, err := a.Read(buf) // returns what the client sent, without waiting for EOF
	if err != nil || string(buf[:n]) != "part one" {
		t.Fatalf("read %q, %v", buf[:n], err)
	}
	w.Close()
}
