package bridge

import (
	"encoding/json"
	"log/slog"
	"testing"
)

// A payload on a topic level that does not parse (up/win.dows reaches
// JetStream as up.win//dows) is dead-lettered under the device its subject
// names: the broker let only that device publish there.
func TestDeadLetterKeepsTheSubjectsDevice(t *testing.T) {
	b := New(Config{}, Options{Log: slog.New(slog.DiscardHandler)})
	for subject, want := range map[string]string{
		"outpost.v1.pump-7.up.win//dows": "pump-7",
		"outpost.v1.pump-7.up.bogus":     "pump-7",
		"outpost.v1.bad//id.up.windows":  "",
		"elsewhere.pump-7.up.windows":    "",
	} {
		data := []byte(`{"v":1}`)
		var tl tally
		recs := b.convert(nil, subject, data, decode(b.o.Decoder, 7, subject, data), 7, undo{}, map[string]bool{}, &tl)
		if len(recs) != 1 || tl.dead != 1 {
			t.Fatalf("%s: %d records, %d dead", subject, len(recs), tl.dead)
		}
		var dl DeadLetter
		if err := json.Unmarshal(recs[0].Value, &dl); err != nil {
			t.Fatal(err)
		}
		if dl.Device != want || string(recs[0].Key) != want || dl.Subject != subject {
			t.Errorf("%s: dead letter device %q key %q, want %q", subject, dl.Device, recs[0].Key, want)
		}
	}
}
