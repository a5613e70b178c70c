package ingest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// Line is one raw input line and when it arrived.
type Line struct {
	Data    []byte
	Arrival time.Time
	// Offset is the source position just after this line (file sources),
	// stored with the pipeline's checkpoint to resume exactly there.
	Offset int64
	// Ack, when set, acknowledges the message this line ended (MQTT
	// sources). The pipeline calls it once a checkpoint that includes the
	// line is committed, so a crash before that gets the message redelivered.
	Ack func()
}

// SourceConfig selects and configures one source.
type SourceConfig struct {
	Type      string          `yaml:"type"` // simulator, stdin, file, http, mqtt
	Simulator SimulatorConfig `yaml:"simulator"`
	File      FileConfig      `yaml:"file"`
	HTTP      HTTPConfig      `yaml:"http"`
	MQTT      MQTTConfig      `yaml:"mqtt"`
}

// FileConfig tails a file.
type FileConfig struct {
	Path      string `yaml:"path"`
	FromStart bool   `yaml:"from_start"` // read what is already there first
}

// HTTPConfig accepts POSTed lines.
type HTTPConfig struct {
	Listen string `yaml:"listen"` // host:port; POST /ingest with JSON or CSV lines
}

// MQTTConfig subscribes to a local broker where sensors publish.
type MQTTConfig struct {
	URL      string `yaml:"url"`
	Topic    string `yaml:"topic"` // filter, wildcards allowed
	Username string `yaml:"username"`
	Password string `yaml:"password"`
	// ClientID is stable across restarts, so the broker keeps the
	// subscription and queues QoS 1 readings while the agent is away.
	ClientID string `yaml:"client_id"` // default: outpost-<pipeline>
	// MaxUnacked is how many messages the pipeline holds unacknowledged
	// before it commits: above the broker's in-flight limit the broker
	// stops delivering and input waits for the 50 ms commit tick.
	MaxUnacked int `yaml:"max_unacked"` // default 16
}

// maxLine bounds one input line; longer lines are rejected, not buffered.
const maxLine = 1 << 20

// Validate reports every wrong field to bad, by its path under path.
func (c SourceConfig) Validate(path string, bad func(path, reason string)) {
	field := func(f, why string) { bad(path+"."+f, why) }
	switch c.Type {
	case "simulator":
		if c.Simulator.Sensors < 1 {
			field("simulator.sensors", "must be at least 1")
		}
		if c.Simulator.Rate <= 0 {
			field("simulator.rate", "must be positive (readings per second per sensor)")
		}
	case "stdin":
	case "file":
		if c.File.Path == "" {
			field("file.path", "must not be empty")
		}
	case "http":
		if _, _, err := net.SplitHostPort(c.HTTP.Listen); err != nil {
			field("http.listen", "must be host:port")
		}
	case "mqtt":
		if c.MQTT.URL == "" {
			field("mqtt.url", "must not be empty")
		}
		if c.MQTT.MaxUnacked < 0 || c.MQTT.MaxUnacked > 65535 {
			field("mqtt.max_unacked", fmt.Sprintf("must be 0 (default 16) to 65535, got %d", c.MQTT.MaxUnacked))
		}
		if c.MQTT.Topic == "" {
			field("mqtt.topic", "must not be empty")
		}
	default:
		field("type", fmt.Sprintf("must be simulator, stdin, file, http or mqtt, got %q", c.Type))
	}
}

// Open builds the configured source. resume is the Offset of the last line
// already processed (0: none); sources without positions ignore it.
func Open(c SourceConfig, resume int64, log *slog.Logger) (func(ctx context.Context, out chan<- Line) error, error) {
	switch c.Type {
	case "simulator":
		sim, err := NewSimulator(c.Simulator)
		if err != nil {
			return nil, err
		}
		return sim.Run, nil
	case "stdin":
		return func(ctx context.Context, out chan<- Line) error { return readLines(ctx, os.Stdin, out) }, nil
	case "file":
		return func(ctx context.Context, out chan<- Line) error { return tail(ctx, c.File, resume, out) }, nil
	case "http":
		return func(ctx context.Context, out chan<- Line) error { return serveHTTP(ctx, c.HTTP, out) }, nil
	case "mqtt":
		return func(ctx context.Context, out chan<- Line) error { return subscribe(ctx, c.MQTT, out, log) }, nil
	}
	return nil, fmt.Errorf("%w: source type %q", ErrConfig, c.Type)
}

func send(ctx context.Context, out chan<- Line, data []byte) bool {
	return sendAt(ctx, out, data, 0)
}

func sendAt(ctx context.Context, out chan<- Line, data []byte, offset int64) bool {
	select {
	case out <- Line{Data: data, Arrival: time.Now(), Offset: offset}:
		return true
	case <-ctx.Done():
		return false
	}
}

// readLines forwards r line by line until EOF or ctx ends.
func readLines(ctx context.Context, r io.Reader, out chan<- Line) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), maxLine)
	for sc.Scan() {
		if !send(ctx, out, append([]byte(nil), sc.Bytes()...)) {
			return nil
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("ingest: read: %w", err)
	}
	return nil
}

// readLinesAck is readLines whose last line carries ack; with no line at
// all it acks at once.
func readLinesAck(ctx context.Context, r io.Reader, out chan<- Line, ack func()) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), maxLine)
	var pending []byte
	have := false
	for sc.Scan() {
		if have && !send(ctx, out, pending) {
			return nil
		}
		pending, have = append([]byte(nil), sc.Bytes()...), true
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("ingest: read: %w", err)
	}
	if !have {
		ack()
		return nil
	}
	select {
	case out <- Line{Data: pending, Arrival: time.Now(), Ack: ack}:
	case <-ctx.Done():
	}
	return nil
}

// tail follows a file like `tail -F`: new lines as they are written, and
// from the start again when the file is truncated or replaced. With resume
// > 0 it continues right after that offset, if the file still reaches it.
func tail(ctx context.Context, c FileConfig, resume int64, out chan<- Line) error {
	var f *os.File
	var rd *bufio.Reader
	var offset int64
	open := func(fromStart bool) error {
		nf, err := os.Open(c.Path)
		if err != nil {
			return err
		}
		if f != nil {
			f.Close()
		}
		f, offset = nf, 0
		if !fromStart {
			if offset, err = f.Seek(0, io.SeekEnd); err != nil {
				return err
			}
		}
		rd = bufio.NewReaderSize(f, 64<<10)
		return nil
	}
	if err := open(c.FromStart || resume > 0); err != nil {
		return fmt.Errorf("ingest: tail %s: %w", c.Path, err)
	}
	if st, err := f.Stat(); err == nil && resume > 0 && resume <= st.Size() {
		if offset, err = f.Seek(resume, io.SeekStart); err != nil {
			return fmt.Errorf("ingest: tail %s: %w", c.Path, err)
		}
		rd.Reset(f)
	}
	defer func() { f.Close() }()
	var partial []byte
	for {
		chunk, err := rd.ReadBytes('\n')
		offset += int64(len(chunk))
		partial = append(partial, chunk...)
		if err == nil {
			line := partial[:len(partial)-1]
			partial = nil
			if len(line) > maxLine {
				line = line[:maxLine] // the decoder rejects it; memory stays bounded
			}
			if !sendAt(ctx, out, line, offset) {
				return nil
			}
			continue
		}
		if !errors.Is(err, io.EOF) {
			return fmt.Errorf("ingest: tail %s: %w", c.Path, err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(200 * time.Millisecond):
		}
		// Truncated or replaced (log rotation): start over.
		if st, err := os.Stat(c.Path); err == nil {
			cur, _ := f.Stat()
			if st.Size() < offset || (cur != nil && !os.SameFile(st, cur)) {
				if err := open(true); err == nil {
					partial = nil
				}
			}
		}
	}
}

// serveHTTP accepts POST /ingest with a body of lines.
func serveHTTP(ctx context.Context, c HTTPConfig, out chan<- Line) error {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /ingest", func(w http.ResponseWriter, r *http.Request) {
		if err := readLines(r.Context(), http.MaxBytesReader(w, r.Body, 64<<20), out); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.WriteHeader(http.StatusAccepted)
	})
	ln, err := net.Listen("tcp", c.Listen)
	if err != nil {
		return fmt.Errorf("ingest: http listen: %w", err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("ingest: http: %w", err)
	}
	return nil
}

// subscribe reads sensor messages from a local MQTT broker; a payload may
// hold several lines. Messages are acknowledged (PUBACK) only when the
// pipeline has committed them (Line.Ack): at least once, never lost.
func subscribe(ctx context.Context, c MQTTConfig, out chan<- Line, log *slog.Logger) error {
	handler := func(_ mqtt.Client, m mqtt.Message) {
		// Blocking here applies backpressure to the local broker (QoS 1).
		if err := readLinesAck(ctx, bytes.NewReader(m.Payload()), out, m.Ack); err != nil {
			log.Warn("ingest: mqtt payload", "topic", m.Topic(), "err", err)
			m.Ack() // unreadable as lines: nothing to keep (counted by the decoder when partly read)
		}
	}
	opts := mqtt.NewClientOptions().AddBroker(c.URL).SetClientID(c.ClientID).SetCleanSession(false).
		SetAutoAckDisabled(true).
		SetUsername(c.Username).SetPassword(c.Password).SetAutoReconnect(true).SetConnectRetry(true).
		SetConnectRetryInterval(time.Second).
		SetOnConnectHandler(func(cl mqtt.Client) {
			// Resubscribe on every connect: clean sessions lose subscriptions.
			if tok := cl.Subscribe(c.Topic, 1, handler); tok.Wait() && tok.Error() != nil {
				log.Warn("ingest: subscribe", "topic", c.Topic, "err", tok.Error())
			}
		})
	cl := mqtt.NewClient(opts)
	// A persistent session's unacknowledged messages arrive right after
	// CONNACK, before OnConnect has subscribed; without a route in place
	// paho drops them unacknowledged until the next reconnect.
	cl.AddRoute(c.Topic, handler)
	cl.Connect()
	<-ctx.Done()
	cl.Disconnect(1000) // time for PUBACKs of committed messages to leave
	return nil
}
