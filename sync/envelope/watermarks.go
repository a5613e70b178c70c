package envelope

import (
	"encoding/json"
	"fmt"
)

// MaxEpochs bounds the epochs whose marks are kept per device. An agent
// starts a new epoch on every start, so a device that restarts often would
// otherwise grow its marks without end; the least recently used epoch goes
// first. Its records can only come back from a board restored from a backup
// older than MaxEpochs agent starts, and then only those still pending in
// that backup.
const MaxEpochs = 16

// Watermarks holds, per device, epoch and stream, the highest seq accepted
// as part of a contiguous run. The hub's acker and its Kafka bridge both
// apply it to the same JetStream order, so a record the acker acknowledges
// is always one the bridge has accepted (the acker may start with lower
// marks after a restart; lower marks only ever reject more).
type Watermarks map[string]*DeviceMarks

// DeviceMarks are one device's marks, by epoch.
type DeviceMarks struct {
	Epochs map[string]*EpochMarks `json:"epochs"`
	// Clock counts accepts, to find the least recently used epoch.
	Clock uint64 `json:"clock"`
}

// EpochMarks are one epoch's marks, by stream.
type EpochMarks struct {
	Streams map[string]uint64 `json:"streams"`
	Used    uint64            `json:"used"` // the device's Clock when last accepted
}

// Get returns one mark.
func (w Watermarks) Get(device, epoch, stream string) uint64 {
	if d := w[device]; d != nil {
		if e := d.Epochs[epoch]; e != nil {
			return e.Streams[stream]
		}
	}
	return 0
}

// Streams returns one epoch's marks by stream (nil if none); callers must
// not modify it.
func (w Watermarks) Streams(device, epoch string) map[string]uint64 {
	if d := w[device]; d != nil {
		if e := d.Epochs[epoch]; e != nil {
			return e.Streams
		}
	}
	return nil
}

// Set raises or lowers one mark (used when loading a checkpoint and when
// undoing a failed transaction).
func (w Watermarks) Set(device, epoch, stream string, seq uint64) {
	w.epoch(device, epoch).Streams[stream] = seq
}

// epoch returns the marks of one epoch, creating them (and evicting the
// least recently used epoch beyond MaxEpochs) as needed.
func (w Watermarks) epoch(device, epoch string) *EpochMarks {
	d := w[device]
	if d == nil {
		d = &DeviceMarks{Epochs: map[string]*EpochMarks{}}
		w[device] = d
	}
	e := d.Epochs[epoch]
	if e == nil {
		if len(d.Epochs) >= MaxEpochs {
			oldest, used := "", ^uint64(0)
			for name, m := range d.Epochs {
				if m.Used < used || (m.Used == used && name < oldest) {
					oldest, used = name, m.Used
				}
			}
			delete(d.Epochs, oldest)
		}
		e = &EpochMarks{Streams: map[string]uint64{}, Used: d.Clock}
		d.Epochs[epoch] = e
	}
	return e
}

// Accept decides whether e continues its stream without a gap, and if so
// raises the mark. It returns the records above the old mark: those at or
// below it are duplicates (resends) that must not be written again.
func (w Watermarks) Accept(e *Envelope) (fresh []Record, ok bool) {
	hw, ok := w.AcceptHeader(e.Header())
	if !ok || e.Last() <= hw {
		return nil, ok
	}
	i := 0
	for i < len(e.Records) && e.Records[i].Seq <= hw {
		i++
	}
	return e.Records[i:], true
}

// AcceptHeader is Accept for a decoded header: it returns the mark before
// the batch (records above it are fresh) and whether the batch continues
// its stream without a gap.
func (w Watermarks) AcceptHeader(h Header) (before uint64, ok bool) {
	hw := max(w.Get(h.Device, h.Epoch, h.Stream), h.Floor)
	if h.Prev > hw {
		return hw, false // an earlier batch is missing; the device resends from its floor
	}
	e := w.epoch(h.Device, h.Epoch)
	d := w[h.Device]
	d.Clock++
	e.Used = d.Clock
	e.Streams[h.Stream] = max(hw, h.Last)
	return hw, true
}

// MarshalDevice encodes one device's marks for a checkpoint.
func (w Watermarks) MarshalDevice(device string) ([]byte, error) {
	d := w[device]
	if d == nil {
		d = &DeviceMarks{Epochs: map[string]*EpochMarks{}}
	}
	b, err := json.Marshal(d)
	if err != nil {
		return nil, fmt.Errorf("envelope: marks of %s: %w", device, err)
	}
	return b, nil
}

// UnmarshalDevice replaces one device's marks with a checkpoint's. It also
// reads the format of hubs older than epochs ({stream: seq}), as epoch "".
func (w Watermarks) UnmarshalDevice(device string, data []byte) error {
	var d DeviceMarks
	if err := json.Unmarshal(data, &d); err == nil && d.Epochs != nil {
		for name, e := range d.Epochs {
			if e == nil || e.Streams == nil {
				d.Epochs[name] = &EpochMarks{Streams: map[string]uint64{}, Used: 0}
			}
		}
		w[device] = &d
		return nil
	}
	var legacy map[string]uint64
	if err := json.Unmarshal(data, &legacy); err != nil {
		return fmt.Errorf("envelope: marks of %s: %w", device, err)
	}
	w[device] = &DeviceMarks{Epochs: map[string]*EpochMarks{"": {Streams: legacy}}}
	return nil
}
