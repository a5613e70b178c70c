//go:build peers

package peers

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/outpost-edge/outpost/test/service"
	"github.com/outpost-edge/outpost/test/testenv"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat:
// 100 on every Linux architecture Go supports.
const clockTicks = 100

// cpuTime is the user plus system CPU time of process pid, all threads.
func cpuTime(pid int) (time.Duration, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("cpu of %d: %w", pid, err)
	}
	// Fields after the command name, which ends at the last ')': state is
	// field 3 of stat(5), utime 14 and stime 15.
	f := strings.Fields(string(data[bytes.LastIndexByte(data, ')')+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("cpu of %d: short stat", pid)
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	s, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("cpu of %d: bad stat", pid)
	}
	return time.Duration(u+s) * time.Second / clockTicks, nil
}

// peakRSS is VmHWM of process pid in bytes: its resident set's high-water mark.
func peakRSS(pid int) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("rss of %d: %w", pid, err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("rss of %d: %w", pid, err)
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("rss of %d: no VmHWM", pid)
}

// pinned returns the command line that runs bin with args on the given
// CPUs (taskset's list syntax); taskset execs bin, so the PID is bin's.
func pinned(cpus, bin string, args ...string) (string, []string, error) {
	ts, err := exec.LookPath("taskset")
	if err != nil {
		return "", nil, fmt.Errorf("taskset (util-linux): %w", err)
	}
	return ts, append([]string{"-c", cpus, bin}, args...), nil
}

// startMosquitto runs Debian's Mosquitto on a free loopback port with
// max_inflight_messages above the agent's max_unacked (the agent commits
// and acknowledges every max_unacked messages: a lower broker limit would
// stall it), no limit on queued messages (a subscriber that falls behind
// is queued for, never dropped, so loss is the system's own), no
// persistence, and $SYS statistics every second.
func startMosquitto(ctx context.Context, dir string, inflight int) (*service.Process, string, error) {
	bin, err := testenv.Binary("mosquitto")
	if err != nil {
		return nil, "", err
	}
	port, err := service.FreePort()
	if err != nil {
		return nil, "", err
	}
	conf := fmt.Sprintf(`listener %d 127.0.0.1
allow_anonymous true
persistence false
log_dest stdout
log_type error
log_type warning
max_queued_messages 0
max_inflight_messages %d
sys_interval 1
`, port, inflight)
	confPath := filepath.Join(dir, "mosquitto.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		return nil, "", err
	}
	addr := service.Addr(port)
	p, err := service.Start(ctx, service.Spec{
		Name: "mosquitto", Path: bin, Args: []string{"-c", confPath},
		LogPath: filepath.Join(dir, "mosquitto.log"),
		Ready:   service.DialReady(addr), Timeout: 15 * time.Second,
	})
	if err != nil {
		return nil, "", err
	}
	return p, "tcp://" + addr, nil
}

// connect opens a paho client to url.
func connect(ctx context.Context, url, id string) (mqtt.Client, error) {
	c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(url).SetClientID(id).
		SetCleanSession(true).SetAutoReconnect(false).SetOrderMatters(false))
	tok := c.Connect()
	select {
	case <-tok.Done():
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if err := tok.Error(); err != nil {
		return nil, fmt.Errorf("mqtt connect %s as %s: %w", url, id, err)
	}
	return c, nil
}

// subscribe subscribes c to filter at QoS 1.
func subscribe(ctx context.Context, c mqtt.Client, filter string, h mqtt.MessageHandler) error {
	tok := c.Subscribe(filter, 1, h)
	select {
	case <-tok.Done():
	case <-ctx.Done():
		return ctx.Err()
	}
	if err := tok.Error(); err != nil {
		return fmt.Errorf("subscribe %s: %w", filter, err)
	}
	return nil
}

// subscriptions follows Mosquitto's $SYS/broker/subscriptions/count, so
// that a run starts only once the system under test has subscribed.
type subscriptions struct {
	n atomic.Int64
}

func watchSubscriptions(ctx context.Context, c mqtt.Client) (*subscriptions, error) {
	s := &subscriptions{}
	s.n.Store(-1)
	err := subscribe(ctx, c, "$SYS/broker/subscriptions/count", func(_ mqtt.Client, m mqtt.Message) {
		if n, err := strconv.ParseInt(strings.TrimSpace(string(m.Payload())), 10, 64); err == nil {
			s.n.Store(n)
		}
	})
	return s, err
}

// await waits until the count is at least n.
func (s *subscriptions) await(ctx context.Context, n int64) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for s.n.Load() < n {
		select {
		case <-ctx.Done():
			return fmt.Errorf("mosquitto has %d subscriptions, want %d: %w", s.n.Load(), n, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
	return nil
}

// Topic is where the generator publishes; both systems subscribe to it.
const Topic = "peers/readings"

// generated is what one generator run sent.
type generated struct {
	n           int64     // readings published (and acknowledged by the broker)
	start, stop time.Time // first publish, last publish
	lastTS      time.Time // event time of the last reading
	errors      int64     // publishes the broker did not acknowledge
	firstErr    error     // the first of them
}

// generate publishes rate readings per second for d, one JSON reading per
// message at QoS 1, keys k0 … k(keys-1) in turn, the event time being the
// publish time in Unix milliseconds. It paces by the clock: if it cannot
// keep the rate, it sends as fast as it can, and the achieved rate shows.
func generate(ctx context.Context, c mqtt.Client, rate int, d time.Duration, keys int) (generated, error) {
	total := int64(float64(rate) * d.Seconds())
	acks := make(chan mqtt.Token, 1<<16)
	var errs int64
	var firstErr error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for tok := range acks {
			if tok.Wait(); tok.Error() != nil {
				if errs++; firstErr == nil {
					firstErr = tok.Error()
				}
			}
		}
	}()
	g := generated{start: time.Now()}
	buf := make([]byte, 0, 64)
	var i int64
	for i < total {
		if ctx.Err() != nil {
			break
		}
		due := min(int64(float64(rate)*time.Since(g.start).Seconds())+1, total)
		for ; i < due; i++ {
			now := time.Now()
			buf = append(buf[:0], `{"s":"k`...)
			buf = strconv.AppendInt(buf, i%int64(keys), 10)
			buf = append(buf, `","ts":`...)
			buf = strconv.AppendInt(buf, now.UnixMilli(), 10)
			buf = append(buf, `,"v":`...)
			buf = strconv.AppendInt(buf, (i*7)%100, 10)
			buf = append(buf, '}')
			acks <- c.Publish(Topic, 1, false, bytes.Clone(buf))
			g.lastTS = now
		}
		time.Sleep(200 * time.Microsecond)
	}
	g.stop, g.n = time.Now(), i
	close(acks)
	wg.Wait()
	g.errors, g.firstErr = errs, firstErr
	return g, ctx.Err()
}

// flushKey is the key of the trickle that follows a run: readings in real
// event time, so that the watermark of both systems moves past every window
// of the run as it would with sensors that keep reporting, and each emits
// them. Its own windows are not counted.
const flushKey = "flush"

// trickle publishes a flushKey reading every 20 ms, its event time the
// publish time, until ctx ends.
func trickle(ctx context.Context, c mqtt.Client) error {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		tok := c.Publish(Topic, 1, false, fmt.Sprintf(`{"s":%q,"ts":%d,"v":0}`, flushKey, time.Now().UnixMilli()))
		select {
		case <-tok.Done():
		case <-ctx.Done():
			return nil
		}
		if err := tok.Error(); err != nil {
			return fmt.Errorf("trickle: %w", err)
		}
	}
}

// windowCounts counts the window results a system delivered and the
// readings they hold, leaving out flushKey's.
type windowCounts struct {
	results, readings atomic.Int64
}

func (w *windowCounts) add(key string, count int64) {
	if key == flushKey {
		return
	}
	w.results.Add(1)
	w.readings.Add(count)
}
