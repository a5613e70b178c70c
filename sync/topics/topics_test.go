package topics

import (
	"errors"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		topic string
		want  Parsed
		err   error
	}{
		{"outpost/v1/dev-1/up/windows", Parsed{Device: "dev-1", Kind: KindUp, Stream: "windows"}, nil},
		{"outpost/v1/dev-1/ack", Parsed{Device: "dev-1", Kind: KindAck}, nil},
		{"outpost/v1/d_2/desired", Parsed{Device: "d_2", Kind: KindDesired}, nil},
		{"outpost/v1/d/reported", Parsed{Device: "d", Kind: KindReported}, nil},
		{"outpost/v1/d/up/bogus", Parsed{}, ErrTopic},
		{"outpost/v1/d/up", Parsed{}, ErrTopic},
		{"outpost/v2/d/ack", Parsed{}, ErrTopic},
		{"outpost/v1/a.b/ack", Parsed{}, ErrDevice},
		{"outpost/v1/+/ack", Parsed{}, ErrDevice},
		{"outpost/v1//ack", Parsed{}, ErrDevice},
	}
	for _, tt := range tests {
		got, err := Parse(tt.topic)
		if !errors.Is(err, tt.err) {
			t.Errorf("Parse(%q) err = %v, want %v", tt.topic, err, tt.err)
			continue
		}
		if got != tt.want {
			t.Errorf("Parse(%q) = %+v, want %+v", tt.topic, got, tt.want)
		}
	}
}

func TestBuildersRoundTrip(t *testing.T) {
	for _, s := range Streams {
		p, err := Parse(Up("dev", s))
		if err != nil || p.Stream != s || p.Kind != KindUp {
			t.Fatalf("Up(dev, %s) parsed as %+v, %v", s, p, err)
		}
	}
	if got := Subject(Reported("dev")); got != "outpost.v1.dev.reported" {
		t.Fatalf("Subject = %q", got)
	}
}

func FuzzParse(f *testing.F) {
	f.Add("outpost/v1/dev/up/windows")
	f.Add("outpost/v1/dev/ack")
	f.Add("outpost/v1/../ack")
	f.Fuzz(func(t *testing.T, topic string) {
		p, err := Parse(topic)
		if err != nil {
			return
		}
		// Whatever parses must rebuild to the same topic.
		var back string
		switch p.Kind {
		case KindUp:
			back = Up(p.Device, p.Stream)
		case KindAck:
			back = Ack(p.Device)
		case KindDesired:
			back = Desired(p.Device)
		case KindReported:
			back = Reported(p.Device)
		}
		if back != topic {
			t.Fatalf("Parse(%q) rebuilt as %q", topic, back)
		}
	})
}
