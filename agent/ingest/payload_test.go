package ingest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
)

// TestPayloadLinesSplitAsScanner: an MQTT payload's lines are the ones
// bufio.ScanLines gives (what the source used before), the last one
// carries the ack, and an empty payload is acked at once.
func TestPayloadLinesSplitAsScanner(t *testing.T) {
	for _, payload := range []string{
		"", "\n", "a", "a\n", "a\r\nb", "a\n\nb\n", "\r\n", "x\r", strings.Repeat("y", 70<<10) + "\nz",
	} {
		var want []string
		sc := bufio.NewScanner(strings.NewReader(payload))
		sc.Buffer(nil, maxLine)
		for sc.Scan() {
			want = append(want, sc.Text())
		}
		out := make(chan Line, 16)
		acked := 0
		if err := payloadLinesAck(context.Background(), []byte(payload), out, func() { acked++ }); err != nil {
			t.Fatalf("%q: %v", payload, err)
		}
		close(out)
		var got []string
		var last Line
		for l := range out {
			got = append(got, string(l.Data))
			last = l
		}
		if strings.Join(got, "|") != strings.Join(want, "|") || len(got) != len(want) {
			t.Fatalf("%.20q: lines %q, want %q", payload, got, want)
		}
		if len(want) == 0 && acked != 1 || len(want) > 0 && (acked != 0 || last.Ack == nil) {
			t.Fatalf("%.20q: acked %d, last line's ack %v", payload, acked, last.Ack != nil)
		}
	}
	big := bytes.Repeat([]byte("x"), maxLine+1)
	if err := payloadLinesAck(context.Background(), big, make(chan Line, 1), func() {}); !errors.Is(err, bufio.ErrTooLong) {
		t.Fatalf("a line over 1 MiB: %v", err)
	}
}

// TestPayloadLinesDoNotAllocatePerMessage: splitting a message costs no
// buffer of its own (the scanner allocated 64 KiB per message).
func TestPayloadLinesDoNotAllocatePerMessage(t *testing.T) {
	payload := []byte(`{"sensor":"s1","ts":1700000000,"v":1}` + "\n" + `{"sensor":"s2","ts":1700000000,"v":2}`)
	out := make(chan Line, 4)
	ack := func() {}
	allocs := testing.AllocsPerRun(200, func() {
		if err := payloadLinesAck(context.Background(), payload, out, ack); err != nil {
			t.Fatal(err)
		}
		<-out
		<-out
	})
	if allocs > 0 {
		t.Fatalf("%v allocations per message, want none", allocs)
	}
}
