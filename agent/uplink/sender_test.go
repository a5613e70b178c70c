package uplink

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/outpost-edge/outpost/sync/envelope"
)

func TestCutToBytes(t *testing.T) {
	rec := func(n int) envelope.Record {
		return envelope.Record{Seq: 1, Data: json.RawMessage(`"` + strings.Repeat("x", n-2) + `"`)}
	}
	recs := []envelope.Record{rec(100), rec(100), rec(100), rec(100)}
	tests := []struct {
		limit, want int
	}{
		{0, 4},                          // no limit
		{3 * (100 + recordOverhead), 3}, // exactly three fit
		{3*(100+recordOverhead) - 1, 2},
		{10, 1}, // a record larger than the limit still goes, alone
	}
	for _, tt := range tests {
		if got := len(cutToBytes(recs, tt.limit)); got != tt.want {
			t.Errorf("limit %d: %d records, want %d", tt.limit, got, tt.want)
		}
	}
}
