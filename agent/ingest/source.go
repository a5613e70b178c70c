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
	"net/url"
	"os"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"golang.org/x/sync/errgroup"
	"golang.org/x/time/rate"

	"github.com/outpost-edge/outpost/agent/mqttnet"
	"github.com/outpost-edge/outpost/deploy/config"
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
	// Frame is set, and Data nil, for an image frame (image sources).
	Frame *Frame
}

// SourceConfig selects and configures one source.
type SourceConfig struct {
	Type      string          `yaml:"type"` // simulator, stdin, file, http, mqtt, image
	Simulator SimulatorConfig `yaml:"simulator"`
	File      FileConfig      `yaml:"file"`
	HTTP      HTTPConfig      `yaml:"http"`
	MQTT      MQTTConfig      `yaml:"mqtt"`
	Image     ImageConfig     `yaml:"image"`
}

// FileConfig tails a file.
type FileConfig struct {
	Path      string `yaml:"path"`
	FromStart bool   `yaml:"from_start"` // read what is already there first
}

// HTTPConfig accepts POSTed lines.
type HTTPConfig struct {
	Listen string `yaml:"listen"` // host:port; POST /ingest with JSON or CSV lines
	// CommitTimeout is how long a request waits for the pipeline to take
	// and commit its lines before it gets 503.
	CommitTimeout time.Duration `yaml:"commit_timeout"` // default 5s
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
	// before it commits (see Window). Over MQTT 5 the broker is told
	// (Receive Maximum); over 3.1.1, above the broker's in-flight limit the
	// broker stops delivering and input waits for the 50 ms commit tick.
	MaxUnacked int `yaml:"max_unacked"` // default 500 over MQTT 5, 16 over 3.1.1
	// Protocol is "5", "3.1.1", or empty: MQTT 5, falling back to 3.1.1
	// for a broker that refuses it.
	Protocol string `yaml:"protocol"`
	// TLS verifies an ssl://, tls:// or mqtts:// broker against ca_file
	// (default: the system roots) and presents cert_file when the broker
	// asks for a client certificate.
	TLS config.ClientTLS `yaml:"tls"`
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
		if c.HTTP.CommitTimeout < 0 {
			field("http.commit_timeout", "must not be negative")
		}
	case "mqtt":
		c.MQTT.validate(field)
		if c.MQTT.MaxUnacked < 0 || c.MQTT.MaxUnacked > 65535 {
			field("mqtt.max_unacked", fmt.Sprintf("must be 0 (default %d over MQTT 5, %d over 3.1.1) to 65535, got %d", DefaultWindow5, DefaultWindow311, c.MQTT.MaxUnacked))
		}
		switch c.MQTT.Protocol {
		case "", "5", "3.1.1":
		default:
			field("mqtt.protocol", fmt.Sprintf("must be 5, 3.1.1 or empty (5, falling back to 3.1.1), got %q", c.MQTT.Protocol))
		}
		if c.MQTT.Topic == "" {
			field("mqtt.topic", "must not be empty")
		}
	case "image":
		c.Image.validate(field)
	default:
		field("type", fmt.Sprintf("must be simulator, stdin, file, http, mqtt or image, got %q", c.Type))
	}
}

func (c MQTTConfig) validate(field func(f, why string)) {
	u, err := url.Parse(c.URL)
	switch {
	case c.URL == "":
		field("mqtt.url", "must not be empty")
	case err != nil:
		field("mqtt.url", err.Error())
	case !mqttnet.Dialable(u) && u.Scheme != "ws" && u.Scheme != "wss":
		field("mqtt.url", fmt.Sprintf("scheme must be tcp, mqtt, ssl, tls, mqtts, ws or wss, got %q", u.Scheme))
	case c.TLS.On() && !mqttnet.Secure(u) && u.Scheme != "wss":
		field("mqtt.tls", fmt.Sprintf("is set but %s:// is not TLS: use ssl:// or mqtts://", u.Scheme))
	}
	var errs config.Errors
	c.TLS.Validate("mqtt.tls", &errs)
	for _, e := range errs {
		field(e.Path, e.Reason)
	}
}

// Open builds the configured source. resume is the Offset of the last line
// already processed (0: none); sources without positions ignore it. The
// MQTT source calls window, when a connection comes up, with the number of
// acknowledgements that may wait for a commit: the pipeline commits at
// least that often, or input waits for its commit tick. That is the
// window the broker was given over MQTT 3.1.1 (acks leave at once), half
// of it over MQTT 5 (so that the broker sends the other half while one
// commits; see ackInterval).
func Open(c SourceConfig, resume int64, log *slog.Logger, window func(int)) (func(ctx context.Context, out chan<- Line) error, error) {
	switch c.Type {
	case "simulator":
		sim, err := NewSimulator(c.Simulator)
		if err != nil {
			return nil, err
		}
		return sim.Run, nil
	case "stdin":
		return func(ctx context.Context, out chan<- Line) error { return readDetached(ctx, os.Stdin, out) }, nil
	case "file":
		return func(ctx context.Context, out chan<- Line) error { return tail(ctx, c.File, resume, out) }, nil
	case "http":
		return func(ctx context.Context, out chan<- Line) error { return serveHTTP(ctx, c.HTTP, out, log) }, nil
	case "mqtt":
		return func(ctx context.Context, out chan<- Line) error { return subscribe(ctx, c.MQTT, out, log, window) }, nil
	case "image":
		frames, err := OpenFrames(c.Image, log)
		if err != nil {
			return nil, err
		}
		return frames.Run, nil
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

// readDetached is readLines for a reader whose Read cannot be interrupted
// (stdin): it returns when ctx ends even while a Read blocks. The reading
// goroutine then stays parked in that Read until the process exits, and
// never sends to out after readDetached returned.
func readDetached(ctx context.Context, r io.Reader, out chan<- Line) error {
	mid := make(chan Line)
	done := make(chan error, 1)
	go func() { done <- readLines(ctx, r, mid) }()
	for {
		select {
		case l := <-mid:
			select {
			case out <- l:
			case <-ctx.Done():
				return nil
			}
		case err := <-done:
			return err
		case <-ctx.Done():
			return nil
		}
	}
}

// payloadLinesAck sends the lines of an in-memory payload (an MQTT
// message), the last one carrying ack; with no line at all it acks at
// once. Lines are split as bufio.ScanLines splits them (a trailing \r
// dropped, a last line without newline kept) but sliced from the payload,
// not copied: a scanner with a fresh 64 KiB buffer per message was a
// quarter of the agent's CPU at 20k messages/s. The payload is the
// message's own and is never reused by the client.
func payloadLinesAck(ctx context.Context, payload []byte, out chan<- Line, ack func()) error {
	var pending []byte
	have := false
	for len(payload) > 0 {
		line := payload
		if i := bytes.IndexByte(payload, '\n'); i >= 0 {
			line, payload = payload[:i], payload[i+1:]
		} else {
			payload = nil
		}
		if len(line) > maxLine {
			return fmt.Errorf("ingest: read: %w", bufio.ErrTooLong)
		}
		if n := len(line); n > 0 && line[n-1] == '\r' {
			line = line[:n-1]
		}
		if have && !send(ctx, out, pending) {
			return nil
		}
		pending, have = line[:len(line):len(line)], true
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

// serveHTTP accepts POST /ingest with a body of lines. It stops taking
// requests when ctx ends and returns only once every handler has answered,
// so no line reaches out after it returns.
func serveHTTP(ctx context.Context, c HTTPConfig, out chan<- Line, log *slog.Logger) error {
	src := &httpSource{out: out, stop: ctx.Done(), wait: c.commitTimeout()}
	return src.serve(ctx, c.Listen, "POST /ingest", src, log)
}

// serve answers pattern with h on listen until ctx ends, s.stop being
// ctx.Done(). h must run its requests between s.enter and s.active.Done.
// serve returns only once every handler has answered.
func (s *httpSource) serve(ctx context.Context, listen, pattern string, h http.Handler, log *slog.Logger) error {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("ingest: http listen: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle(pattern, h)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	serveCtx, cancel := context.WithCancel(ctx)
	var g errgroup.Group
	g.Go(func() error {
		<-serveCtx.Done()
		// Once stopping, a handler answers within the commit wait; a client
		// still sending its body after that is cut off.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.wait+5*time.Second)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			srv.Close()
		}
		return nil
	})
	err = srv.Serve(ln)
	cancel()
	g.Wait()
	s.close()
	if !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("ingest: http: %w", err)
	}
	return nil
}

// RetryAfter is the Retry-After (seconds) of the HTTP source's 503s.
const RetryAfter = "5"

// defaultCommitTimeout bounds how long an HTTP push waits for its commit.
const defaultCommitTimeout = 5 * time.Second

func (c HTTPConfig) commitTimeout() time.Duration {
	if c.CommitTimeout > 0 {
		return c.CommitTimeout
	}
	return defaultCommitTimeout
}

// httpSource is the handler of POST /ingest. Pushes have no position to
// resume from, so a request is answered 200 only once the pipeline has
// committed all of its lines (the Ack of its last line); a stalled outbox
// or a stopping agent gets 503 and Retry-After instead.
type httpSource struct {
	out  chan<- Line
	stop <-chan struct{} // closed when the source stops
	wait time.Duration   // the most a request waits for the pipeline

	mu     sync.Mutex
	closed bool
	active sync.WaitGroup // handlers running
}

// close refuses new requests and waits for running ones.
func (s *httpSource) close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.active.Wait()
}

func (s *httpSource) enter() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.active.Add(1)
	return true
}

// errStalled means the pipeline took no line, or committed none, within
// the wait; errStopping that the source is stopping.
var (
	errStalled  = errors.New("the outbox did not commit in time")
	errStopping = errors.New("the agent is stopping")
)

func (s *httpSource) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !s.enter() {
		unavailable(w, errStopping)
		return
	}
	defer s.active.Done()
	committed := make(chan struct{})
	sc := bufio.NewScanner(http.MaxBytesReader(w, r.Body, 64<<20))
	sc.Buffer(make([]byte, 64<<10), maxLine)
	// The last line carries the ack: the pipeline handles lines in order, so
	// its commit holds every earlier line too.
	var pending []byte
	have := false
	for sc.Scan() {
		if have {
			if err := s.send(r.Context(), Line{Data: pending, Arrival: time.Now()}); err != nil {
				unavailable(w, err)
				return
			}
		}
		pending, have = append([]byte(nil), sc.Bytes()...), true
	}
	if err := sc.Err(); err != nil {
		// Lines before the bad one may have been taken.
		http.Error(w, fmt.Sprintf("ingest: read: %v", err), http.StatusBadRequest)
		return
	}
	if !have {
		w.WriteHeader(http.StatusOK)
		return
	}
	if err := s.send(r.Context(), Line{Data: pending, Arrival: time.Now(), Ack: func() { close(committed) }}); err != nil {
		unavailable(w, err)
		return
	}
	s.await(w, r, committed)
}

// await answers 200 once committed is closed, 503 if that takes longer
// than s.wait.
func (s *httpSource) await(w http.ResponseWriter, r *http.Request, committed <-chan struct{}) {
	// Stopping does not end this wait: the pipeline commits what it was
	// handed before it returns.
	t := time.NewTimer(s.wait)
	defer t.Stop()
	select {
	case <-committed:
		w.WriteHeader(http.StatusOK)
	case <-t.C:
		unavailable(w, errStalled)
	case <-r.Context().Done(): // the client went away
	}
}

// send hands l to the pipeline, waiting at most s.wait for room.
func (s *httpSource) send(ctx context.Context, l Line) error {
	select {
	case <-s.stop:
		return errStopping
	default:
	}
	select {
	case s.out <- l:
		return nil
	default:
	}
	t := time.NewTimer(s.wait)
	defer t.Stop()
	select {
	case s.out <- l:
		return nil
	case <-s.stop:
		return errStopping
	case <-t.C:
		return errStalled
	case <-ctx.Done():
		return ctx.Err()
	}
}

// unavailable answers 503: nothing of the request may be taken as stored,
// and a resend may duplicate lines that were (at least once).
func unavailable(w http.ResponseWriter, err error) {
	w.Header().Set("Retry-After", RetryAfter)
	http.Error(w, "ingest: "+err.Error(), http.StatusServiceUnavailable)
}

// subscribe reads sensor messages from a local MQTT broker; a payload may
// hold several lines. Messages are acknowledged (PUBACK) only when the
// pipeline has committed them (Line.Ack): at least once, never lost.
// MQTT 5 comes first: its Receive Maximum lets the pipeline commit a
// window of hundreds of messages against a broker at its defaults, where
// 3.1.1 is held to the broker's in-flight limit (Mosquitto: 20).
func subscribe(ctx context.Context, c MQTTConfig, out chan<- Line, log *slog.Logger, window func(int)) error {
	if window == nil {
		window = func(int) {}
	}
	switch c.Protocol {
	case "5":
		return subscribe5(ctx, c, out, log, window, false)
	case "3.1.1":
		return subscribe311(ctx, c, out, log, window)
	}
	err := subscribe5(ctx, c, out, log, window, true)
	if !errors.Is(err, errNoMQTT5) {
		return err
	}
	log.Info("ingest: the broker refused MQTT 5; using MQTT 3.1.1", "url", c.URL, "max_unacked", c.Window(false), "err", err)
	return subscribe311(ctx, c, out, log, window)
}

// subscribe311 is subscribe over MQTT 3.1.1.
func subscribe311(ctx context.Context, c MQTTConfig, out chan<- Line, log *slog.Logger, window func(int)) error {
	handler := func(_ mqtt.Client, m mqtt.Message) {
		// Blocking here applies backpressure to the local broker (QoS 1).
		if err := payloadLinesAck(ctx, m.Payload(), out, m.Ack); err != nil {
			log.Warn("ingest: mqtt payload", "topic", m.Topic(), "err", err)
			m.Ack() // unreadable as lines: nothing to keep (counted by the decoder when partly read)
		}
	}
	opts := mqtt.NewClientOptions().AddBroker(c.URL).SetClientID(c.ClientID).SetCleanSession(false).
		SetAutoAckDisabled(true).
		SetUsername(c.Username).SetPassword(c.Password).SetAutoReconnect(true).SetConnectRetry(true).
		SetConnectRetryInterval(time.Second).
		SetOnConnectHandler(func(cl mqtt.Client) {
			window(c.Window(false))
			// Resubscribe on every connect: clean sessions lose subscriptions.
			if tok := cl.Subscribe(c.Topic, 1, handler); tok.Wait() && tok.Error() != nil {
				log.Warn("ingest: subscribe", "topic", c.Topic, "err", tok.Error())
			}
		})
	tc, err := c.TLS.Build()
	if err != nil {
		return fmt.Errorf("ingest: mqtt.tls: %w", err)
	}
	if tc != nil {
		opts.SetTLSConfig(tc)
	}
	// paho retries a failed connect in silence: say why (a refused
	// certificate, a wrong password), once and then every 30 s while it lasts.
	failLog := rate.Sometimes{First: 1, Interval: 30 * time.Second}
	opts.SetConnectionNotificationHandler(func(_ mqtt.Client, n mqtt.ConnectionNotification) {
		if f, ok := n.(mqtt.ConnectionNotificationFailed); ok {
			failLog.Do(func() { log.Warn("ingest: mqtt connect", "url", c.URL, "err", f.Reason) })
		}
	})
	mqttnet.Use(opts, c.URL) // fewer system calls per message
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
