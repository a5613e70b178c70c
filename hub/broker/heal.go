package broker

import (
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"sync"

	"github.com/nats-io/nats-server/v2/server"
)

// Fault is a part of the embedded JetStream that refuses writes until it
// is reloaded from disk.
//
// nats-server latches the first write error of a stream's file store
// (fileStore.setWriteErr sets fs.werr, "Critical write error: ..."): from
// then on StoreMsg, StoreRawMsg, PurgeEx, removeMsg and the rest return
// that error without touching the disk, and nothing clears fs.werr but
// closing the store. The stream latches it too (stream.setWriteErrLocked,
// reported by Healthz). On some storage errors (out of space on a mirror
// or source, permission denied) the server shuts JetStream down instead.
// Either way freeing space changes nothing: the store must be closed and
// recovered from disk, which is what a process restart does, and what
// ReloadJetStream does in process.
type Fault struct {
	// Account is the JetStream account of the stream ("" for the global
	// account, or for JetStream as a whole when Stream is "").
	Account string
	// Stream is the stream whose store refuses writes; "" means JetStream
	// is disabled on the server.
	Stream string
	Err    string
}

func (f Fault) String() string {
	switch {
	case f.Stream == "":
		return "JetStream: " + f.Err
	case f.Account == "":
		return f.Stream + ": " + f.Err
	}
	return f.Account + " > " + f.Stream + ": " + f.Err
}

// latches remembers the file stores that logged a critical write error
// since the last reload. The server reports a latched stream through
// Healthz only when the failed write came through the stream's own store
// path; a store written on behalf of MQTT ($MQTT_msgs when a QoS 1
// PUBLISH is kept) latches just as hard and says so only in its log line.
type latches struct {
	mu sync.Mutex
	m  map[string]string // stream name -> first error
}

// criticalWrite matches fileStore.setWriteErr's log line
// ("Filestore [NAME] Critical write error: ERR").
var criticalWrite = regexp.MustCompile(`^Filestore \[([^\]]+)\] Critical write error: (.*)$`)

func (l *latches) observe(msg string) {
	m := criticalWrite.FindStringSubmatch(msg)
	if m == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.m == nil {
		l.m = map[string]string{}
	}
	if _, ok := l.m[m[1]]; !ok {
		l.m[m[1]] = m[2]
	}
}

func (l *latches) list() map[string]string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return maps.Clone(l.m)
}

func (l *latches) reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.m = nil
}

// StoreFaults lists what of the embedded JetStream refuses writes: a
// disabled JetStream, or streams whose store latched a write error (from
// Healthz, and from the file stores' critical write errors in the log), or
// that could not be recovered after a reload. Nil means healthy.
func (b *Broker) StoreFaults() []Fault {
	if !b.srv.JetStreamEnabled() {
		return []Fault{{Err: "disabled by the server"}}
	}
	var out []Fault
	seen := map[string]bool{}
	if !b.srv.JetStreamIsClustered() {
		// In a cluster the raft groups own the streams (not reloaded
		// here): a replica that latched a write error steps down to an
		// observer and the others carry the stream.
		hs := b.srv.Healthz(&server.HealthzOptions{Details: true})
		for _, e := range hs.Errors {
			switch e.Type {
			case server.HealthzErrorStream:
				if strings.Contains(e.Error, "write error") || strings.Contains(e.Error, "could not be recovered") {
					out = append(out, Fault{Account: e.Account, Stream: e.Stream, Err: e.Error})
					seen[e.Stream] = true
				}
			case server.HealthzErrorJetStream:
				out = append(out, Fault{Err: e.Error})
			}
		}
		if gacc := b.srv.GlobalAccount(); gacc != nil && !gacc.JetStreamEnabled() {
			out = append(out, Fault{Account: gacc.Name, Err: "JetStream disabled for the account"})
		}
		l := b.latches.list()
		names := make([]string, 0, len(l))
		for name := range l {
			names = append(names, name)
		}
		slices.Sort(names)
		for _, name := range names {
			if !seen[name] {
				out = append(out, Fault{Stream: name, Err: "Critical write error: " + l[name]})
			}
		}
	}
	return out
}

// ErrClusteredReload means a clustered server's streams were not reloaded:
// their raft groups own them, and the other replicas carry a stream whose
// local store latched a write error.
var ErrClusteredReload = errors.New("broker: streams of a clustered JetStream are not reloaded in process")

// ReloadJetStream closes the stores that faults name and recovers them
// from disk, as a restart would, without stopping the server: MQTT and
// NATS clients stay connected. A disabled JetStream is enabled again with
// the broker's own config (what nats-server's config reload does,
// Server.restartJetStream). Otherwise each account with a faulty stream
// has its JetStream disabled (Account.DisableJetStream: every stream and
// consumer of the account is stopped, nothing on disk is deleted) and
// enabled again (Account.EnableJetStream recovers the streams, their
// messages and consumers from the store directory): the new file stores
// start without the latched error. Consumers' clients see their
// consumers go away and come back (ordered consumers recreate themselves,
// durable ones are recovered from disk).
func (b *Broker) ReloadJetStream(faults []Fault) error {
	if len(faults) == 0 {
		return nil
	}
	defer b.latches.reset()
	if !b.srv.JetStreamEnabled() {
		o := b.opts
		cfg := &server.JetStreamConfig{
			StoreDir: o.StoreDir, SyncInterval: o.SyncInterval, SyncAlways: o.SyncAlways,
			MaxMemory: o.JetStreamMaxMemory, MaxStore: o.JetStreamMaxStore, Domain: o.JetStreamDomain,
			Strict: !o.NoJetStreamStrict,
		}
		if err := b.srv.EnableJetStream(cfg); err != nil {
			return fmt.Errorf("broker: enable JetStream: %w", err)
		}
		return nil
	}
	if b.srv.JetStreamIsClustered() {
		return ErrClusteredReload
	}
	var accounts []string
	for _, f := range faults {
		name := f.Account
		if name == "" {
			name = server.DEFAULT_GLOBAL_ACCOUNT
		}
		if !slices.Contains(accounts, name) {
			accounts = append(accounts, name)
		}
	}
	for _, name := range accounts {
		acc, err := b.srv.LookupAccount(name)
		if err != nil {
			return fmt.Errorf("broker: account %s: %w", name, err)
		}
		if acc.JetStreamEnabled() {
			if err := acc.DisableJetStream(); err != nil {
				return fmt.Errorf("broker: account %s: disable JetStream: %w", name, err)
			}
		}
		// Nil limits are the account defaults, what a server with only
		// the global account gives it at start (enableJetStreamAccounts).
		if err := acc.EnableJetStream(nil, nil); err != nil {
			return fmt.Errorf("broker: account %s: enable JetStream: %w", name, err)
		}
	}
	return nil
}
